"""Live batches (station file ``live_batch_s``): the polls of a window sealed into one batch when it
closes, early when another reading would not fit, one poll a batch with 0, and nothing lost to a kill
inside the window. A real SQLite outbox throughout; the clock is the test's, to step it poll by poll."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from broker_bridge.envelope import (
    BATCH_FRAMING_BYTES,
    MAX_ENVELOPE_BYTES,
    READING_FRAMING_BYTES,
    BatchBody,
    Reading,
    decode_body,
    open_envelope,
    seal,
)
from broker_bridge.keys import write_new_key
from edge_agent.live_window import END_SLACK_NS, LiveWindow
from edge_agent.outbox import Outbox
from supervisor.process import wait_until

T0 = 1_800_000_000 * 10**9
S = 10**9
PARAMETERS = ("PM2,5", "PM10", "SO2", "NO2", "CO", "O3", "NOx", "O2", "Temp", "Flow", "H2S", "NH3", "HCl")


class Clock:
    """The wall clock and the monotonic one (both ns), moved together by the test."""

    def __init__(self) -> None:
        self.ns = T0
        self.stepped_ns = 0  # what NTP stepped the wall clock by (the monotonic one never steps)

    def wall(self) -> int:
        return self.ns + self.stepped_ns

    def monotonic_ns(self) -> int:
        return self.ns - T0 + 10**12

    def advance(self, seconds: float) -> None:
        self.ns += round(seconds * S)


def poll(ts_ns: int, n: int = len(PARAMETERS), cause: str = "") -> list[Reading]:
    return [
        Reading(ts_ns + i * 1000, "aqms1", PARAMETERS[i % len(PARAMETERS)] + ("" if i < 13 else f"_{i}"), 1.0 + i,
                "ug/m3", "00", cause)
        for i in range(n)
    ]  # fmt: skip


def batches(box: Outbox) -> list[BatchBody]:
    return [decode_body(open_envelope(p).body) for p in (b.payload for b in box.unacked(limit=10_000))]


@pytest.fixture
def key(tmp_path):
    return write_new_key(tmp_path / "keys" / "S1.key")


def pump(window: LiveWindow, key) -> int:
    """What the publisher's pump does for the live lane: seal while a batch is due."""
    sealed = 0
    while window.seal_next(key, historical_after_s=60 + 5) is not None:
        sealed += 1
    return sealed


def run_polls(box, window, key, clock, seconds: float, every_s: float = 1.0, per_poll: int = 13) -> list[int]:
    """Polls every ``every_s`` for ``seconds``, the publisher pumping every 50 ms; returns each poll's time."""
    taken = []
    steps_per_poll = round(every_s / 0.05)
    for step in range(round(seconds / 0.05)):
        if step % steps_per_poll == 0:
            taken.append(clock.ns)
            window.poll_started()
            box.append(poll(clock.ns, per_poll))
            window.poll_done(live=True)
        pump(window, key)
        clock.advance(0.05)
    return taken


