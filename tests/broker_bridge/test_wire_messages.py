"""The JSON messages of the contract (birth, will, status, re-send report, re-send request) against their vectors.

Each vector in tests/broker_bridge/vectors/messages_v1/ is the exact bytes on the wire. It
was written from the agent's and the collector's code as it was before the
typed messages existed, so ``encode`` matching it byte for byte shows the
wire did not change. docs/wire-format.md quotes every vector verbatim.
"""

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker_bridge import catalog
from broker_bridge.alerts import AlertMessage, AvailabilityAlert
from broker_bridge.commands import MAX_COMMAND_BYTES, ResendRequest, parse_command
from broker_bridge.envelope import verifier
from broker_bridge.json_message import MAX_JSON_DEPTH, MessageError
from broker_bridge.keys import SigningKey, key_id
from broker_bridge.receipts import MAX_RECEIPT_RANGES, Receipt, SignedReceipt, receipt_of
from broker_bridge.station_messages import (
    MAX_STATUS_BYTES,
    Birth,
    ClockStatus,
    DeviceDescription,
    DeviceStatus,
    MeasuringRange,
    OutboxStatus,
    RecoveryStatus,
    ResendReport,
    StationDescription,
    StationState,
    Status,
    Will,
    parse_station_message,
    ranges_of,
)

VECTORS = Path(__file__).parent / "vectors" / "messages_v1"
# The receipt's published test key: seed 20 21 .. 3f (the batch vectors use 00 .. 1f), never for real use.
COLLECTOR_KEY = SigningKey("", Ed25519PrivateKey.from_private_bytes(bytes(range(32, 64))))
COLLECTOR_KEY = SigningKey(key_id(COLLECTOR_KEY.public_key), COLLECTOR_KEY.private_key)
DOC = Path(__file__).resolve().parents[2] / "docs" / "wire-format.md"
ST, SESSION, TS = "HN_AIR_001", 3_000_001, 1767225600000000000

OUTBOX = OutboxStatus(12, 2, 40, 1500, 1502, 1048576, 2147483648, 0.000488, 61.25, 0, 0, 1)
EMPTY_OUTBOX = OutboxStatus(0, 0, 0, 0, 0, 0, 1073741824, 0.0, 0.0, 0, 0, 0)
CASES = {
    "birth": Birth(ST, SESSION, TS, StationDescription(
        "Hà Nội - Nguyễn Văn Cừ", "ambient_air",
        (DeviceDescription("aqms1", "demo-aqms", "modbus_tcp"),
         DeviceDescription("wx1", "demo-weather", "serial_ascii")),
        "9f2c" + "0" * 56 + "beef",
    )),
    "birth_ranges": Birth(ST, SESSION, TS, StationDescription(
        "Hà Nội - Nguyễn Văn Cừ", "ambient_air",
        (DeviceDescription("aqms1", "demo-ambient-air", "modbus_tcp"),),
        "9f2c" + "0" * 56 + "beef",
        (MeasuringRange("aqms1", "PM2,5", "ug/m3", 0.0, 1000.0, "demo-ambient-air"),
         MeasuringRange("aqms1", "CO", "ug/m3", -50.0, 57000.0, "demo-ambient-air")),
    )),
    "will": Will(ST, SESSION),
    "will_planned": Will(ST, SESSION, planned=True),
    "status": Status(ST, SESSION, TS + 30 * 10**9, StationState(
        OUTBOX,
        RecoveryStatus(4096, "torn frame", "", 3, 0, 0, ()),
        {"aqms1": DeviceStatus(True, 1767225000000000000, ""),
         "wx1": DeviceStatus(False, 1767225590000000000, "no reply: timeout after 1.0 s")},
        0,
        ClockStatus("sntp 10.0.0.1", -0.012345, 0.0021, 1767225590000000000, 2.0, True, None),
        0,
        ("wx1",),
    )),
    "status_minimal": Status(ST, SESSION, TS, StationState(EMPTY_OUTBOX, None, {}, 0, None, 0)),
    "resend_report": ResendReport(ST, SESSION, TS, 120, 135, 12, ((120, 121), (130, 131))),
    "resend_request": ResendRequest(120, 135),
    "receipt": Receipt(ST, 1480, ((1483, 1490), (1495, 1502)), TS).signed(COLLECTOR_KEY),
    "alert": AlertMessage("3f9c2a7d5e1b4c8a9d0e6f1a2b3c4d5e", "open", "NM_STACK_01", "cems", "SO2",
                          "QCVN 19:2024/BTNMT (boiler, O2 ref 7 %) SO2 1h zone B",
                          "QCVN 19:2024/BTNMT (boiler, O2 ref 7 %)",
                          "1h", 200.0, "mg/Nm3", TS, TS, "open", 250.0, 250.0, 1, TS + 120_000_000_000,
                          confidence="UNCONFIRMED"),
    "availability": AvailabilityAlert("9b0c51e2d4a7f3186c5e2b9d0a4f7e13", "open", ST, "*", "*", "silent", TS, TS,
                                      "open", "no reading for 16 min (grace 15 min)", TS + 960_000_000_000),
}  # fmt: skip
KIND_OF_CASE = {"birth": "birth", "birth_ranges": "birth", "will": "will", "will_planned": "will",
                "status": "status", "status_minimal": "status",
                "resend_report": "resend_report", "resend_request": "resend_request", "receipt": "receipt",
                "alert": "alert", "availability": "availability"}  # fmt: skip


