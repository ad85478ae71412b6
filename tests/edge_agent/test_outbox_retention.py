"""Retention, the byte cap and its policies, lanes, and group commit."""

from __future__ import annotations

import asyncio
import sqlite3
import time

import pytest

from broker_bridge.envelope import Reading, decode_body, open_envelope
from broker_bridge.keys import write_new_key
from edge_agent.group_commit import GroupCommitter
from edge_agent.outbox import BACKLOG, DAY_NS, LIVE, Outbox, OutboxFull, RetentionPolicy


@pytest.fixture
def key(tmp_path):
    return write_new_key(tmp_path / "k.key")


def readings(n, start_ns, value=0.0):
    return [Reading(start_ns + i, "d1", "PM10", value + i, "ug/m3", "00", "x" * 200) for i in range(n)]


def seal_all(box, key, per_batch=50):
    seqs = []
    while (batch := box.seal_next(key, per_batch, historical_after_s=10**9)) is not None:
        seqs.append(batch.seq)
    return seqs


def test_acknowledged_data_is_kept_for_the_retention_period_then_dropped(tmp_path, key):
    box = Outbox(tmp_path / "o.sqlite", "S1", RetentionPolicy(retention_days=60))
    now = time.time_ns()
    box.append(readings(10, now - 61 * DAY_NS))
    box.append(readings(10, now - 59 * DAY_NS))
    old, recent = seal_all(box, key, per_batch=10)
    box.mark_acked([old, recent])
    assert box.enforce_retention(now)["expired"] == 1
    assert [b.seq for b in box.batches_between(1, 10)] == [recent]


def test_unsent_data_is_never_expired_by_age(tmp_path, key):
    box = Outbox(tmp_path / "o.sqlite", "S1", RetentionPolicy(retention_days=60))
    now = time.time_ns()
    box.append(readings(10, now - 90 * DAY_NS))
    seal_all(box, key)
    assert box.enforce_retention(now)["expired"] == 0 and box.counts()["unacked_batches"] == 1


def test_over_the_cap_acknowledged_data_goes_first(tmp_path, key):
    box = Outbox(tmp_path / "o.sqlite", "S1", RetentionPolicy(max_bytes=10**9))
    now = time.time_ns()
    for b in range(40):
        box.append(readings(50, now + b * 100))
    seqs = seal_all(box, key)
    box.mark_acked(seqs[:30])
    full = box.bytes_used()
    box.retention = RetentionPolicy(max_bytes=int(full * 0.6))
    removed = box.enforce_retention(now)
    assert removed["over_cap_acked"] > 0 and removed["over_cap_unsent"] == 0
    assert box.counts()["unacked_batches"] == 10  # every unsent batch is still there
    assert box.bytes_used() <= box.retention.max_bytes


def test_when_unsent_data_alone_fills_the_cap_drop_oldest_is_recorded(tmp_path, key):
    box = Outbox(tmp_path / "o.sqlite", "S1", RetentionPolicy(max_bytes=10**9))
    now = time.time_ns()
    for b in range(40):
        box.append(readings(50, now + b * 100))
    seqs = seal_all(box, key)
    box.retention = RetentionPolicy(max_bytes=int(box.bytes_used() * 0.5), overflow="drop_oldest")
    removed = box.enforce_retention(now)
    assert removed["over_cap_unsent"] > 0
    first_kept = box.unacked(limit=1)[0].seq
    assert first_kept > seqs[0]
    dropped = (
        sqlite3.connect(tmp_path / "o.sqlite")
        .execute("SELECT first_seq, last_seq, readings, reason FROM dropped")
        .fetchall()
    )
    assert dropped[0][0] == seqs[0] and dropped[-1][1] == first_kept - 1
    assert sum(r[2] for r in dropped) == removed["over_cap_unsent"]
    assert box.status()["dropped_readings"] == removed["over_cap_unsent"]


