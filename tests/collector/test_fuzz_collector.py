"""Fuzzing the collector's check path with random and mutated payloads.

Over 10,000 payloads go in-process through ``collector.admission.check_message``
with a real ``StationRegistry`` (and the rows each outcome would write are
built into a real ILP buffer by the real ``WarehouseWriter`` code); a few
hundred more go through a real collector process, Mosquitto and QuestDB.
Every payload must end as valid readings, a station event or a reject with
a reason: never a crash, never silence.

The payloads: valid signed batches; byte-level mutations of them (bit flips,
truncation, insertion, deletion); bodies with broken fields (type swaps, huge
and negative numbers, NaN/inf, ts 0/negative/huge, non-UTF-8 strings, wrong
arity, missing and extra keys, 10,001 readings) signed with the station's
real key so that they pass the signature; msgpack of random structures;
envelopes with wrong field types and keys of other or retired stations;
status messages with random JSON.

Five payload classes used to stop the collector for good (the unacknowledged
message comes back after every restart): seq above 2^63-1, times beyond
QuestDB's last timestamp, UTF-16 status JSON, a status session above 2^63-1,
and a flush whose rejects exceed the ILP client's 100 MiB buffer. Each has a
test at the end; the fuzzing sends all of them.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import itertools
import json
import math
import random
import time
import uuid

import msgpack
import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from questdb import Sender

from broker_bridge import session
from broker_bridge.envelope import INT64_MAX, MAX_ENVELOPE_BYTES, Envelope, open_envelope
from broker_bridge.keys import key_id, write_new_key
from broker_bridge.topics import data_topic, parse_topic, status_topic
from cli.processes import collector_process
from collector.admission import Accepted, Rejected, StationEvent, check_message
from collector.intake import PendingMessage
from collector.prepare import event_row, ledger_row, reading_columns
from collector.registry import StationRegistry, add_station, retire_key, set_enabled
from collector.service import Collector
from store.ilp_writer import WarehouseWriter
from store.payload_store import REJECT_HEAD_BYTES
from store.schema import BATCHES, STATION_EVENTS, ensure_schema
from supervisor.process import wait_until
from tests.helpers import sql, wal_applied
from vocabulary.stations import STATION_ID_PATTERN
from vocabulary.status import STATUS_CODES

UINT64_MAX = (1 << 64) - 1  # msgpack can carry it; the contract stops at 2^63-1
# QuestDB refuses a designated timestamp above this (ILP answers "designated timestamp overflow").
QDB_MAX_TS = 9_214_646_399_999_999_999
REASONS = {
    "bad_topic", "unknown_station", "disabled_station", "oversized", "undecodable", "schema", "version",
    "unknown_key", "retired_key", "bad_signature", "topic_mismatch", "session_jump", "duplicate_reading_key",
}  # fmt: skip


def fuzz(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


# -- the stations the fuzzer writes as -----------------------------------------------------------------
_RUN = uuid.uuid4().hex[:6]
GOOD = f"FZ{_RUN}_GOOD"  # registered, enabled, one active key
ROTATED = f"FZ{_RUN}_ROT"  # an active key and a retired one
DISABLED = f"FZ{_RUN}_OFF"
UNKNOWN = f"FZ{_RUN}_NONE"  # never registered
KEYS: dict[str, Ed25519PrivateKey] = {}  # filled by the registry fixture; strategies sign with them at draw time
STRANGER = Ed25519PrivateKey.generate()  # registered nowhere
NOW_NS = time.time_ns()


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> StationRegistry:
    """A real registry file made with the real commands: add, retire, disable."""
    tmp = tmp_path_factory.mktemp("fuzz-registry")
    path = tmp / "registry.yaml"
    for name, station in (("good", GOOD), ("rot_old", ROTATED), ("rot_new", ROTATED), ("off", DISABLED)):
        key = write_new_key(tmp / f"{name}.key")
        add_station(path, station, key.public_key)
        KEYS[name] = key.private_key
    retire_key(path, ROTATED, key_id(KEYS["rot_old"].public_key()))
    set_enabled(path, DISABLED, False)
    return StationRegistry(path)


def kid(name: str) -> str:
    return key_id(STRANGER.public_key() if name == "stranger" else KEYS[name].public_key())


def sign(name: str, body: bytes) -> bytes:
    return (STRANGER if name == "stranger" else KEYS[name]).sign(body)


def envelope(name: str, body: bytes) -> bytes:
    return Envelope(kid(name), body, sign(name, body)).encode()


def pack(obj) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


# -- strategies ---------------------------------------------------------------------------------------
# Anything msgpack can carry: integers over the whole int64/uint64 range, every float, text and bytes, nesting.
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), UINT64_MAX)
    | st.floats()
    | st.text(max_size=40)
    | st.binary(max_size=40)
)


def _nested(inner):
    return st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=8) | st.integers(-5, 5), inner, max_size=6)


anything = st.recursive(scalars, _nested, max_leaves=25)
EDGE_VALUES = [
    0, -1, 1, -(2**63), 2**31, 2**32, 2**53 + 1, INT64_MAX, INT64_MAX + 1, UINT64_MAX, QDB_MAX_TS, QDB_MAX_TS + 1,
    math.nan, math.inf, -math.inf, -0.0, 1e308, 5e-324,
    "", "0", "x" * 300, True, False, None, b"", b"\x00" * 65, [], {},
]  # fmt: skip
# Short random text (hypothesis's text is costly per character) plus the edges that matter: full length,
# non-ASCII, ILP's separators and escapes, control characters, NUL.
EDGE_TEXT = [
    "x" * 64,
    "é" * 64,
    "PM2,5",
    "a b=c,d",
    "line\nbreak",
    "nul\x00",
    "\\",
    '"q"',
    "🌫️",
    "\u2028",
    "\ufeff",
    "-",
]


def short_text(min_size: int = 0):
    return st.text(min_size=min_size, max_size=8) | st.sampled_from([t for t in EDGE_TEXT if len(t) >= min_size])


def _no_control(text: str) -> bool:
    return not any(ord(c) < 0x20 or c == "\x7f" for c in text)


# Valid names and units hold no control character, a valid cause no NUL (docs/wire-format.md);
# the mutations below still put EDGE_TEXT's control characters anywhere.
names = short_text(1).filter(_no_control)


def reading_strategy(ts):
    return st.tuples(
        ts,
        names,
        names,
        st.none() | st.floats(allow_nan=False, allow_infinity=False),
        short_text().filter(_no_control),
        st.sampled_from(STATUS_CODES),
        short_text().filter(lambda t: "\x00" not in t) | st.just("c" * 256),
    ).map(list)


@st.composite
def readings_strategy(draw, ts):
    # A valid batch holds each (ts, device, parameter) once.
    readings = draw(st.lists(reading_strategy(ts), min_size=1, max_size=4, unique_by=lambda r: (r[0], r[1], r[2])))
    # Now and then a big batch: copies of a drawn reading under new times (cheap to make, costly to check),
    # under a device name longer than any drawn one, so no copy repeats a drawn key.
    copies = draw(st.sampled_from([0] * 60 + [100, 1000, 10_000 - len(readings)]))
    ts, _, _, value, _, status, _ = readings[0]
    readings += [
        [(ts + k) % QDB_MAX_TS + 1, "copies-of-the-first", "PM10", value, "ug/m3", status, ""]
        for k in range(1, copies + 1)
    ]
    return readings


_NEXT_SEQ = itertools.count(1_000)
# Through a real collector most batches need a fresh sequence number, or they end as sequence_reuse
# (hypothesis likes to repeat small numbers); a few small ones keep that path exercised too.
fresh_seqs = st.one_of(*[st.builds(lambda: next(_NEXT_SEQ))] * 3, st.integers(1, 3))


def body_strategy(station: str, ts, sent, seqs=st.integers(1, INT64_MAX)):
    return st.fixed_dictionaries({
        "station": st.just(station),
        "seq": seqs,
        "sent_ns": sent,
        "hist": st.booleans(),
        "readings": readings_strategy(ts),
    })  # fmt: skip


def time_strategies(narrow: bool):
    """In-process any time goes; a real QuestDB keeps one partition per day, so there most times are recent."""
    if narrow:
        recent = st.integers(NOW_NS - 30 * 86_400 * 10**9, NOW_NS)
        return recent | st.sampled_from([1, QDB_MAX_TS]), recent | st.sampled_from([0, QDB_MAX_TS])
    return st.integers(1, QDB_MAX_TS), st.integers(0, QDB_MAX_TS)


# Each strategy draws a list of (topic, payload, kind): one hypothesis example yields several payloads
# (mutants of one drawn batch, every trust case of one drawn body), which keeps 10,000 payloads quick.
@st.composite
def valid_batches(draw, narrow=False):
    ts, sent = time_strategies(narrow)
    station, key = draw(st.sampled_from([(GOOD, "good"), (ROTATED, "rot_new")]))
    body = draw(body_strategy(station, ts, sent, fresh_seqs if narrow else st.integers(1, INT64_MAX)))
    return [(data_topic(station), envelope(key, pack(body)), "valid")]


def mutate_bytes(payload: bytes, rnd: random.Random) -> bytes:
    data = bytearray(payload)
    for _ in range(rnd.randint(1, 4)):
        if not data:
            break
        op, at = rnd.choice(["flip", "flip", "truncate", "insert", "delete", "overwrite"]), rnd.randrange(len(data))
        if op == "flip":
            data[at] ^= 1 << rnd.randrange(8)
        elif op == "truncate":
            del data[at:]
        elif op == "insert":
            data[at:at] = rnd.randbytes(rnd.randint(1, 16))
        elif op == "delete":
            del data[at : at + rnd.randint(1, 16)]
        else:
            data[at] = rnd.randrange(256)
    return bytes(data)


def flip_within(payload: bytes, part: bytes, rnd: random.Random) -> bytes:
    """One bit flipped inside ``part`` (the body, the signature, the key id) where it sits in ``payload``."""
    at = payload.find(part) + rnd.randrange(len(part))
    return payload[:at] + bytes([payload[at] ^ (1 << rnd.randrange(8))]) + payload[at + 1 :]


@st.composite
def byte_mutations(draw, narrow=False):
    """A valid batch and four mutants of it: two anywhere (bit flips, truncation, insertion, deletion,
    overwrites: mostly broken framing), one bit flipped in the signed body, one in the signature or key id."""
    [(topic, payload, _)] = draw(valid_batches(narrow))
    rnd = random.Random(draw(st.integers(0, 2**32 - 1)))  # one draw for all mutations: shrinkable, and cheap
    env = open_envelope(payload)
    return [
        (topic, payload, "valid"),
        (topic, mutate_bytes(payload, rnd), "byte-mutation"),
        (topic, mutate_bytes(payload, rnd), "byte-mutation"),
        (topic, flip_within(payload, env.body, rnd), "body-bit-flip"),
        (topic, flip_within(payload, rnd.choice([env.signature, env.key_id.encode()]), rnd), "sig-or-kid-bit-flip"),
    ]


PLACEHOLDER = "\x01NONUTF8\x01"  # replaced in the packed bytes by invalid UTF-8 of the same length
INVALID_UTF8 = [
    b"\xff",
    b"\xc0\x80",
    b"\xed\xa0\x80",
    b"\xe2\x82",
    b"\x80",
]  # stray, overlong, surrogate, cut, continuation
BREAKS = [
    "drop_key", "extra_key", "field_any", "field_edge", "reading_any", "reading_edge", "reading_arity",
    "readings_container", "non_utf8", "non_finite", "ts_edge", "other_station", "not_a_map",
]  # fmt: skip


def break_body(body: dict, rnd: random.Random, pool: list, edges: list):
    """One to three field-level breaks, chosen by ``rnd`` from values hypothesis drew (``pool``) and edge values."""
    body = copy.deepcopy(body)
    readings = body["readings"]
    for _ in range(rnd.randint(1, 3)):
        kind, field = rnd.choice(BREAKS), rnd.choice(["station", "seq", "sent_ns", "hist", "readings"])
        i = rnd.randrange(len(readings)) if isinstance(readings, list) and readings else None
        reading_ok = i is not None and isinstance(readings[i], list) and len(readings[i]) == 7
        j = rnd.randrange(7)
        if kind == "drop_key":
            body.pop(field, None)
        elif kind == "extra_key":
            body[rnd.choice(["extra", "v", "", "readings2"])] = rnd.choice(pool)
        elif kind == "field_any":
            body[field] = rnd.choice(pool)
        elif kind == "field_edge":
            body[field] = rnd.choice(edges)
        elif kind == "reading_any" and reading_ok:
            readings[i][j] = rnd.choice(pool)
        elif kind == "reading_edge" and reading_ok:
            readings[i][j] = rnd.choice(edges)
        elif kind == "reading_arity" and i is not None and isinstance(readings[i], list):
            readings[i] = (
                readings[i][: rnd.randrange(7)] if rnd.random() < 0.5 else list(readings[i]) + [rnd.choice(pool)]
            )
        elif kind == "readings_container":
            body["readings"] = readings = rnd.choice([[], {}, "readings", None, 7, [None], [[]], "many"])
            if readings == "many":  # one over the contract's limit
                body["readings"] = readings = [[NOW_NS + n, "d", "p", 1.0, "", "00", ""] for n in range(10_001)]
        elif kind == "non_utf8" and reading_ok:
            readings[i][rnd.choice([1, 2, 4, 5, 6])] = PLACEHOLDER
        elif kind == "non_finite" and reading_ok:
            readings[i][3] = rnd.choice([math.nan, math.inf, -math.inf])
        elif kind == "ts_edge" and reading_ok:
            readings[i][0] = rnd.choice([0, -1, -(2**63), INT64_MAX + 1, UINT64_MAX, 1.0e18, True, None])
        elif kind == "other_station":
            body["station"] = rnd.choice([ROTATED, UNKNOWN, "", "has/slash", "#", "x" * 65, 7, None, PLACEHOLDER])
        elif kind == "not_a_map":
            return rnd.choice(pool)
    return body


@st.composite
def broken_bodies(draw, narrow=False):
    """Bodies with broken fields, signed with the station's real key: they pass the signature, not the schema."""
    ts, sent = time_strategies(narrow)
    body = draw(body_strategy(GOOD, ts, sent))
    pool = draw(st.lists(anything, min_size=1, max_size=4))
    rnd = random.Random(draw(st.integers(0, 2**32 - 1)))
    out = []
    for _ in range(3):
        broken = break_body(body, rnd, pool, EDGE_VALUES)
        try:
            packed = pack(broken)
        except (OverflowError, TypeError, ValueError):
            packed = pack(repr(broken))  # something msgpack cannot carry: its text goes instead
        bad = (rnd.choice(INVALID_UTF8) * len(PLACEHOLDER))[: len(PLACEHOLDER)]
        out.append((data_topic(GOOD), envelope("good", packed.replace(PLACEHOLDER.encode(), bad)), "broken-body"))
    return out