def vector(name: str) -> bytes:
    return (VECTORS / f"{name}.json").read_bytes()


@pytest.mark.parametrize("name", CASES)
def test_encoding_matches_vectors_byte_for_byte(name):
    assert CASES[name].encode() == vector(name)


@pytest.mark.parametrize("name", CASES)
def test_vectors_parse_to_their_typed_message(name):
    topic, kind = catalog.kinds()[KIND_OF_CASE[name]]
    assert kind.parse(vector(name)) == CASES[name]
    if topic is catalog.STATUS:
        assert parse_station_message(vector(name)) == CASES[name]


def test_every_kind_has_a_vector_and_a_section_quoting_it():
    text = DOC.read_text()
    assert set(KIND_OF_CASE.values()) == set(catalog.kinds()) - {
        "batch"
    }  # the batch: tests/broker_bridge/test_wire_contract.py
    assert sorted(p.stem for p in VECTORS.iterdir()) == sorted(CASES)
    for name in CASES:
        assert vector(name).decode() in text, (
            f"docs/wire-format.md does not quote tests/broker_bridge/vectors/messages_v1/{name}.json"
        )
    for kind in catalog.kinds():
        assert f"`{kind}`" in text, f"docs/wire-format.md has no section for {kind}"


def test_status_fields_the_reader_uses():
    status = Status.parse(vector("status"))
    assert status.state.outbox.backlog_readings == 52 and status.state.outbox.backlog_age_s == 61.25
    assert status.state.devices["wx1"].up is False


def test_a_bare_online_message_is_a_birth_without_description():
    message = parse_station_message(b'{"state": "online", "station": "S1", "session": 7}')
    assert message == Birth("S1", 7, None, None)
    assert message.encode() == b'{"state": "online", "station": "S1", "session": 7}'


def test_unknown_keys_are_ignored_so_newer_agents_are_not_refused():
    doc = json.loads(vector("will"))
    doc["firmware"] = {"next": [1, 2]}
    assert parse_station_message(json.dumps(doc).encode()) == CASES["will"]


def test_asking_for_one_kind_and_getting_another_is_refused():
    with pytest.raises(MessageError, match="expected a will message, got a birth"):
        Will.parse(vector("birth"))


def error(payload: bytes, parse=parse_station_message) -> MessageError:
    with pytest.raises(MessageError) as caught:
        parse(payload)
    return caught.value


