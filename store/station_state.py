"""A station's state as a reader sees it: online / offline / never (its newest reading against its logging
interval and a grace period), the connection state it last announced (``station_events``: the same
newest-session rule as ``quantrac status``), and how complete its data were over the last hour and day
(``hourly_means``, as far as the aggregator has got).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only in annotations: importing DEFAULT_GRACE_S (the CLI) must not load psycopg
    import psycopg

HOUR_NS = 3_600_000_000_000
# An agent batches and may hold readings in its outbox for a while: a station is offline only when its newest
# reading is older than its largest logging interval plus this.
DEFAULT_GRACE_S = 900.0

ONLINE, OFFLINE, NEVER = "online", "offline", "never"


def online_state(last_reading_ns: int | None, intervals: Mapping[str, float], now_ns: int, grace_s: float) -> str:
    """``never`` without any stored reading; ``online`` while the newest reading is at most the station's
    largest logging interval (none declared: 0) plus ``grace_s`` old; ``offline`` after that."""
    if last_reading_ns is None:
        return NEVER
    allowed_s = max(intervals.values(), default=0.0) + grace_s
    return ONLINE if now_ns - last_reading_ns <= allowed_s * 1e9 else OFFLINE


def connection_states(conn: psycopg.Connection) -> dict[str, tuple[str, int | None, str | None]]:
    """Station -> (state, session, payload) of its newest session's newest event (online / offline)."""
    # A late will from an older session must not override a newer birth: order by session first, then by arrival.
    events = {}
    for station, state, session, payload in conn.execute(
        "SELECT station, state, session, payload FROM station_events ORDER BY station, session, ts"
    ):
        events[station] = (state, session, payload)
    return events


@dataclass(frozen=True)
class Completeness:
    expected: int  # readings the station should have logged (its intervals; else what the means expected)
    observed: int  # valid readings that went into the hourly means

    @property
    def percent(self) -> float | None:
        return None if not self.expected else round(100.0 * self.observed / self.expected, 2)


@dataclass(frozen=True)
class Availability:
    through_ns: int  # the end of the last hour the aggregator has written (for any station)
    last_hour: Completeness
    last_day: Completeness  # the 24 hours ending at through_ns
    calibrating: int  # readings with status 01 in the last day
    device_error: int  # status 02
    qc_fail: int  # status 00 failed by the controls (flag 4 or 9)


def availability(conn: psycopg.Connection, intervals: Mapping[str, Mapping[str, float]]) -> dict[str, Availability]:
    """Per station with hourly means in the last day (or with intervals, then with zeros): its completeness.

    ``intervals``: station -> parameter -> logging interval (s), the registry's (station_metadata). A station
    with intervals is expected to log 3600/interval readings an hour of each, whether or not an hour has a
    mean (a silent hour has none); one without falls back to what its means expected."""
    newest = conn.execute("SELECT max(ts)::long FROM hourly_means").fetchone()  # no row at all on an empty table
    through = newest[0] if newest else None
    if through is None:
        return {}
    sums = {
        station: rest
        for station, *rest in conn.execute(
            "SELECT station,"
            " sum(CASE WHEN ts = cast(%s AS TIMESTAMP_NS) THEN n_valid ELSE 0 END),"
            " sum(CASE WHEN ts = cast(%s AS TIMESTAMP_NS) THEN n_expected ELSE 0 END),"
            " sum(n_valid), sum(n_expected), sum(n_calibrating), sum(n_device_error), sum(n_qc_fail)"
            " FROM hourly_means WHERE ts > cast(%s AS TIMESTAMP_NS) AND ts <= cast(%s AS TIMESTAMP_NS)"
            " GROUP BY station",
            (through, through, through - 24 * HOUR_NS, through),
        )
    }
    out = {}
    for station in set(sums) | {s for s, iv in intervals.items() if iv}:
        hour_valid, hour_expected, day_valid, day_expected, calibrating, device_error, qc_fail = (
            int(x or 0) for x in sums.get(station, (0,) * 7)
        )
        declared = intervals.get(station) or {}
        if declared:
            hour_expected = round(sum(3600.0 / s for s in declared.values() if s))
            day_expected = 24 * hour_expected
        out[station] = Availability(
            through,
            Completeness(hour_expected, hour_valid),
            Completeness(day_expected, day_valid),
            calibrating,
            device_error,
            qc_fail,
        )
    return out