@st.composite
def random_structures(draw, narrow=False):
    kind = draw(st.sampled_from(["raw_bytes", "msgpack_any", "envelope_any_fields", "signed_any_body", "huge"]))
    topic = data_topic(GOOD)
    if kind == "raw_bytes":
        payload = draw(st.binary(max_size=600))
    elif kind == "msgpack_any":
        payload = pack(draw(anything))
    elif kind == "envelope_any_fields":
        fields = {"v": 1, "kid": kid("good"), "body": b"\x80", "sig": b"\x00" * 64}
        for name in draw(
            st.lists(st.sampled_from(["v", "kid", "body", "sig", "extra", "drop"]), min_size=1, max_size=3)
        ):
            if name == "drop":
                fields.pop(draw(st.sampled_from(["v", "kid", "body", "sig"])), None)
            else:
                fields[name] = draw(anything | st.sampled_from(EDGE_VALUES))
        payload = pack(fields)
    elif kind == "signed_any_body":
        payload = envelope("good", pack(draw(anything)))
    else:
        # Over the 1 MiB limit, or a signed body of one 200 KiB string: size must not crash anything either.
        payload = draw(
            st.sampled_from(
                [
                    b"\x00" * (MAX_ENVELOPE_BYTES + 1),
                    envelope("good", pack({"station": GOOD, "readings": ["x" * 200_000]})),
                ]
            )
        )
    return [(topic, payload, f"random-{kind}")]