def test_refuse_new_policy_refuses_loudly(tmp_path, key):
    box = Outbox(tmp_path / "o.sqlite", "S1", RetentionPolicy(max_bytes=10**9, overflow="refuse_new"))
    box.append(readings(500, time.time_ns()))
    box.retention = RetentionPolicy(max_bytes=box.bytes_used() // 2, overflow="refuse_new")
    with pytest.raises(OutboxFull):
        box.check_room()
    assert box.enforce_retention()["over_cap_unsent"] == 0  # refuse_new never drops what it holds


def test_lanes_keep_their_own_order_and_flag(tmp_path, key):
    box = Outbox(tmp_path / "o.sqlite", "S1")
    now = time.time_ns()
    box.append(readings(3, now - 10**9, value=0), historical=True)
    box.append(readings(3, now, value=100), historical=False)
    box.append(readings(3, now - 5 * 10**8, value=10), historical=True)
    live = decode_body(open_envelope(box.seal_next(key, 100, 60, lane=LIVE).payload).body)
    backlog = decode_body(open_envelope(box.seal_next(key, 100, 60, lane=BACKLOG).payload).body)
    assert (live.historical, [r.value for r in live.readings]) == (False, [100.0, 101.0, 102.0])
    assert (backlog.historical, [r.value for r in backlog.readings]) == (True, [0.0, 1.0, 2.0, 10.0, 11.0, 12.0])


def test_live_readings_that_waited_too_long_become_history(tmp_path, key):
    box = Outbox(tmp_path / "o.sqlite", "S1")
    box.append(readings(2, time.time_ns() - 120 * 10**9))
    assert box.seal_next(key, 100, historical_after_s=60, lane=LIVE) is None
    assert decode_body(open_envelope(box.seal_next(key, 100, 60, lane=BACKLOG).payload).body).historical


def test_group_commit_commits_many_appends_in_one_transaction(tmp_path):
    box = Outbox(tmp_path / "o.sqlite", "S1")
    committer = GroupCommitter(box, window_s=0.05)

    async def pollers():
        now = time.time_ns()
        await asyncio.gather(*(committer.append(readings(10, now + p * 1000)) for p in range(25)))

    asyncio.run(pollers())
    assert committer.commits == 1 and committer.readings_committed == 250
    assert box.counts()["staged_readings"] == 250  # durable once append returned


def test_during_an_outage_staged_readings_are_dropped_oldest_first_and_recorded(tmp_path, key):
    box = Outbox(tmp_path / "o.sqlite", "S1", RetentionPolicy(max_bytes=10**9))
    now = time.time_ns()
    for b in range(40):
        box.append(readings(50, now + b * 1000, value=b * 50), historical=True)
    box.retention = RetentionPolicy(max_bytes=int(box.bytes_used() * 0.5), overflow="drop_oldest")
    removed = box.enforce_retention(now)
    assert 0 < removed["over_cap_unsent"] < 2000
    batch = decode_body(open_envelope(box.seal_next(key, 10, 60, lane=BACKLOG).payload).body)
    assert batch.readings[0].value == float(removed["over_cap_unsent"])  # the oldest ones went, in order
    assert box.status()["dropped_readings"] == removed["over_cap_unsent"]


def test_only_a_receipt_makes_a_batch_delivered_and_an_overdue_one_waits_longer_each_time(tmp_path):
    import time as _time

    from broker_bridge.envelope import Reading
    from broker_bridge.keys import write_new_key
    from edge_agent.outbox import Outbox, RetentionPolicy

    key = write_new_key(tmp_path / "k.key")
    policy = RetentionPolicy(retention_days=1, require_receipts=True, receipt_timeout_s=10, receipt_timeout_max_s=25)
    box = Outbox(tmp_path / "o.db", "S", policy)
    old = _time.time_ns() - 3 * 86_400 * 10**9
    for i in range(4):
        box.append([Reading(old + i, "d", "PM10", 1.0, "ug/m3", "00")])
        box.seal_next(key, 10, 1e9)
    box.mark_acked([1, 2, 3, 4])
    now = _time.time_ns()
    assert box.receipt_counts(now) == {"receipted_batches": 0, "unreceipted_batches": 4, "overdue_batches": 0}
    assert box.enforce_retention()["expired"] == 0  # PUBACKed is not delivered
    assert [b.seq for b in box.overdue(10, now + 11 * 10**9)] == [1, 2, 3, 4]
    box.resent_for_receipt([1], now + 11 * 10**9)
    assert [b.seq for b in box.overdue(10, now + 30 * 10**9)] == [2, 3, 4]  # 1 waits 20 s more now
    assert [b.seq for b in box.overdue(10, now + 32 * 10**9)] == [1, 2, 3, 4]
    assert box.mark_receipted(2, [(4, 4)]) == 3
    assert box.receipt_counts(now)["receipted_batches"] == 3
    assert box.enforce_retention()["expired"] == 3
    assert [b.seq for b in box.batches_between(1, 4)] == [3]
    box.close()
