"""The outbox: durable staging, sealing into signed batches, acks, and a sequence that never goes back."""

import time

import pytest

from broker_bridge.envelope import Reading, decode_body, open_envelope, verify
from broker_bridge.keys import write_new_key
from edge_agent.outbox import Outbox


def readings(n, start_ns=None, device="d1"):
    start_ns = start_ns or time.time_ns()
    return [Reading(start_ns + i, device, "PM10", float(i), "ug/m3", "00", "") for i in range(n)]


@pytest.fixture
def key(tmp_path):
    return write_new_key(tmp_path / "keys" / "S1.key")


def test_sealing_moves_staged_readings_into_one_signed_batch(tmp_path, key):
    box = Outbox(tmp_path / "o.sqlite", "S1")
    box.append(readings(5))
    batch = box.seal_next(key, max_readings=3, historical_after_s=60)
    envelope = open_envelope(batch.payload)
    verify(envelope, key.public_key)
    body = decode_body(envelope.body)
    assert (body.station, body.seq, len(body.readings), body.historical) == ("S1", 1, 3, False)
    assert [r.value for r in body.readings] == [0.0, 1.0, 2.0]
    assert box.counts()["staged_readings"] == 2
    second = decode_body(open_envelope(box.seal_next(key, 3, 60).payload).body)
    assert second.seq == 2 and [r.value for r in second.readings] == [3.0, 4.0]
    assert box.seal_next(key, 3, 60) is None


def test_sequence_and_unacked_batches_survive_reopen(tmp_path, key):
    path = tmp_path / "o.sqlite"
    box = Outbox(path, "S1")
    box.append(readings(4))
    first = box.seal_next(key, 2, 60)
    second = box.seal_next(key, 2, 60)
    box.mark_acked([first.seq])
    box.close()
    box = Outbox(path, "S1")
    assert [b.seq for b in box.unacked(limit=10)] == [second.seq]
    assert box.unacked(limit=10)[0].payload == second.payload  # identical bytes are re-sent
    box.append(readings(1))
    assert box.seal_next(key, 2, 60).seq == 3


def test_old_readings_are_sealed_as_historical(tmp_path, key):
    box = Outbox(tmp_path / "o.sqlite", "S1")
    box.append(readings(1, start_ns=time.time_ns() - 120 * 10**9))
    assert decode_body(open_envelope(box.seal_next(key, 10, 60).payload).body).historical is True


def test_an_outbox_belongs_to_one_station(tmp_path):
    Outbox(tmp_path / "o.sqlite", "S1").close()
    with pytest.raises(ValueError, match="belongs to station S1"):
        Outbox(tmp_path / "o.sqlite", "S2")