@st.composite
def trust_cases(draw, narrow=False):
    """Right shape, wrong trust, every case for one drawn body: a stranger's key, a retired key, another station's
    key, disabled and unknown stations, a bad topic, wrong envelope versions."""
    ts, sent = time_strategies(narrow)
    fields = draw(body_strategy(GOOD, ts, sent))
    body = {name: pack({**fields, "station": name}) for name in (GOOD, ROTATED, DISABLED, UNKNOWN)}
    # Topics the collector's subscription matches (quantrac/v1/+/data) whose station id is not allowed;
    # no control characters (Mosquitto drops a publisher for them) and no MQTT separators or wildcards.
    printable = st.text(
        st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="/+#"), min_size=1, max_size=70
    )
    bad_station = draw(
        (st.sampled_from(["-lead", "_x", ".", "a" * 65, "sp ace", "ü"]) | printable).filter(
            lambda s: not STATION_ID_PATTERN.match(s)
        )
    )
    version = draw(st.sampled_from([0, 2, -1, "1", "", None, UINT64_MAX, [1], 1.5]))
    loose = draw(
        st.sampled_from([True, 1.0])
    )  # equal to 1 in Python, and open_envelope takes them: a finding, not a crash
    return [
        (data_topic(GOOD), envelope("stranger", body[GOOD]), "stranger"),
        (data_topic(ROTATED), envelope("rot_old", body[ROTATED]), "retired"),
        (data_topic(ROTATED), envelope("rot_new", body[GOOD]), "other_station_key"),  # GOOD's body, ROTATED's key
        (data_topic(DISABLED), envelope("off", body[DISABLED]), "disabled"),
        (data_topic(UNKNOWN), envelope("stranger", body[UNKNOWN]), "unknown"),
        (f"quantrac/v1/{bad_station}/data", envelope("good", body[GOOD]), "bad_topic"),
        (
            data_topic(GOOD),
            pack({"v": version, "kid": kid("good"), "body": body[GOOD], "sig": sign("good", body[GOOD])}),
            "version",
        ),
        (
            data_topic(GOOD),
            pack({"v": loose, "kid": kid("good"), "body": body[GOOD], "sig": sign("good", body[GOOD])}),
            "version-loose",
        ),
    ]


