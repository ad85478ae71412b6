"""Regenerates tests/broker_bridge/vectors/wire_v1.json. Run only when the contract changes on purpose."""

import json
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker_bridge.envelope import BatchBody, Reading, seal
from broker_bridge.keys import key_id, public_key_b64

# A published test key: never use it for a real station.
SEED = bytes(range(32))
CASES = [
    (
        "two_readings",
        BatchBody(
            "HN_AIR_001",
            1,
            1767225600000000000,
            (
                Reading(1767225599000000000, "aqms1", "PM2,5", 23.5, "ug/m3", "00", ""),
                Reading(1767225599000000000, "aqms1", "O3", None, "ug/m3", "02", "no reply: timeout after 1.0 s"),
            ),
        ),
    ),
    (
        "historical_max_seq",
        BatchBody(
            "DN_WW-02",
            2**63 - 1,
            1767225600123456789,
            (Reading(1767225000000000001, "wq1", "COD", 45.25, "mg/L", "01", "zero calibration"),),
            historical=True,
        ),
    ),
    (
        # A TT10 bridge's conversion: the provenance keys follow the readings (the cases above have none).
        "tt10_provenance",
        BatchBody(
            "HN_BKHN_KHIKXQ",
            7,
            1774371900000000000,
            (
                Reading(1774371600000000000, "tt10", "PM2,5", 41.0, "ug/m3", "00", ""),
                Reading(1774371600000000000, "tt10", "SO2", None, "ug/m3", "02", ""),
            ),
            source="tt10",
            file_sha256="5f4dcc3b5aa765d61d8327deb882cf995f4dcc3b5aa765d61d8327deb882cf99",
        ),
    ),
]

key = Ed25519PrivateKey.from_private_bytes(SEED)
kid = key_id(key.public_key())
out = {"private_seed_hex": SEED.hex(), "public_key_b64": public_key_b64(key.public_key()), "kid": kid, "cases": []}
for name, body in CASES:
    body_bytes = body.encode()
    provenance = {"src": body.source, "file": body.file_sha256} if body.source != "agent" else {}
    out["cases"].append(
        {
            "name": name,
            "station": body.station,
            "seq": body.seq,
            "sent_ns": body.sent_ns,
            "hist": body.historical,
            "readings": [r.as_wire() for r in body.readings],
            **provenance,
            "body_hex": body_bytes.hex(),
            "signature_hex": key.sign(body_bytes).hex(),
            "envelope_hex": seal(body, kid, key).hex(),
        }
    )
Path(__file__).resolve().parents[1].joinpath("tests/broker_bridge/vectors/wire_v1.json").write_text(
    json.dumps(out, indent=2) + "\n"
)
