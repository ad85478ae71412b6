"""A station with ``live_batch_s: 5`` on the real path (simulator -> agent -> Mosquitto -> collector ->
QuestDB): its live polls arrive five to a batch, and every value served is stored exactly once; beside it
the default (0), one poll a batch. Each prints how long its readings took to reach the collector."""

from __future__ import annotations

import statistics
from collections import defaultdict

import pytest

from edge_agent.live_window import END_SLACK_NS
from supervisor.process import wait_until
from tests.end_to_end.test_end_to_end import assert_matches_truth
from tests.helpers import sql
from tests.station_rig import make_station  # noqa: F401  (fixture)

WINDOW_S = 5
VALUES_PER_POLL = 6  # demo-ambient-air: PM2,5 PM10 SO2 NO2 CO O3


@pytest.mark.slow  # a station polling for ~25 s to fill four windows
@pytest.mark.parametrize("window_s, polls_per_batch", [(0, 1), (WINDOW_S, 5)], ids=["default", "5s"])
def test_a_live_window_sends_its_polls_in_one_batch_and_stores_each_reading_once(
    make_station, window_s, polls_per_batch
):
    station = make_station("demo_air_01.yaml", poll_s=1.0, live_batch_s=window_s)
    station.sim()
    station.collector()
    agent = station.agent()
    wait_until(
        lambda: len(station.served_values()) >= 24 * VALUES_PER_POLL, timeout=60, what="24 polls served", process=agent
    )
    agent.stop(timeout=30)  # graceful: the open window is sealed at once and drained

    served = station.served_values()
    assert station.wait_stored(len(served)) == len(served)
    stored = station.stored()
    assert len({(r[0], r[1], r[2]) for r in stored}) == len(stored), "a reading stored twice"
    assert_matches_truth(stored, served)
    assert sorted(r[:5] for r in stored) == sorted(station.outbox_readings())

    rows = sql(
        station.warehouse.pg_conninfo,
        "SELECT seq, ts::long, received_at::long FROM readings WHERE station = %s AND historical = false",
        (station.id,),
    )
    by_seq: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for seq, ts, received in rows:
        by_seq[seq].append((ts, received))
    live = [by_seq[seq] for seq in sorted(by_seq)]
    polls = [len(batch) / VALUES_PER_POLL for batch in live]
    # The last live batch is what the stop sealed at once; every other holds the polls of one window.
    windows = polls[:-1]
    assert len(windows) >= 3, polls
    assert all(p == int(p) for p in polls), polls  # a window never splits a poll
    assert statistics.median(windows) == polls_per_batch, polls
    assert all(polls_per_batch - 1 <= p <= polls_per_batch + 1 for p in windows), polls
    waits = [(r - t) / 1e9 for b in live[:-1] for t, r in b]
    # From the moment a window closes (its first poll + the window, 50 ms early) to the collector's receipt;
    # without a window, from the poll to the receipt.
    slack = END_SLACK_NS if window_s else 0
    after_end = [(max(r for _, r in b) - (min(t for t, _ in b) + window_s * 10**9 - slack)) / 1e9 for b in live[:-1]]
    print(
        f"\nlive_batch_s={window_s}: polls per live batch {polls}; reading taken -> received by the collector: "
        f"median {statistics.median(waits):.3f} s, max {max(waits):.3f} s; window's end -> received: median "
        f"{statistics.median(after_end) * 1000:.0f} ms, max {max(after_end) * 1000:.0f} ms"
    )
    assert max(after_end) < 2.0, after_end  # sealed when the window closes, not held for a later poll
