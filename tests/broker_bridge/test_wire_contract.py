"""The wire contract, byte for byte against the published vectors, and every reject path of the decoder."""

import json
from pathlib import Path

import msgpack
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker_bridge import topics
from broker_bridge.envelope import (
    BatchBody,
    Envelope,
    EnvelopeError,
    Reading,
    decode_body,
    open_envelope,
    seal,
    verify,
)
from broker_bridge.keys import key_id, public_key_b64, public_key_from_b64

VECTORS = json.loads((Path(__file__).parent / "vectors" / "wire_v1.json").read_text())
KEY = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(VECTORS["private_seed_hex"]))


def body_of(case) -> BatchBody:
    return BatchBody(
        case["station"],
        case["seq"],
        case["sent_ns"],
        tuple(Reading(*r) for r in case["readings"]),
        case["hist"],
        case.get("src", "agent"),
        case.get("file", ""),
    )


def test_key_id_and_public_key_match_vectors():
    assert key_id(KEY.public_key()) == VECTORS["kid"]
    assert public_key_b64(KEY.public_key()) == VECTORS["public_key_b64"]


@pytest.mark.parametrize("case", VECTORS["cases"], ids=lambda c: c["name"])
def test_encoding_matches_vectors_byte_for_byte(case):
    body = body_of(case)
    assert body.encode().hex() == case["body_hex"]
    assert KEY.sign(body.encode()).hex() == case["signature_hex"]
    assert seal(body, VECTORS["kid"], KEY).hex() == case["envelope_hex"]


@pytest.mark.parametrize("case", VECTORS["cases"], ids=lambda c: c["name"])
def test_vectors_decode_and_verify(case):
    envelope = open_envelope(bytes.fromhex(case["envelope_hex"]))
    verify(envelope, public_key_from_b64(VECTORS["public_key_b64"]))
    assert decode_body(envelope.body) == body_of(case)


def sealed(**changes) -> bytes:
    case = VECTORS["cases"][0]
    fields = {
        "station": case["station"],
        "seq": case["seq"],
        "sent_ns": case["sent_ns"],
        "hist": False,
        "readings": case["readings"],
    }
    fields.update(changes)
    body = msgpack.packb(fields, use_bin_type=True)
    return Envelope(VECTORS["kid"], body, KEY.sign(body)).encode()


def decode(payload: bytes) -> BatchBody:
    envelope = open_envelope(payload)
    verify(envelope, KEY.public_key())
    return decode_body(envelope.body)


def test_flipped_byte_in_body_fails_signature():
    case = VECTORS["cases"][0]
    payload = bytearray(bytes.fromhex(case["envelope_hex"]))
    payload[payload.index(bytes.fromhex(case["body_hex"])) + 20] ^= 0x01
    with pytest.raises(EnvelopeError) as err:
        decode(bytes(payload))
    assert err.value.reason == "bad_signature"


def test_other_key_fails_signature():
    envelope = open_envelope(bytes.fromhex(VECTORS["cases"][0]["envelope_hex"]))
    with pytest.raises(EnvelopeError) as err:
        verify(envelope, Ed25519PrivateKey.generate().public_key())
    assert err.value.reason == "bad_signature"


@pytest.mark.parametrize(
    "payload, reason",
    [
        (b"\xc1", "undecodable"),
        (msgpack.packb([1, 2, 3]), "schema"),
        (msgpack.packb({"v": 2, "kid": "k", "body": b"", "sig": b"x" * 64}), "version"),
        (msgpack.packb({"v": 1, "kid": "k", "body": b"", "sig": b"short"}), "schema"),
        (msgpack.packb({"v": 1, "kid": "k", "body": b"", "sig": b"x" * 64, "more": 1}), "schema"),
        (b"\x00" * (1 << 20 + 1), "oversized"),
    ],
)
def test_broken_envelopes_have_reasons(payload, reason):
    with pytest.raises(EnvelopeError) as err:
        open_envelope(payload)
    assert err.value.reason == reason


@pytest.mark.parametrize(
    "changes, detail",
    [
        ({"seq": -1}, "seq"),
        ({"seq": 1.5}, "seq"),
        ({"station": "a/b"}, "station"),
        ({"readings": []}, "non-empty"),
        ({"readings": [[1, "d", "p", 1.0, "u", "03", ""]]}, "status"),
        ({"readings": [[1, "d", "p", float("nan"), "u", "00", ""]]}, "not finite"),
        ({"readings": [[1, "d", "p", 7, "u", "00", ""]]}, "float or nil"),
        ({"readings": [[0, "d", "p", 1.0, "u", "00", ""]]}, "ts_ns"),
        ({"readings": [[1, "", "p", 1.0, "u", "00", ""]]}, "device"),
        ({"readings": [[1, "d", "p", 1.0, "u", "00"]]}, "7 fields"),
        ({"hist": 1}, "hist"),
    ],
)
def test_schema_violations_are_named(changes, detail):
    with pytest.raises(EnvelopeError) as err:
        decode(sealed(**changes))
    assert err.value.reason == "schema"
    assert detail in err.value.detail


def test_topics_round_trip_and_refuse_wildcards():
    assert topics.data_topic("HN_AIR_001") == "quantrac/v1/HN_AIR_001/data"
    assert topics.station_of_topic("quantrac/v1/HN_AIR_001/data") == "HN_AIR_001"
    assert topics.station_of_topic("quantrac/v2/HN_AIR_001/data") is None
    assert topics.station_of_topic("quantrac/v1/HN_AIR_001/other") is None
    assert topics.data_subscription("g") == "$share/g/quantrac/v1/+/data"
    for bad in ("a/b", "+", "#", "", "x" * 65, "-lead"):
        with pytest.raises(topics.TopicError):
            topics.data_topic(bad)


def test_a_batch_without_provenance_is_an_agents_and_says_nothing_of_it():
    for case in VECTORS["cases"][:2]:
        assert b"src" not in bytes.fromhex(case["body_hex"])
        body = decode(bytes.fromhex(case["envelope_hex"]))
        assert (body.source, body.file_sha256) == ("agent", "")


def test_a_tt10_batch_names_its_file():
    case = next(c for c in VECTORS["cases"] if c["name"] == "tt10_provenance")
    body = decode(bytes.fromhex(case["envelope_hex"]))
    assert (body.source, body.file_sha256) == ("tt10", case["file"])
    # the provenance follows the readings in the body's map
    keys = list(msgpack.unpackb(bytes.fromhex(case["body_hex"]), raw=False))
    assert keys == ["station", "seq", "sent_ns", "hist", "readings", "src", "file"]


@pytest.mark.parametrize(
    "changes, fragment",
    [
        ({"src": "agent", "file": ""}, "an agent's batch has no src"),
        ({"src": "ftp", "file": "0" * 64}, "src must be one of"),
        ({"src": "tt10"}, "file must be its file's SHA-256"),
        ({"src": "tt10", "file": "ABC"}, "file must be its file's SHA-256"),
        ({"src": "tt10", "file": "A" * 64}, "file must be its file's SHA-256"),
        ({"file": "0" * 64}, "src must be one of"),
    ],
)
def test_provenance_out_of_shape_is_refused(changes, fragment):
    with pytest.raises(EnvelopeError) as err:
        decode(sealed(**changes))
    assert err.value.reason == "schema" and fragment in err.value.detail
