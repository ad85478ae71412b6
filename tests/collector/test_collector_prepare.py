"""The collector's preparation (admit -> sequence -> measurement controls -> columns) and its intake
bookkeeping, without a broker or a warehouse: a real registry file, keys made here, real signatures."""

from __future__ import annotations

import json
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker_bridge.envelope import BatchBody, Envelope, Reading, seal
from broker_bridge.session import BrokerAddress
from broker_bridge.station_messages import (
    MAX_SESSION_JUMP,
    Birth,
    DeviceDescription,
    MeasuringRange,
    OutboxStatus,
    StationDescription,
    StationState,
    Status,
    Will,
    seal_station_message,
)
from broker_bridge.topics import data_topic, status_topic
from collector.admission import Accepted, Rejected, StationEvent
from collector.analyzer_ranges import AnalyzerRanges
from collector.intake import FlushLimits, Intake, PendingMessage
from collector.metrics import CollectorMetrics
from collector.prepare import Preparation, admit, flush_records
from collector.qc.engine import QualityControl
from collector.qc.state import SeriesState
from collector.qc.thresholds import ThresholdSource
from collector.registry import StationRegistry, add_station
from collector.sequence import SequenceTracker
from collector.sessions import SessionGuard
from store.ilp_writer import ilp_row
from store.schema import BATCHES, READINGS

STATION = "PREP_ST1"
MIN = 60 * 10**9
HOUR, DAY = 60 * MIN, 24 * 60 * MIN
EMPTY_STATE = StationState(OutboxStatus(0, 0, 0, 0, 0, 0, 1 << 30, 0.0, 0.0, 0, 0, 0), None, {}, 0, None, 0)


@pytest.fixture
def station(tmp_path):
    key = Ed25519PrivateKey.generate()
    path = tmp_path / "registry.yaml"
    kid = add_station(path, STATION, key.public_key())
    return StationRegistry(path), key, kid


def batch(
    key, kid, seq: int, now: int, values=(40.0,), station: str = STATION, measured_ago: int = 0, every: int = MIN
) -> bytes:
    readings = tuple(
        Reading(now - measured_ago - i * every, "aqms1", "PM10", v, "ug/m3", "00") for i, v in enumerate(values)
    )
    return seal(BatchBody(station, seq, now, readings), kid, key)


def message(topic: str, payload: bytes, registry: StationRegistry, received_ns: int, mid: int = 1) -> PendingMessage:
    item = PendingMessage(1, mid, 1, topic, payload, received_ns)
    admit(item, registry)
    return item


def preparation(registry: StationRegistry) -> tuple[Preparation, CollectorMetrics]:
    metrics = CollectorMetrics()
    qc = QualityControl(ThresholdSource(None), SeriesState())
    return Preparation(registry, SequenceTracker(None), qc, metrics), metrics


def test_admit_judges_each_message_on_arrival(station):
    registry, key, kid = station
    now = time.time_ns()
    good = message(data_topic(STATION), batch(key, kid, 1, now, values=(1.0, 2.0)), registry, now)
    assert isinstance(good.outcome, Accepted) and good.readings == 2 and good.outcome.key_id == kid

    stranger = Ed25519PrivateKey.generate()
    forged = message(data_topic(STATION), batch(stranger, kid, 2, now), registry, now)
    assert (
        isinstance(forged.outcome, Rejected) and forged.outcome.row.reason == "bad_signature" and forged.readings == 0
    )

    unknown = message(data_topic("PREP_NOBODY"), batch(key, kid, 1, now, station="PREP_NOBODY"), registry, now)
    assert isinstance(unknown.outcome, Rejected) and unknown.outcome.row.reason == "unknown_station"

    status = seal_station_message(Birth(STATION, 7, now), kid, key)
    event = message(status_topic(STATION), status, registry, now)
    assert isinstance(event.outcome, StationEvent) and event.outcome.session == 7 and event.outcome.state == "online"
    assert json.loads(event.outcome.payload) == {"state": "online", "station": STATION, "session": 7, "ts_ns": now}