def _json_nested(inner):
    return st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=30),
    _json_nested,
    max_leaves=20,
)


@st.composite
def status_messages(draw, narrow=False):
    """Status JSON (random, mutated, random bytes, oversized) for registered, disabled and unknown stations."""
    station = draw(st.sampled_from([GOOD, GOOD, GOOD, DISABLED, UNKNOWN]))
    docs = st.fixed_dictionaries(
        # mostly right values, so that a fair share ends as station events
        {"state": st.one_of(*[st.sampled_from(["online", "offline"])] * 3, json_values),
         "station": st.one_of(*[st.sampled_from([station, GOOD, ROTATED])] * 3, json_values),
         "session": st.one_of(*[st.integers(0, INT64_MAX)] * 3, json_values)},
        optional={"planned": json_values, "outbox": json_values, "devices": json_values},
    )  # fmt: skip
    doc = draw(st.one_of(docs, docs, docs, json_values))
    text = json.dumps(doc).encode(draw(st.sampled_from(["utf-8", "utf-8", "utf-8", "utf-16", "utf-32"])))
    rnd = random.Random(draw(st.integers(0, 2**32 - 1)))
    huge = json.dumps({"state": "online", "station": station, "session": 1, "pad": "x" * 70_000}).encode()
    # Signed with the good station's key, as on the wire: so that the body's checks are reached.
    payload = envelope("good", text)
    return [
        (status_topic(station), payload, "status-json"),
        (status_topic(station), mutate_bytes(payload, rnd), "status-mutated"),
        (status_topic(station), envelope("good", mutate_bytes(text, rnd)), "status-body-mutated"),
        (status_topic(station), text, "status-unsigned"),
        (
            status_topic(station),
            draw(st.binary(max_size=300)) if rnd.random() < 0.9 else envelope("good", huge),
            "status-bytes",
        ),
    ]