def changed(name: str, edit) -> bytes:
    doc = json.loads(vector(name))
    edit(doc)
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    "payload, reason, field",
    [
        (b"x" * (MAX_STATUS_BYTES + 1), "oversized", ""),
        (json.dumps({"state": "online"}).encode("utf-16"), "undecodable", ""),
        (b"\xff{}", "undecodable", ""),
        (b'{"state": "online", "station": "S", "session": ' + b"9" * 5000 + b"}", "undecodable", ""),
        (b"[" * 30_000 + b"]" * 30_000, "undecodable", ""),  # no RecursionError
        (b'{"a": ' * (MAX_JSON_DEPTH + 1) + b"1" + b"}" * (MAX_JSON_DEPTH + 1), "undecodable", ""),
        (b"[1, 2]", "schema", ""),
        (b'{"state": "away", "station": "S", "session": 1}', "schema", "state"),
        (b'{"state": "online", "station": "a/b", "session": 1}', "schema", "station"),
        (b'{"state": "online", "station": "S", "session": 9223372036854775808}', "schema", "session"),
        (b'{"state": "online", "station": "S", "session": true}', "schema", "session"),
        (b'{"state": "offline", "station": "S", "session": 1, "planned": "yes"}', "schema", "planned"),
        (changed("birth", lambda d: d.update(kind="airport")), "schema", "kind"),
        (changed("birth", lambda d: d["devices"][1].pop("profile")), "schema", "devices[1].profile"),
        (changed("birth", lambda d: d.pop("profiles_sha256")), "schema", "profiles_sha256"),
        (changed("birth_ranges", lambda d: d["ranges"][1].update(low=60000)), "schema", "ranges[1]"),
        (changed("birth_ranges", lambda d: d["ranges"][0].pop("profile")), "schema", "ranges[0].profile"),
        (changed("birth_ranges", lambda d: d["ranges"][0].update(high="1000")), "schema", "ranges[0].high"),
        (changed("birth_ranges", lambda d: d["ranges"][0].update(high=float("inf"))), "schema", "ranges[0].high"),
        (changed("birth_ranges", lambda d: d.update(ranges={"aqms1": []})), "schema", "ranges"),
        (b'{"state": "online", "station": "S", "session": 1, "ranges": []}', "schema", "kind"),
        (changed("status", lambda d: d["outbox"].update(backlog_age_s="1 h")), "schema", "outbox.backlog_age_s"),
        (changed("status", lambda d: d["outbox"].pop("last_seq")), "schema", "outbox.last_seq"),
        (changed("status", lambda d: d.update(outbox="full")), "schema", "outbox"),
        (changed("status", lambda d: d["devices"]["wx1"].update(up=0)), "schema", "devices.wx1.up"),
        (changed("status", lambda d: d["clock"].update(offset_s="-")), "schema", "clock.offset_s"),
        (changed("resend_report", lambda d: d["resend"].update(not_kept=[[5, 4]])), "schema", "resend.not_kept[0]"),
        (changed("resend_report", lambda d: d["resend"].update(from_seq=0)), "schema", "resend.from_seq"),
    ],
)
def test_out_of_shape_status_messages_name_the_field(payload, reason, field):
    err = error(payload)
    assert (err.reason, err.field) == (reason, field)
    assert err.detail.startswith(f"{field}: " if field else "status")


@pytest.mark.parametrize(
    "payload, field",
    [
        (b'{"resend": {"from_seq": 0, "to_seq": 3}}', "resend.from_seq"),
        (b'{"resend": {"from_seq": "1", "to_seq": 3}}', "resend.from_seq"),
        (b'{"resend": {"from_seq": 1}}', "resend.to_seq"),
        (b'{"resend": {"from_seq": 5, "to_seq": 3}}', "resend"),
        (b'{"resend": [1, 3]}', "resend"),
        (b'{"reboot": {}}', ""),
        (b'{"resend": {"from_seq": 1, "to_seq": 3}, "x": ' + b"1" * MAX_COMMAND_BYTES + b"}", ""),
    ],
)
def test_out_of_shape_commands_name_the_field(payload, field):
    assert error(payload, parse_command).field == field


