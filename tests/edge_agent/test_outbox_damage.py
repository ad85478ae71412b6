"""A damaged outbox never stops the agent: what is cut is measured and reported, what is readable is kept."""

from __future__ import annotations

import os
import shutil
import sqlite3
import time

import pytest

from broker_bridge.envelope import Reading, decode_body, open_envelope
from broker_bridge.keys import write_new_key
from edge_agent.outbox import SEQ_JUMP_AFTER_RECOVERY, Outbox
from edge_agent.wal_check import inspect_wal


@pytest.fixture
def key(tmp_path):
    return write_new_key(tmp_path / "k.key")


def fill(path, key, batches=300, per_batch=20):
    box = Outbox(path, "S1")
    start = time.time_ns()
    for b in range(batches):
        box.append(
            [
                Reading(start + b * 1000 + i, "d1", "NO2", float(b * per_batch + i), "ug/m3", "00", "")
                for i in range(per_batch)
            ]
        )
        box.seal_next(key, per_batch, historical_after_s=3600)
    box.mark_acked(range(1, batches // 2))
    box.close()  # checkpoints: everything is in the main file


def kept_seqs(box):
    return [b.seq for b in box.batches_between(1, 10**9)]


def original_payloads(path):
    with sqlite3.connect(path) as db:
        return dict(db.execute("SELECT seq, payload FROM batches"))


def test_a_truncated_file_is_salvaged_and_everything_before_the_damage_is_kept(tmp_path, key):
    path = tmp_path / "o.sqlite"
    fill(path, key)
    original = original_payloads(path)
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(int(size * 0.6))
    box = Outbox(path, "S1")  # must not raise
    assert box.recovery.salvaged_from and os.path.exists(box.recovery.salvaged_from)
    seqs = kept_seqs(box)
    # Rows sit on pages in allocation order, not sequence order (freed staging
    # pages are reused), so the cut removes the rows on the lost pages only.
    assert 0.45 * 300 <= len(seqs) < 300
    for batch in box.batches_between(1, 300):
        assert batch.payload == original[batch.seq]  # kept rows are the exact signed bytes
        assert decode_body(open_envelope(batch.payload).body).seq == batch.seq
    recorded = sqlite3.connect(path).execute("SELECT detail FROM recoveries").fetchall()
    assert len(recorded) == 1 and f"batches_kept={len(seqs)}" in recorded[0][0]
    assert box.status()["recoveries"] == 1
    # The sequence never goes back: meta survived in the first pages, so it continues after 300.
    box.append([Reading(time.time_ns(), "d1", "NO2", 1.0, "ug/m3", "00", "")])
    assert box.seal_next(key, 10, 3600).seq == 301


def test_garbled_pages_cost_only_the_rows_on_them(tmp_path, key):
    path = tmp_path / "o.sqlite"
    fill(path, key)
    shutil.copy(path, path.with_name("pristine.sqlite"))
    page = 4096
    with open(path, "r+b") as f:
        data = bytearray(f.read())
        middle = (len(data) // page // 2) * page
        data[middle : middle + page] = os.urandom(page)
        f.seek(0)
        f.write(data)
    original = original_payloads(path.with_name("pristine.sqlite"))
    box = Outbox(path, "S1")
    seqs = kept_seqs(box)
    assert box.recovery.salvaged_from
    assert 250 <= len(seqs) < 300, f"one garbled page should cost a few batches, kept {len(seqs)}"
    assert all(b.payload == original[b.seq] for b in box.batches_between(1, 300))


def test_a_header_garbled_beyond_reading_still_lets_the_agent_start_with_a_jumped_sequence(tmp_path, key):
    path = tmp_path / "o.sqlite"
    fill(path, key, batches=10)
    with open(path, "r+b") as f:
        f.write(os.urandom(100))  # the SQLite header and more
    box = Outbox(path, "S1")
    assert box.recovery.salvaged_from and box.recovery.errors
    box.append([Reading(time.time_ns(), "d1", "NO2", 1.0, "ug/m3", "00", "")])
    assert box.seal_next(key, 10, 3600).seq > SEQ_JUMP_AFTER_RECOVERY  # never reuses a number the collector saw


def test_a_torn_wal_tail_is_measured_reported_and_committed_data_kept(tmp_path, key):
    path = tmp_path / "o.sqlite"
    box = Outbox(path, "S1")
    start = time.time_ns()
    for b in range(30):
        box.append([Reading(start + b, "d1", "CO", float(b), "ug/m3", "00", "")])
    # Keep the WAL as a crash would leave it: copy it while the connection is still open.
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    shutil.copy(path, crashed / "o.sqlite")
    wal = path.with_name("o.sqlite-wal").read_bytes()
    box.close()
    torn = wal[: len(wal) - 1500]  # the last frame only half written
    (crashed / "o.sqlite-wal").write_bytes(torn)
    report = inspect_wal(crashed / "o.sqlite-wal")
    assert report.cut and report.cut_bytes > 0 and "torn" in report.reason
    recovered = Outbox(crashed / "o.sqlite", "S1")
    assert recovered.recovery.wal_cut_bytes == report.cut_bytes
    assert recovered.counts()["staged_readings"] == 29  # every append but the torn one
    assert "torn" in sqlite3.connect(crashed / "o.sqlite").execute("SELECT detail FROM recoveries").fetchone()[0]


def test_an_intact_wal_reports_nothing(tmp_path, key):
    path = tmp_path / "o.sqlite"
    box = Outbox(path, "S1")
    box.append([Reading(time.time_ns(), "d1", "CO", 1.0, "ug/m3", "00", "")])
    report = inspect_wal(path.with_name("o.sqlite-wal"))
    box.close()
    assert report is not None and not report.cut and report.committed_frames > 0