ALL = [valid_batches, byte_mutations, broken_bodies, random_structures, trust_cases, status_messages]


# -- the judge ----------------------------------------------------------------------------------------
class DryRunWriter(WarehouseWriter):
    """The real row-building code of ``WarehouseWriter`` into a real ILP buffer, with nothing sent.

    What the collector would write for an outcome must at least serialise;
    whether QuestDB takes it is what the end-to-end test below checks.
    """

    def __init__(self) -> None:
        super().__init__("unused")
        # Never contacted: with protocol_version given, establishing an HTTP sender opens no connection.
        self._buffers = Sender.from_conf("http::addr=127.0.0.1:9;protocol_version=2;auto_flush=off;")
        self._buffers.establish()

    def _flush(self, fill) -> int:
        return fill(self._buffers.new_buffer())


WRITER = DryRunWriter()


def judge(topic: str, payload: bytes, registry: StationRegistry) -> Accepted | StationEvent | Rejected:
    received = time.time_ns()
    outcome = check_message(topic, payload, registry, received)
    parsed = parse_topic(topic)
    if isinstance(outcome, Rejected):
        row = outcome.row
        assert row.reason in REASONS, row
        assert row.detail and isinstance(row.detail, str)
        assert row.topic == topic and row.received_ns == received
        assert row.claimed_station == (parsed[0] if parsed else "")
        assert base64.b64decode(row.payload_b64) == payload[:REJECT_HEAD_BYTES] and row.payload_size == len(payload)
        assert row.payload_sha256 == hashlib.sha256(payload).hexdigest()
        assert WRITER.write_rejects([row]) == 1
    elif isinstance(outcome, Accepted):
        body = outcome.body
        assert parsed == (body.station, "data")
        entry = registry.get(body.station)
        assert entry.enabled and outcome.key_id in entry.keys and entry.keys[outcome.key_id].refusal(received) is None
        assert STATION_ID_PATTERN.match(body.station) and 0 <= body.seq <= UINT64_MAX and 0 <= body.sent_ns <= INT64_MAX
        assert 1 <= len(body.readings()) == len(body.ts_ns) <= 10_000
        for r in body.readings():
            assert type(r.ts_ns) is int and 0 < r.ts_ns <= QDB_MAX_TS
            assert r.value is None or (type(r.value) is float and math.isfinite(r.value))
            assert r.status in STATUS_CODES and isinstance(r.unit, str) and len(r.unit) <= 64 and len(r.cause) <= 256
            assert all(isinstance(s, str) and 1 <= len(s) <= 64 for s in (r.device, r.parameter))
        assert outcome.payload_sha256 == hashlib.sha256(payload).hexdigest()
        item = PendingMessage(0, 1, 1, topic, payload, received, outcome)
        assert WRITER.write_reading_columns(reading_columns([item])) == len(body)
        assert WRITER.write_rows(BATCHES, [ledger_row(item)]) == 1
    else:
        assert isinstance(outcome, StationEvent), f"check_message returned {outcome!r}"
        assert parsed == (outcome.station, "status")
        assert outcome.state in ("online", "offline") and outcome.session >= 0
        assert WRITER.write_rows(STATION_EVENTS, [event_row(outcome)]) == 1
    event(type(outcome).__name__ + (f": {outcome.row.reason}" if isinstance(outcome, Rejected) else ""))
    return outcome


