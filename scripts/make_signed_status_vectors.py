"""Regenerates tests/broker_bridge/vectors/signed_status_v1.json. Run only when the contract changes on purpose.

Each status-topic vector of messages_v1/ (the JSON body, byte for byte) signed with the published
test key of wire_v1.json, in the batch's envelope: what actually travels on the status topic.
"""

import json
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker_bridge.envelope import Envelope
from broker_bridge.keys import key_id

VECTORS = Path(__file__).resolve().parents[1] / "tests/broker_bridge/vectors"
STATUS_CASES = ("birth", "will", "will_planned", "status", "status_minimal", "resend_report")
SEED = bytes(range(32))  # the published test key of wire_v1.json: never use it for a real station

key = Ed25519PrivateKey.from_private_bytes(SEED)
kid = key_id(key.public_key())
out = {"private_seed_hex": SEED.hex(), "kid": kid, "cases": []}
for name in STATUS_CASES:
    body = (VECTORS / "messages_v1" / f"{name}.json").read_bytes()
    signature = key.sign(body)
    out["cases"].append(
        {
            "name": name,
            "body": f"messages_v1/{name}.json",
            "signature_hex": signature.hex(),
            "envelope_hex": Envelope(kid, body, signature).encode().hex(),
        }
    )
(VECTORS / "signed_status_v1.json").write_text(json.dumps(out, indent=2) + "\n")