def status_reason(payload: bytes, registry, sessions: SessionGuard | None = None) -> str | None:
    """The reject reason of a status-topic message, or None when it became a station event."""
    item = PendingMessage(1, 1, 1, status_topic(STATION), payload, time.time_ns())
    admit(item, registry, sessions)
    return item.outcome.row.reason if isinstance(item.outcome, Rejected) else None


def test_status_birth_and_will_must_be_signed_by_the_station(station):
    registry, key, kid = station
    will = Will(STATION, 5)
    assert status_reason(seal_station_message(will, kid, key), registry) is None
    assert status_reason(will.encode(), registry) == "undecodable"  # the unsigned JSON of before
    stranger = Ed25519PrivateKey.generate()
    assert status_reason(seal_station_message(will, kid, stranger), registry) == "bad_signature"
    assert status_reason(seal_station_message(will, "0123456789abcdef", stranger), registry) == "unknown_key"
    tampered = bytearray(seal_station_message(will, kid, key))
    tampered[tampered.index(b"5}")] = ord("9")  # session 5 -> 9 after signing
    assert status_reason(bytes(tampered), registry) == "bad_signature"
    out_of_shape = b'{"state": "online", "station": "PREP_ST1", "session": 1, "outbox": "full"}'
    assert status_reason(Envelope(kid, out_of_shape, key.sign(out_of_shape)).encode(), registry) == "schema"
    other = Birth("PREP_OTHER", 1, None)
    assert status_reason(seal_station_message(other, kid, key), registry) == "topic_mismatch"


def test_a_session_grows_only_by_a_bounded_step_above_what_the_station_proved(station):
    registry, key, kid = station
    sessions = SessionGuard()
    sessions.seed({STATION: 3_000_001})
    signed = lambda message: seal_station_message(message, kid, key)  # noqa: E731
    pinned = 2**63 - 2
    assert status_reason(signed(Will(STATION, pinned)), registry, sessions) == "session_jump"
    assert status_reason(signed(Status(STATION, pinned, None, EMPTY_STATE)), registry, sessions) == "session_jump"
    assert sessions.highest(STATION) == 3_000_001  # a refused message proves nothing
    assert status_reason(signed(Birth(STATION, 4_000_001, None)), registry, sessions) is None
    assert sessions.highest(STATION) == 4_000_001
    ahead = 4_000_001 + MAX_SESSION_JUMP
    assert status_reason(signed(Will(STATION, ahead)), registry, sessions) is None  # the bound itself is allowed
    assert status_reason(signed(Will(STATION, ahead + MAX_SESSION_JUMP + 1)), registry, sessions) == "session_jump"
    # Without history (a new station, or no warehouse): the bound counts from 0.
    assert status_reason(signed(Birth(STATION, pinned, None)), registry) == "session_jump"


def test_prepare_sequences_flags_and_lays_out_columns(station):
    registry, key, kid = station
    prep, metrics = preparation(registry)
    now = time.time_ns()
    first = [
        message(data_topic(STATION), batch(key, kid, 1, now, values=(40.0, 41.0)), registry, now, mid=1),
        message(data_topic(STATION), batch(key, kid, 2, now + 1, values=(42.0,)), registry, now, mid=2),
        # 3 and 4 never came: a gap
        message(
            data_topic(STATION),
            batch(key, kid, 5, now + 2, values=(-5.0,), measured_ago=10 * MIN),
            registry,
            now,
            mid=3,
        ),
    ]
    prepared = prep.prepare(first)
    assert prepared.new == first and prepared.duplicates == 0
    assert [(s, a, b) for s, a, b, _ in prepared.gaps] == [(STATION, 3, 4)]
    columns = prepared.columns
    assert len(columns) == 4 and list(columns.seq) == [1, 1, 2, 5]
    assert list(columns.historical) == [False, False, False, True]  # measured ten minutes before it arrived
    assert columns.qc_flag is not None and len(columns.qc_flag) == 4
    assert int(columns.qc_flag[3]) == 3 and columns.qc_check[3] == "gross_range"  # a negative PM10: suspect
    assert metrics.stats().flags_by_check.get("gross_range") == 1
    prep.sequences.commit_flush(prepared.token)

    redelivered = message(data_topic(STATION), first[0].payload, registry, now + MIN, mid=4)
    reused = message(data_topic(STATION), batch(key, kid, 2, now + 3, values=(99.0,)), registry, now + MIN, mid=5)
    second = prep.prepare([redelivered, reused])
    assert second.new == [] and second.duplicates == 1 and len(second.columns) == 0
    assert isinstance(reused.outcome, Rejected) and reused.outcome.row.reason == "sequence_reuse"

    records = flush_records(second)
    assert records.ledger == [] and [r.reason for r in records.rejects] == ["sequence_reuse"]
    records = flush_records(prepared)
    assert len(records.ledger) == 3 and records.rejects == [] and len(records.gaps) == 1
    symbols, fields, ts = records.ledger[0]
    assert symbols == {"station": STATION, "key_id": kid} and ts == now
    assert fields["seq"] == 1 and fields["readings"] == 2