# -- in-process: over 10,000 payloads --------------------------------------------------------------------
# (strategy, hypothesis examples, payloads per example)
IN_PROCESS = [
    (valid_batches, 1000, 1), (byte_mutations, 800, 5), (broken_bodies, 800, 3),
    (random_structures, 1000, 1), (trust_cases, 200, 8), (status_messages, 300, 5),
]  # fmt: skip
assert sum(n * k for _, n, k in IN_PROCESS) >= 10_000
EXPECTED_REASON = {
    "stranger": "unknown_key", "unknown": "unknown_station", "disabled": "disabled_station", "retired": "retired_key",
    "bad_topic": "bad_topic", "version": "version", "other_station_key": "topic_mismatch",
}  # fmt: skip


@pytest.mark.slow  # a fuzz campaign: about a minute in all
@pytest.mark.parametrize("strategy,examples,per_example", IN_PROCESS, ids=[s.__name__ for s, _, _ in IN_PROCESS])
def test_fuzzed_payloads_end_as_readings_events_or_rejects(registry, strategy, examples, per_example):
    judged = []

    @fuzz(examples)
    @given(strategy())
    def run(messages):
        for topic, payload, kind in messages:
            outcome = judge(topic, payload, registry)
            judged.append(kind)
            if kind == "valid" and len(payload) > MAX_ENVELOPE_BYTES:
                assert isinstance(outcome, Rejected) and outcome.row.reason == "oversized"
            elif kind == "valid":
                assert isinstance(outcome, Accepted), outcome
            elif kind in EXPECTED_REASON:
                assert isinstance(outcome, Rejected) and outcome.row.reason == EXPECTED_REASON[kind], (kind, outcome)

    run()
    assert len(judged) >= examples * per_example, f"{len(judged)} payloads judged, {examples * per_example} planned"


