"""collector.qc seeding from the real QuestDB: the query the collector runs at start
(store.queries.recent_readings) reads back
exactly what the history needs (nanosecond times included), and a collector restarted from it
flags the next readings as an uninterrupted one does."""

from __future__ import annotations

import time

from broker_bridge.envelope import Reading
from store.ilp_writer import ReadingColumns, WarehouseWriter
from store.queries import recent_readings
from tests.collector.qc.test_qc_checks import MIN, T0, make_qc
from tests.collector.qc.test_qc_state import STREAM_THRESHOLDS, stream
from tests.helpers import unique_station, wait_for_count


def test_seeding_from_questdb_reproduces_the_uninterrupted_verdicts(warehouse, tmp_path):
    stations = (unique_station("QC_A"), unique_station("QC_B"))
    split = 90
    now = time.time_ns()
    # Minute `split` of the stream is "now"; a few odd nanoseconds prove the times survive exactly.
    shift = now - split * MIN - T0 + 123_457
    cycles = [
        [Reading(r.ts_ns + shift, r.device, r.parameter, r.value, r.unit, r.status, r.cause) for r in c]
        for c in stream(stations=stations, minutes=150)
    ]

    def station_of(i: int) -> str:
        return stations[i // 2]  # stream() lists both devices of the first station, then the second's

    def run(qc, part) -> dict:
        out = {}
        for cycle in part:
            received = cycle[0].ts_ns + 10**9
            msgs = [(stations[0], cycle[:2], received), (stations[1], cycle[2:], received)]
            for (st, rs, _), res in zip(msgs, qc.evaluate_many(msgs)):
                out.update({(st, r.device, r.ts_ns): q for r, q in zip(rs, res)})
        return out

    uninterrupted = run(make_qc(tmp_path, STREAM_THRESHOLDS), cycles)

    writer = WarehouseWriter(warehouse.ilp_conf)
    try:
        rows = [(station_of(i), r) for cycle in cycles[:split] for i, r in enumerate(cycle)]
        n = len(rows)
        columns = ReadingColumns(
            [st for st, _ in rows],
            [1] * n,
            [False] * n,
            ["test"] * n,
            [now] * n,
            *(list(c) for c in zip(*(r.as_wire() for _, r in rows))),
        )
        assert writer.write_reading_columns(columns) == n
    finally:
        writer.close()
    in_list = ", ".join(f"'{s}'" for s in stations)
    wait_for_count(warehouse.pg_conninfo, f"SELECT count() FROM readings WHERE station IN ({in_list})", len(rows))

    restarted = make_qc(tmp_path, STREAM_THRESHOLDS)
    stored = [row for row in recent_readings(warehouse.pg_conninfo, split * 60 + 600) if row[0] in stations]
    assert len(stored) == len(rows)
    written = {(st, r.device, r.ts_ns): r for st, r in rows}
    for st, dev, par, ts_ns, value, status, unit in stored:
        r = written[(st, dev, ts_ns)]  # exact nanoseconds: a redelivery must find its kept point
        assert (par, value, status, unit) == (r.parameter, r.value, r.status, r.unit)
    assert restarted.seed(stored) == len(rows)
    recent = [row for row in recent_readings(warehouse.pg_conninfo, 30 * 60) if row[0] in stations]
    assert 0 < len(recent) < len(rows)
    assert min(row[3] for row in recent) >= time.time_ns() - 31 * MIN  # the look-back really limits the read

    after = run(restarted, cycles[split:])
    assert after == {k: v for k, v in uninterrupted.items() if k in after}
    assert {q.check for q in after.values()} >= {"spike", "flat_line"}  # the comparison covers windowed verdicts
