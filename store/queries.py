"""Read-side SQL over QuestDB's PostgreSQL wire (psycopg)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg


@dataclass(frozen=True)
class ParameterSummary:
    station: str
    device: str
    parameter: str
    rows: int
    latest_value: float | None
    latest_unit: str
    latest_status: str
    latest_ts: datetime


def parameter_summaries(conninfo: str) -> list[ParameterSummary]:
    """Per station, device and parameter: how many readings, and the latest one."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        counts = {
            (s, d, p): n
            for s, d, p, n in conn.execute(
                "SELECT station, device, parameter, count() FROM readings GROUP BY station, device, parameter"
            )
        }
        latest = conn.execute(
            "SELECT station, device, parameter, value, unit, status, ts FROM readings "
            "LATEST ON ts PARTITION BY station, device, parameter"
        ).fetchall()
    summaries = [
        ParameterSummary(s, d, p, counts.get((s, d, p), 0), v, u or "", st or "", ts) for s, d, p, v, u, st, ts in latest
    ]
    return sorted(summaries, key=lambda x: (x.station, x.device, x.parameter))


def reject_counts(conninfo: str) -> dict[tuple[str, str], int]:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        return {(s or "", r): n for s, r, n in conn.execute("SELECT claimed_station, reason, count() FROM rejects GROUP BY claimed_station, reason")}


@dataclass(frozen=True)
class StationOverview:
    station: str
    state: str  # online / offline / unknown, from the newest session's newest event
    session: int | None
    last_reading: datetime | None
    readings: int
    backlog_readings: int | None  # from the station's own latest status message
    backlog_age_s: float | None
    missing_batches: int  # sequence numbers between the lowest and highest that never arrived
    rejects: int


def station_overview(conninfo: str) -> list[StationOverview]:
    import json

    with psycopg.connect(conninfo, autocommit=True) as conn:
        readings = {s: (n, ts) for s, n, ts in conn.execute("SELECT station, count(), max(ts) FROM readings GROUP BY station")}
        ledger = {
            s: (n, lo, hi)
            for s, n, lo, hi in conn.execute("SELECT station, count_distinct(seq), min(seq), max(seq) FROM batches GROUP BY station")
        }
        rejects = {s: n for s, n in conn.execute("SELECT claimed_station, count() FROM rejects GROUP BY claimed_station")}
        # A late will from an older session must not override a newer birth:
        # order by session first, then by arrival.
        events = {}
        for station, state, session, payload in conn.execute(
            "SELECT station, state, session, payload FROM station_events ORDER BY station, session, ts"
        ):
            events[station] = (state, session, payload)
    overview = []
    for station in sorted(set(readings) | set(ledger) | set(events) | {s for s in rejects if s}):
        count, last = readings.get(station, (0, None))
        state, session, payload = events.get(station, ("unknown", None, None))
        backlog = age = None
        if payload:
            outbox = json.loads(payload).get("outbox") or {}
            if outbox:
                backlog = outbox.get("staged_readings", 0) + outbox.get("unacked_readings", 0)
                age = outbox.get("backlog_age_s")
        distinct, low, high = ledger.get(station, (0, None, None))
        missing = 0 if low is None else (high - low + 1) - distinct
        overview.append(StationOverview(station, state, session, last, count, backlog, age, missing, rejects.get(station, 0)))
    return overview


def recent_readings(conninfo: str, lookback_s: float, slice_s: float = 900.0):
    """(station, device, parameter, ts_ns, value, status, unit) of the last ``lookback_s``, oldest first.

    Read in time slices so a long window never sits in memory at once;
    ts as LONG keeps the nanoseconds the PG wire would round to microseconds.
    """
    import time as _time

    end_us = _time.time_ns() // 1000
    start_us = end_us - int(lookback_s * 1e6)
    step_us = int(slice_s * 1e6)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for low in range(start_us, end_us + step_us, step_us):
            yield from conn.execute(
                "SELECT station, device, parameter, cast(ts AS LONG), value, status, unit FROM readings"
                " WHERE ts >= cast(%s AS TIMESTAMP) AND ts < cast(%s AS TIMESTAMP) ORDER BY ts",
                (low, low + step_us),
            )