# -- end to end: a few hundred through the real collector ----------------------------------------------
@pytest.mark.slow  # a fuzz campaign through a collector process
def test_fuzzed_payloads_through_a_real_collector_are_all_accounted_for(
    registry, make_questdb, mosquitto_server, tmp_path
):
    """Every published message ends as a ledger entry (its readings stored), a station event, or a reject."""
    drawn: list[tuple[str, bytes, str]] = []

    @fuzz(160)
    @given(st.one_of([s(narrow=True) for s in ALL]))
    def collect(messages):
        drawn.extend(messages)

    collect()
    messages, outcomes, seen = [], {}, set()
    for topic, payload, _kind in drawn:
        digest = hashlib.sha256(payload).hexdigest()
        if digest in seen:  # identical bytes are a redelivery: acknowledged, rightly, without a new row
            continue
        outcome = check_message(topic, payload, registry, time.time_ns())
        seen.add(digest)
        messages.append((topic, payload))
        outcomes[digest] = outcome
    assert len(messages) >= 200

    qdb = make_questdb()
    pg = qdb.endpoints.pg_conninfo
    ensure_schema(pg)
    log = tmp_path / "collector.log"
    collector = collector_process(
        registry.path,
        f"127.0.0.1:{mosquitto_server.port}",
        f"127.0.0.1:{qdb.endpoints.http_port}",
        f"127.0.0.1:{qdb.endpoints.pg_port}",
        log,
        client_id="fuzz-collector",
    ).start()
    try:
        wait_until(
            lambda: '"event": "mqtt_connected"' in log.read_text(),
            timeout=30,
            what="collector connected",
            process=collector,
        )
        time.sleep(0.3)
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"fuzz-pub-{_RUN}", protocol=mqtt.MQTTv5)
        client.connect("127.0.0.1", mosquitto_server.port)
        client.loop_start()
        try:
            infos = [client.publish(topic, payload, qos=session.QOS) for topic, payload in messages]
            for info in infos:
                info.wait_for_publish(timeout=60)
                assert info.is_published()
        finally:
            client.disconnect()
            client.loop_stop()

        def accounted():
            ledger = {d for (d,) in sql(pg, "SELECT payload_sha256 FROM batches")}
            rejects = {d for (d,) in sql(pg, "SELECT payload_sha256 FROM rejects")}
            events = sql(pg, "SELECT count() FROM station_events")[0][0]
            total = len(ledger) + len(rejects) + events
            return (ledger, rejects, events) if total >= len(messages) and wal_applied(pg) else None

        ledger, rejects, events = wait_until(
            accounted, timeout=120, interval=0.5, what="every message stored", process=collector
        )
        assert collector.running, "the collector crashed on a fuzzed payload"
    finally:
        collector.stop()

    assert not ledger & rejects, "a message is both stored and rejected"
    assert (ledger | rejects) <= set(outcomes)
    assert len(ledger) + len(rejects) + events == len(messages)
    assert sql(pg, "SELECT count() FROM rejects")[0][0] == len(rejects), "a reject was written twice"
    # What the collector stored matches what check_message decided, message by message ...
    for digest, outcome in outcomes.items():
        if isinstance(outcome, Rejected):
            assert digest in rejects, outcome.row
        elif isinstance(outcome, StationEvent):
            assert digest not in ledger | rejects
        elif digest not in ledger:
            # ... except where the warehouse or the sequence ledger had the last word.
            reason = sql(pg, "SELECT reason FROM rejects WHERE payload_sha256 = %s", (digest,))
            assert reason and reason[0][0] in ("warehouse_refused", "sequence_reuse"), (reason, outcome.body)
    # and the readings of the stored batches are there, each key once.
    keys = {
        (r.ts_ns, o.body.station, r.device, r.parameter)
        for d, o in outcomes.items()
        if d in ledger
        for r in o.body.readings()
    }
    stored = sql(pg, "SELECT ts::long, station, device, parameter FROM readings")
    assert len(stored) == len(set(stored)) and set(stored) == keys
    reasons = sql(pg, "SELECT reason, count() FROM rejects GROUP BY reason ORDER BY 2 DESC")
    print(
        f"\n{len(messages)} fuzzed messages: {len(ledger)} batches stored ({len(stored)} readings), "
        f"{events} station events, "
        f"rejects by reason {reasons}"
    )


