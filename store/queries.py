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