def test_a_request_is_answered_for_at_most_ten_thousand_batches():
    assert ResendRequest(5, 2**63 - 1).capped() == ResendRequest(5, 10_004)
    assert ResendRequest(5, 9).capped() == ResendRequest(5, 9)


def test_ranges_of():
    assert ranges_of([3, 4, 5, 9]) == ((3, 5), (9, 9))
    assert ranges_of([]) == ()


def test_a_real_outbox_status_encodes_as_the_agent_always_sent_it(tmp_path):
    """OutboxStatus mirrors Outbox.status() key for key: the agent builds it from that dict."""
    from edge_agent.outbox import Outbox

    box = Outbox(tmp_path / "outbox.db", ST)
    try:
        raw = box.status()
        state = StationState(OutboxStatus(**raw), None, {}, 0, None, 0)
        old = {"state": "online", "station": ST, "session": SESSION, "ts_ns": TS, "outbox": raw, "recovery": None,
               "devices": {}, "refused_readings": 0, "clock": None, "broker_refused_batches": 0}  # fmt: skip
        assert Status(ST, SESSION, TS, state).encode() == json.dumps(old).encode()
    finally:
        box.close()


def test_quantrac_status_reads_the_backlog_from_the_newest_status_only():
    from cli.main import backlog_of

    assert backlog_of(vector("status").decode()) == (52, 61.25)
    assert backlog_of(vector("birth").decode()) == (None, None)
    assert backlog_of(vector("will").decode()) == (None, None)
    assert backlog_of('{"state": "online", "station": "S1", "session": 1, "outbox": "full"}') == (None, None)
    assert backlog_of(None) == (None, None)


def test_a_real_clock_state_and_recovery_encode_as_the_agent_always_sent_them():
    """ClockStatus and RecoveryStatus mirror ClockMonitor.state and Recovery field for field."""
    from edge_agent.clock import ClockMonitor
    from edge_agent.outbox import Recovery
    from station_profiles.profile_model import ClockConfig

    clock = ClockMonitor(ClockConfig(source="sntp", server="127.0.0.1:1"), station_id=ST).state
    recovery = Recovery(wal_cut_bytes=4096, wal_reason="torn frame", errors=["row 3: not a reading"])
    state = StationState(EMPTY_OUTBOX, RecoveryStatus(**{**recovery.__dict__, "errors": tuple(recovery.errors)}), {}, 0,
                         ClockStatus(**clock), 0)  # fmt: skip
    old = {"state": "online", "station": ST, "session": SESSION, "ts_ns": TS,
           "outbox": json.loads(vector("status_minimal"))["outbox"], "recovery": recovery.__dict__, "devices": {},
           "refused_readings": 0, "clock": clock, "broker_refused_batches": 0}  # fmt: skip
    encoded = Status(ST, SESSION, TS, state).encode()
    assert encoded == json.dumps(old).encode()
    assert Status.parse(encoded).state == state


# -- signed: what travels on the status topic ---------------------------------------------------------

SIGNED = json.loads((VECTORS.parent / "signed_status_v1.json").read_text())
SIGNED_CASES = {case["name"]: case for case in SIGNED["cases"]}


def published_test_key():
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.from_private_bytes(bytes.fromhex(SIGNED["private_seed_hex"]))


def test_every_status_topic_kind_has_a_signed_vector_quoted_in_the_doc():
    status_cases = {name for name, kind in KIND_OF_CASE.items() if catalog.kinds()[kind][0] is catalog.STATUS}
    assert set(SIGNED_CASES) == status_cases
    assert SIGNED_CASES["will"]["envelope_hex"] in DOC.read_text(), "docs/wire-format.md quotes the signed will"