def ranged_birth(session: int, now: int, ranges=((0.0, 800.0),)) -> Birth:
    """A birth whose PM10 on aqms1 has the analyzer range ``ranges[0]`` of profile demo-pm (none when empty)."""
    return Birth(
        STATION,
        session,
        now,
        StationDescription(
            "prep station",
            "ambient_air",
            (DeviceDescription("aqms1", "demo-pm", "modbus_tcp"),),
            "0" * 64,
            tuple(MeasuringRange("aqms1", "PM10", "ug/m3", lo, hi, "demo-pm") for lo, hi in ranges),
        ),
    )


def test_the_births_analyzer_range_fails_a_value_and_the_operator_range_stays_suspect(station):
    """PM10 in ug/m3 (collector/qc/defaults.yaml): operator range [0, 600] suspect, the defaults' fail span
    [-10, 1000]; the analyzer's profile says [0, 800]. Before the birth only the operator's thresholds apply."""
    registry, key, kid = station
    metrics = CollectorMetrics()
    ranges = AnalyzerRanges()
    qc = QualityControl(ThresholdSource(None, analyzer_ranges=ranges.current), SeriesState())
    prep = Preparation(registry, SequenceTracker(None), qc, metrics, ranges=ranges)
    now = time.time_ns()
    signed = lambda m: seal_station_message(m, kid, key)  # noqa: E731

    def flags(seq: int, values, *before: bytes) -> list[tuple[int, str, str]]:
        items = [message(status_topic(STATION), b, registry, now, mid=100 + i) for i, b in enumerate(before)]
        # Readings two hours apart (and a day between messages): beyond every window, only gross_range judges.
        payload = batch(key, kid, seq, now - (10 - seq) * DAY, values=values, every=2 * HOUR)
        data = message(data_topic(STATION), payload, registry, now, mid=seq)
        prepared = prep.prepare([*items, data])
        prep.sequences.commit_flush(prepared.token)
        c = prepared.columns
        return [(int(f), k, cause) for f, k, cause in zip(c.qc_flag, c.qc_check, c.qc_cause)]

    unseen = flags(1, (900.0, 700.0))  # no birth yet: the operator's thresholds only
    assert [f for f, _, _ in unseen] == [3, 3]
    assert "operator range [0.0, 600.0]" in unseen[0][2]

    seen = flags(2, (900.0, 700.0, 300.0, -0.5), signed(ranged_birth(3_000_001, now)))
    assert seen[0] == (
        4,
        "gross_range",
        "gross_range: 900.0 ug/m3 outside the analyzer range [0.0, 800.0] of profile demo-pm",
    )
    assert seen[1] == (3, "gross_range", "gross_range: 700.0 ug/m3 outside the operator range [0.0, 600.0]")
    assert seen[2][0] == 1
    assert seen[3][0] == 4 and "[0.0, 800.0] of profile demo-pm" in seen[3][2]  # below the analyzer's zero
    assert metrics.stats().flags_by_check.get("gross_range", 0) >= 3

    # A late copy of an older connection's birth (another range) changes nothing ...
    late = flags(3, (900.0,), signed(ranged_birth(2_000_001, now, ((0.0, 2000.0),))))
    assert late[0][0] == 4 and "[0.0, 800.0]" in late[0][2]
    # ... a newer birth without ranges (an agent before them) leaves only the operator's again.
    cleared = flags(4, (900.0,), signed(ranged_birth(4_000_001, now, ())))
    assert cleared[0][0] == 3