def test_the_polls_of_a_window_are_sealed_into_one_batch_when_it_closes(tmp_path, key):
    box, clock = Outbox(tmp_path / "o.sqlite", "S1"), Clock()
    window = LiveWindow(box, 5.0, 1000, wall=clock.wall, monotonic_ns=clock.monotonic_ns)
    taken = run_polls(box, window, key, clock, seconds=12.0)  # polls at 0, 1, ..., 11 s
    sealed = batches(box)
    # Two windows have closed (at 5 s and 10 s); polls 10 and 11 wait in the third, staged.
    assert [len(b.readings) for b in sealed] == [65, 65]
    assert [sorted({r.ts_ns // S * S for r in b.readings}) for b in sealed] == [taken[0:5], taken[5:10]]
    assert [b.seq for b in sealed] == [1, 2] and not any(b.historical for b in sealed)
    assert box.counts()["staged_readings"] == 26
    # A batch is sealed when its window closes (50 ms before the 5 s: the next poll's jitter), not at the next poll.
    clock.ns = taken[10] + 5 * S - END_SLACK_NS - 1
    assert pump(window, key) == 0 and box.counts()["staged_readings"] == 26
    clock.ns = taken[10] + 5 * S - END_SLACK_NS
    assert pump(window, key) == 1
    assert len(batches(box)[-1].readings) == 26 and box.counts()["staged_readings"] == 0
    assert window.early_seals == 0


@pytest.mark.parametrize(
    "offset_ns, reported",
    [
        (lambda k: (k * 7919 % 7 - 3) * 1_000_000, False),  # the timers' jitter: 0 to 3 ms off, early or late
        (lambda k: (k * 7919 % 4) * 100_000_000, True),  # a loaded machine: 0 to 300 ms late, and the agent says so
    ],
    ids=["jitter", "late_under_load"],
)
def test_polls_off_their_second_still_make_windows_of_five(tmp_path, key, offset_ns, reported):
    """Polls count from their scheduled moment, so jitter or load never changes how many a window takes."""
    box, clock = Outbox(tmp_path / "o.sqlite", "S1"), Clock()
    window = LiveWindow(box, 5.0, 1000, wall=clock.wall, monotonic_ns=clock.monotonic_ns)
    for k in range(21):
        off = offset_ns(k)
        clock.ns = T0 + k * S + off
        window.poll_started(late_ns=off if reported else 0)  # jitter is not reported: it is not lateness
        box.append(poll(clock.ns))
        window.poll_done(live=True)
        pump(window, key)
        clock.advance(0.5)
        pump(window, key)
    assert [len(b.readings) // 13 for b in batches(box)] == [5, 5, 5, 5]


def test_a_window_that_would_outgrow_a_batch_is_sealed_early(tmp_path, key):
    box, clock = Outbox(tmp_path / "o.sqlite", "S1"), Clock()
    window = LiveWindow(box, 60.0, 50, wall=clock.wall, monotonic_ns=clock.monotonic_ns)
    run_polls(box, window, key, clock, seconds=3.1)  # 4 polls of 13: the 4th brings 52 >= 50
    sealed = batches(box)
    assert [len(b.readings) for b in sealed] == [50]
    assert window.early_seals == 1
    # The 2 readings over the limit stay in the window, which keeps its end: 60 s after its first poll.
    assert box.counts()["staged_readings"] == 2
    clock.ns = T0 + 60 * S - END_SLACK_NS - 1
    assert pump(window, key) == 0
    clock.ns = T0 + 60 * S - END_SLACK_NS
    assert pump(window, key) == 1 and len(batches(box)[-1].readings) == 2


def test_a_window_that_would_outgrow_the_envelope_bytes_is_sealed_early_within_them(tmp_path, key):
    box, clock = Outbox(tmp_path / "o.sqlite", "S1"), Clock()
    # 10,000 readings a batch is the envelope's own limit; long causes make its 1 MiB the limit that bites.
    window = LiveWindow(box, 300.0, 10_000, wall=clock.wall, monotonic_ns=clock.monotonic_ns)
    for _ in range(3):  # 3,000 readings of ~300 bytes: under 1 MiB, the window stays open
        window.poll_started()
        box.append(poll(clock.ns, 1000, cause="x" * 250))
        window.poll_done(live=True)
        assert pump(window, key) == 0
        clock.advance(1.0)
    window.poll_started()
    box.append(poll(clock.ns, 1000, cause="x" * 250))  # the 4th poll brings it over
    window.poll_done(live=True)
    assert pump(window, key) == 1
    assert window.early_seals == 1
    payload = box.unacked(limit=100)[0].payload
    assert MAX_ENVELOPE_BYTES * 0.8 < len(payload) <= MAX_ENVELOPE_BYTES
    # What did not fit waits for the window it opened.
    assert len(decode_body(open_envelope(payload).body).readings) + box.counts()["staged_readings"] == 4000


def test_the_size_bound_the_window_reckons_with_holds_for_the_largest_readings(key):
    """READING_FRAMING_BYTES and BATCH_FRAMING_BYTES bound a sealed batch from its readings' text."""
    wide = "\U0001f600" * 64  # 64 characters of 4 UTF-8 bytes: the longest name the contract allows
    readings = tuple(
        Reading(2**62 + i, wide[:-1] + str(i % 10), wide, -1.5e300, wide, "02", "\U0001f600" * 256) for i in range(100)
    )
    payload = seal(BatchBody("S" * 64, 2**63 - 1, 2**62, readings, historical=True), key.key_id, key.private_key)
    text = sum(
        READING_FRAMING_BYTES + sum(len(s.encode()) for s in (r.device, r.parameter, r.unit, r.status, r.cause))
        for r in readings
    )
    assert len(payload) <= text + BATCH_FRAMING_BYTES


def test_a_poll_under_way_at_the_windows_end_goes_in_whole(tmp_path, key):
    box, clock = Outbox(tmp_path / "o.sqlite", "S1"), Clock()
    window = LiveWindow(box, 5.0, 1000, wall=clock.wall, monotonic_ns=clock.monotonic_ns)
    run_polls(box, window, key, clock, seconds=4.0)  # polls at 0..3 s
    window.poll_started()  # poll 4 begins at 4 s and takes 1.5 s: a slow analyzer on a shared line
    started = clock.ns
    clock.advance(1.2)
    assert pump(window, key) == 0  # 5.2 s: the window has ended, but its last poll is not in yet
    clock.advance(0.3)
    # Devices polled side by side stage device by device: the later-stamped device first.
    box.append(poll(started + round(1.4 * S), 6) + poll(started + round(0.1 * S), 7))
    window.poll_done(live=True)
    assert pump(window, key) == 1
    assert len(batches(box)[0].readings) == 5 * 13 and box.counts()["staged_readings"] == 0


def test_no_window_seals_every_poll_as_it_comes(tmp_path, key):
    box, clock = Outbox(tmp_path / "o.sqlite", "S1"), Clock()
    window = LiveWindow(box, 0.0, 1000, wall=clock.wall, monotonic_ns=clock.monotonic_ns)
    taken = run_polls(box, window, key, clock, seconds=6.0)
    sealed = batches(box)
    assert [len(b.readings) for b in sealed] == [13] * 6
    assert [{r.ts_ns // S * S for r in b.readings} for b in sealed] == [{t} for t in taken]
    assert box.counts()["staged_readings"] == 0


def test_a_clock_stepped_back_does_not_hold_the_window(tmp_path, key):
    box, clock = Outbox(tmp_path / "o.sqlite", "S1"), Clock()
    window = LiveWindow(box, 5.0, 1000, wall=clock.wall, monotonic_ns=clock.monotonic_ns)
    run_polls(box, window, key, clock, seconds=2.0)
    clock.stepped_ns = -3600 * S  # NTP stepped the clock back an hour: the window's end is an hour and 5 s away
    clock.advance(3.0)  # 5 s after the window opened, by the monotonic clock
    assert pump(window, key) == 1
    assert len(batches(box)[0].readings) == 26


def test_stopping_seals_the_open_window_at_once(tmp_path, key):
    box, clock = Outbox(tmp_path / "o.sqlite", "S1"), Clock()
    window = LiveWindow(box, 300.0, 1000, wall=clock.wall, monotonic_ns=clock.monotonic_ns)
    run_polls(box, window, key, clock, seconds=3.0)
    assert batches(box) == []
    window.flush()
    assert pump(window, key) == 1 and len(batches(box)[0].readings) == 39


AGENT = textwrap.dedent(
    """
    import sys, time
    from broker_bridge.envelope import Reading
    from broker_bridge.keys import load_signing_key
    from edge_agent.live_window import LiveWindow
    from edge_agent.outbox import Outbox

    box = Outbox(sys.argv[1], "S1")
    key = load_signing_key(sys.argv[2])
    window = LiveWindow(box, 2.0, 1000)
    n = 0
    while True:
        window.poll_started()
        ts = time.time_ns()
        box.append([Reading(ts, "aqms1", p, float(n), "ug/m3", "00", "") for p in ("PM10", "SO2", "NO2")])
        window.poll_done(live=True)
        print("poll", n, ts, flush=True)  # after the commit: this poll is durable
        n += 1
        for _ in range(4):
            while (batch := window.seal_next(key, 62.0)) is not None:
                print("sealed", batch.seq, batch.readings, flush=True)
            time.sleep(0.05)
    """
)


def test_a_kill_inside_the_window_loses_no_reading(tmp_path, key):
    path, key_file = tmp_path / "o.sqlite", tmp_path / "keys" / "S1.key"
    log = tmp_path / "agent.out"
    repo = Path(__file__).resolve().parents[2]

    def lines(kind: str) -> list[list[int]]:
        return [list(map(int, ln.split()[1:])) for ln in log.read_text().splitlines() if ln.startswith(kind)]

    with log.open("w") as out:
        agent = subprocess.Popen(
            [sys.executable, "-c", AGENT, str(path), str(key_file)],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(repo)},
        )  # fmt: skip
    try:
        # Polls every ~0.2 s, windows of 2 s: SIGKILL two polls into the second window, 1.6 s before its end.
        wait_until(lambda: lines("sealed"), timeout=30, what="the first window sealed")
        polls_then = len(lines("poll"))
        wait_until(lambda: len(lines("poll")) >= polls_then + 2, timeout=10, what="two polls into the next window")
    finally:
        agent.send_signal(signal.SIGKILL)
        agent.wait(10)
    assert len(lines("sealed")) == 1, "the kill was meant to land inside the second window"
    reported = [tuple(poll) for poll in lines("poll")]
    box = Outbox(path, "S1")
    assert len(box.unacked(limit=10_000)) == 1 and box.counts()["staged_readings"] >= 3 * 2
    # The restarted agent finds the window it was killed in and seals it when the window's end has passed.
    clock = Clock()
    clock.ns = max(ts for _, ts in reported) + 5 * S
    pump(LiveWindow(box, 2.0, 1000, wall=clock.wall, monotonic_ns=clock.monotonic_ns), key)
    assert box.counts()["staged_readings"] == 0
    got = [(r.ts_ns, r.parameter, r.value) for b in batches(box) for r in b.readings]
    assert len(got) == len(set(got)), "a reading sealed twice"
    wanted = {(ts, p, float(n)) for n, ts in reported for p in ("PM10", "SO2", "NO2")}
    assert wanted <= set(got), f"lost: {sorted(wanted - set(got))[:5]}"
    # At most the poll whose commit the kill outran its print for is there beyond what was reported.
    assert len(got) - len(wanted) in (0, 3)