@pytest.mark.parametrize("name", sorted(SIGNED_CASES))
def test_signed_messages_match_their_vectors_and_open_to_the_typed_message(name):
    from broker_bridge.envelope import verify
    from broker_bridge.keys import key_id
    from broker_bridge.station_messages import open_station_envelope, seal_station_message

    case = SIGNED_CASES[name]
    key = published_test_key()
    assert key_id(key.public_key()) == SIGNED["kid"]
    wire = bytes.fromhex(case["envelope_hex"])
    assert seal_station_message(CASES[name], SIGNED["kid"], key) == wire
    envelope = open_station_envelope(wire)
    assert envelope.body == (VECTORS.parent / case["body"]).read_bytes() and envelope.key_id == SIGNED["kid"]
    verify(envelope, key.public_key())
    assert parse_station_message(envelope.body) == CASES[name]


def test_a_signed_status_over_its_bound_or_not_an_envelope_is_refused_with_a_reason():
    from broker_bridge.envelope import EnvelopeError
    from broker_bridge.station_messages import MAX_SIGNED_STATUS_BYTES, open_station_envelope

    for payload, reason in [
        (b"\x00" * (MAX_SIGNED_STATUS_BYTES + 1), "oversized"),
        (vector("will"), "undecodable"),  # the unsigned JSON of agents before signing
        (b"\xc1", "undecodable"),
        (b"\x93\x01\x02\x03", "schema"),
    ]:
        with pytest.raises(EnvelopeError) as caught:
            open_station_envelope(payload)
        assert caught.value.reason == reason, (payload[:20], caught.value)


def test_a_receipt_is_trusted_only_with_the_collectors_key():
    signed = SignedReceipt.parse(vector("receipt"))
    receipt = signed.verified({COLLECTOR_KEY.key_id: verifier(COLLECTOR_KEY.public_key)})
    assert receipt.covers(1) and receipt.covers(1480) and not receipt.covers(1481) and receipt.covers(1495)
    other = Ed25519PrivateKey.from_private_bytes(bytes(32))
    with pytest.raises(MessageError) as caught:
        signed.verified({COLLECTOR_KEY.key_id: verifier(other.public_key())})
    assert caught.value.reason == "bad_signature"
    with pytest.raises(MessageError) as caught:
        signed.verified({})
    assert caught.value.reason == "unknown_key"
    forged = json.loads(vector("receipt"))
    forged["body"] = forged["body"].replace("[1495, 1502]", "[1495, 1509]")
    with pytest.raises(MessageError, match="bad_signature"):
        SignedReceipt.parse(json.dumps(forged).encode()).verified(
            {COLLECTOR_KEY.key_id: verifier(COLLECTOR_KEY.public_key)}
        )


@pytest.mark.parametrize(
    "edit, field",
    [
        (lambda b: b.update(ranges=[[5, 4]]), "body.ranges[0]"),
        (lambda b: b.update(ranges=[[1490, 1495], [1483, 1484]]), "body.ranges[1]"),
        (lambda b: b.update(ranges=[[1481, 1490]]), "body.ranges[0]"),  # touching the watermark: not merged
        (lambda b: b.pop("watermark"), "body.watermark"),
        (
            lambda b: b.update(ranges=[[2 * i + 2000, 2 * i + 2000] for i in range(MAX_RECEIPT_RANGES + 1)]),
            "body.ranges",
        ),
    ],
)
def test_out_of_shape_receipts_name_the_field(edit, field):
    doc = json.loads(vector("receipt"))
    body = json.loads(doc["body"])
    edit(body)
    doc["body"] = json.dumps(body)
    assert error(json.dumps(doc).encode(), SignedReceipt.parse).field == field


def test_a_receipt_from_committed_ranges_lists_the_newest_above_the_watermark():
    assert receipt_of(ST, [(1, 9), (12, 12), (14, 20)], TS) == Receipt(ST, 9, ((12, 12), (14, 20)), TS)
    assert receipt_of(ST, [(3, 9)], TS) == Receipt(ST, 0, ((3, 9),), TS)
    many = [(10 * i, 10 * i + 1) for i in range(1, 100)]
    assert receipt_of(ST, many, TS).ranges == tuple(many[-MAX_RECEIPT_RANGES:])