def test_ranges_are_read_back_from_the_stored_birth_after_a_restart(station):
    """What the collector stores of a birth (station_events.payload: the verified JSON body) seeds the ranges."""
    registry, key, kid = station
    now = time.time_ns()
    item = message(status_topic(STATION), seal_station_message(ranged_birth(7, now), kid, key), registry, now)
    stored = item.outcome.payload
    restarted = AnalyzerRanges()
    assert restarted.seed({STATION: stored, "PREP_BROKEN": "{"}) == 1
    assert restarted.current() == {(STATION, "aqms1", "PM10", "ug/m3"): (0.0, 800.0, "demo-pm")}
    qc = QualityControl(ThresholdSource(None, analyzer_ranges=restarted.current), SeriesState())
    (res,) = qc.evaluate(STATION, [Reading(now, "aqms1", "PM10", 850.0, "ug/m3", "00")], now)
    assert (res.flag, res.check) == (4, "gross_range") and "of profile demo-pm" in res.cause


def test_an_aborted_flush_is_judged_again_the_same_way(station):
    registry, key, kid = station
    prep, _ = preparation(registry)
    now = time.time_ns()
    items = [message(data_topic(STATION), batch(key, kid, 1, now), registry, now)]
    first = prep.prepare(items)
    prep.sequences.abort_flush(first.token)
    again = prep.prepare(items)  # QuestDB was down: the same messages, the same verdicts (kept, not re-run)
    assert again.new == items and again.duplicates == 0
    assert list(again.columns.qc_flag) == list(first.columns.qc_flag)


def test_rows_follow_the_schema():
    assert set(READINGS.symbols) == {
        "station",
        "device",
        "parameter",
        "unit",
        "status",
        "key_id",
        "qc_check",
        "qc_checks",
        "source",
        "file_sha256",
    }
    symbols, fields, _ = ilp_row(BATCHES, 5, station="S", key_id="k", seq=3, received_at=7)
    assert symbols == {"station": "S", "key_id": "k"} and fields["seq"] == 3 and "received_at" in fields
    with pytest.raises(KeyError, match="no column 'sequence'"):
        ilp_row(BATCHES, 5, station="S", sequence=3)


def intake(max_messages: int) -> Intake:
    limits = FlushLimits(interval_s=1.0, max_messages=max_messages, max_bytes=1 << 20, max_readings=10_000,
                         max_pending=5, max_pending_bytes=1 << 20)  # fmt: skip
    return Intake(BrokerAddress("127.0.0.1", 1), "prep-test", None, 5, limits, CollectorMetrics(),
                  admit=lambda item: None, flush_here=lambda: None)  # fmt: skip


def test_in_flight_messages_count_against_memory_and_come_back_in_order():
    held = intake(max_messages=2)
    items = [PendingMessage(0, mid, 1, "t", b"x" * 10, 0) for mid in range(5)]
    for item in items:
        held.hold(item)
    assert held.full()  # five held: the bound
    older, younger = held.take(force=True), held.take(force=True)
    assert [i.mid for i in older] == [0, 1] and [i.mid for i in younger] == [2, 3]
    assert held.full() and held.held() == 5  # in flight still counts
    held.give_back(younger)  # the younger flush fails first, then the older one
    held.give_back(older)
    assert [i.mid for i in held.take(force=True)] == [0, 1]
    again = held.take(force=True)
    assert [i.mid for i in again] == [2, 3]
    held.settled(again)
    assert held.held() == 3 and not held.full()


def test_a_birth_naming_one_range_twice_is_learnt_and_replaced_without_error():
    ranges = AnalyzerRanges()
    twice = ranged_birth(1, time.time_ns(), ((0.0, 800.0), (0.0, 900.0)))  # the later entry wins
    assert ranges.learn(twice) is True
    assert ranges.current() == {(STATION, "aqms1", "PM10", "ug/m3"): (0.0, 900.0, "demo-pm")}
    assert ranges.learn(ranged_birth(2, time.time_ns(), ())) is True and ranges.current() == {}