# -- the crashes found, one test each (fixed; kept so they stay fixed) ----------------------------------------------
@pytest.fixture
def flusher(registry, warehouse):
    """A Collector that is never connected, so its real ``_flush`` can be handed one message at a time.

    It writes to the session's QuestDB; the acknowledgement goes nowhere (no connection).
    """
    from broker_bridge.session import BrokerAddress
    from collector.service import CollectorConfig

    collector = Collector(
        CollectorConfig(
            BrokerAddress("127.0.0.1", 1),
            f"fuzz-flush-{_RUN}",
            str(registry.path),
            warehouse.ilp_conf,
            pg_conninfo=None,
            flush_max_bytes=1 << 30,
            max_pending_bytes=1 << 31,  # a test hands its messages to one flush, however large
        )
    )
    yield collector
    collector.warehouse.close()


def held(collector: Collector, items: list[PendingMessage]) -> list[PendingMessage]:
    """Hold messages as the network thread would and take them into one flush, which releases them after its commit."""
    for item in items:
        collector.intake.hold(item)
    taken = collector.intake.take(force=True)
    assert len(taken) == len(items)
    return taken


def flush_one(collector: Collector, topic: str, payload: bytes) -> None:
    """What the flush loop does with a message; an exception here ends ``Collector.run`` and the process."""
    before = collector.stats.rejects_written
    collector.pipeline.flush_isolating(
        held(collector, [PendingMessage(collector.intake.generation, 1, 1, topic, payload, time.time_ns())])
    )
    assert collector.stats.rejects_written == before + 1, "a payload outside the contract must end as a reject"


def signed_batch(seq=1, sent_ns=None) -> bytes:
    body = {"station": GOOD, "seq": seq, "sent_ns": NOW_NS if sent_ns is None else sent_ns, "hist": False,
            "readings": [[NOW_NS, "dev1", "PM10", 1.0, "ug/m3", "00", ""]]}  # fmt: skip
    return envelope("good", pack(body))


def test_seq_above_int64_is_rejected_not_a_crash(flusher):
    flush_one(flusher, data_topic(GOOD), signed_batch(seq=INT64_MAX + 1))


def test_sent_ns_beyond_questdb_range_is_rejected_not_a_crash(flusher):
    flush_one(flusher, data_topic(GOOD), signed_batch(seq=2, sent_ns=INT64_MAX))


def test_utf16_status_is_rejected_not_a_crash(flusher):
    doc = {"state": "online", "station": GOOD, "session": 1}
    flush_one(flusher, status_topic(GOOD), envelope("good", json.dumps(doc).encode("utf-16")))


def test_status_session_above_int64_is_rejected_not_a_crash(flusher):
    doc = {"state": "online", "station": GOOD, "session": 2**63}
    flush_one(flusher, status_topic(GOOD), envelope("good", json.dumps(doc).encode()))


def test_a_flush_of_many_large_rejects_does_not_crash(flusher):
    # 700 undecodable payloads of 150 KiB: base64 in the rejects table makes one 140 MB request. A backlog
    # like it builds up whenever a station with a broken key or firmware sends while the collector is down.
    batch = [
        PendingMessage(
            flusher.intake.generation, n, 1, data_topic(GOOD), random.Random(n).randbytes(150 * 1024), time.time_ns()
        )
        for n in range(700)
    ]
    flusher.pipeline.flush_isolating(held(flusher, batch))
    assert flusher.stats.rejects_written == len(batch)
