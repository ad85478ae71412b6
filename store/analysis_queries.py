"""The SQL of the warehouse's computed tables (analysis/): what the aggregator reads and how.

Readings are aggregated inside QuestDB (one GROUP BY per hour range, counts and sums per admission
class), so the aggregator moves per-series rows, not readings. Times are UTC nanoseconds; hours are
labelled by their END and hold the readings of [end - 1 h, end).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg

from store.errors import WarehouseUnavailable
from store.queries import connect

HOUR_NS = 3_600_000_000_000
DAY_NS = 24 * HOUR_NS
#: Asia/Ho_Chi_Minh is UTC+7 all year (no daylight saving): the VN_AQI day of an hour END ``e`` is the
#: local date of ``e - 1 ns`` (the hour ending 24:00 local closes the day), i.e. (e + 7 h - 1) // 24 h.
_LOCAL_OFFSET_NS = 7 * HOUR_NS
_EPOCH = dt.date(1970, 1, 1)

Conn = str | psycopg.Connection  # a conninfo (a connection per call) or an open connection to reuse


@contextmanager
def _connection(conn: Conn) -> Iterator[psycopg.Connection]:
    if isinstance(conn, str):
        with connect(conn) as opened:
            yield opened
    else:
        yield conn


# Admission classes of a reading: status 00 with a value, by its QC flag (NULL: no control ran = 2).
_OK = "status = '00' AND NOT no_value"
_CLASSES = {
    "pass": f"{_OK} AND qc_flag = 1",
    "not_evaluated": f"{_OK} AND (qc_flag IS NULL OR qc_flag = 2)",
    "suspect": f"{_OK} AND qc_flag = 3",
}


@dataclass(frozen=True, slots=True)
class ClassStats:
    """Readings of one admission class in an hour: count, sum, min, max of their values."""

    n: int
    total: float
    low: float | None
    high: float | None


@dataclass(frozen=True, slots=True)
class HourAggregate:
    station: str
    device: str
    parameter: str
    unit: str
    hour_end: int
    n_readings: int
    n_calibrating: int
    n_device_error: int
    n_qc_fail: int
    classes: dict[str, ClassStats]


def _class_columns() -> str:
    parts = []
    for cond in _CLASSES.values():
        parts += [
            f"sum(CASE WHEN {cond} THEN n ELSE 0 END)",
            f"sum(CASE WHEN {cond} THEN total END)",
            f"min(CASE WHEN {cond} THEN low END)",
            f"max(CASE WHEN {cond} THEN high END)",
        ]
    return ", ".join(parts)


# Two steps: the inner GROUP BY only counts and sums per (hour, status, flag), which QuestDB does without a
# CASE per row; the outer one splits those few rows into the admission classes. Same rows as one GROUP BY
# with 16 CASE aggregates, in half its time (a month of one station with 30 parameters: 0.32 s against
# 0.72 s).
_HOURLY_SQL = (
    "SELECT station, device, parameter, unit, hour_start::long, sum(n),"
    " sum(CASE WHEN status = '01' THEN n ELSE 0 END), sum(CASE WHEN status = '02' THEN n ELSE 0 END),"
    " sum(CASE WHEN status = '00' AND (no_value OR qc_flag IN (4, 9)) THEN n ELSE 0 END), "
    + _class_columns()
    + " FROM (SELECT station, device, parameter, unit, timestamp_floor('h', ts) AS hour_start, status, qc_flag,"
    " value IS NULL AS no_value, count() AS n, sum(value) AS total, min(value) AS low, max(value) AS high"
    " FROM readings WHERE station IN ({stations}) AND ts >= cast(%s AS TIMESTAMP_NS)"
    " AND ts < cast(%s AS TIMESTAMP_NS)) GROUP BY 1, 2, 3, 4, 5"
)


#: The names of ``hour_aggregate_rows``' columns, in order (after the 9 counts: n, sum, min, max per class).
HOUR_ROW_COLUMNS = (
    "station", "device", "parameter", "unit", "hour_start", "n_readings", "n_calibrating", "n_device_error",
    "n_qc_fail", *(f"{c}_{x}" for c in _CLASSES for x in ("n", "sum", "min", "max")),
)  # fmt: skip
#: The admission classes in the order of their columns.
CLASS_NAMES = tuple(_CLASSES)


def hour_aggregate_rows(conn: Conn, stations: Sequence[str], first_end: int, last_end: int) -> list[tuple]:
    """The raw rows behind ``hour_aggregates`` (columns ``HOUR_ROW_COLUMNS``; the hour by its START), for
    callers turning many hours into columns without an object per row. One query."""
    sql = _HOURLY_SQL.format(stations=", ".join(["%s"] * len(stations)))
    with _connection(conn) as c:
        return c.execute(sql, (*stations, first_end - HOUR_NS, last_end)).fetchall()


def hour_aggregates(conninfo: Conn, stations: Sequence[str], first_end: int, last_end: int) -> list[HourAggregate]:
    """Per (station, device, parameter, unit, hour) of the hours ending first_end..last_end: the counts
    by status and QC class. One query, whatever the number of stations."""
    rows = hour_aggregate_rows(conninfo, stations, first_end, last_end)
    out = []
    for row in rows:
        station, device, parameter, unit, start, n, cal, err, fail, *cls = row
        classes = {
            name: ClassStats(int(cls[4 * i] or 0), float(cls[4 * i + 1] or 0.0), cls[4 * i + 2], cls[4 * i + 3])
            for i, name in enumerate(_CLASSES)
        }
        out.append(
            HourAggregate(
                station, device, parameter, unit or "", start + HOUR_NS, n, cal or 0, err or 0, fail or 0, classes
            )
        )
    return out


@dataclass(frozen=True, slots=True)
class StoredMean:
    ts: int  # period end
    station: str
    device: str
    parameter: str
    unit: str
    mean: float | None
    valid: bool
    worst_flag: int | None


def stored_means(
    conninfo: Conn,
    table: str,
    stations: Sequence[str],
    first_end: int,
    last_end: int,
    parameters: Sequence[str] | None = None,
) -> list[StoredMean]:
    """Rows of a means table (hourly_means, eight_hour_means, daily_means) ending in [first_end, last_end]."""
    where = [
        f"station IN ({', '.join(['%s'] * len(stations))})",
        "ts >= cast(%s AS TIMESTAMP_NS)",
        "ts <= cast(%s AS TIMESTAMP_NS)",
    ]
    params: list[object] = [*stations, first_end, last_end]
    if parameters:
        where.append(f"parameter IN ({', '.join(['%s'] * len(parameters))})")
        params += list(parameters)
    sql = (
        f"SELECT ts::long, station, device, parameter, unit, mean, valid, worst_flag FROM {table}"
        f" WHERE {' AND '.join(where)} ORDER BY ts"
    )
    with _connection(conninfo) as conn:
        return [StoredMean(*r[:5], r[5], bool(r[6]), r[7]) for r in conn.execute(sql, params)]


@dataclass(frozen=True, slots=True)
class DayAggregate:
    station: str
    device: str
    parameter: str
    unit: str
    n_valid: int
    mean: float | None
    low: float | None
    high: float | None
    worst_flag: int | None


_DAY_COLUMNS = (
    "station, device, parameter, unit, sum(CASE WHEN valid THEN 1 ELSE 0 END),"
    " avg(CASE WHEN valid THEN mean END), min(CASE WHEN valid THEN mean END),"
    " max(CASE WHEN valid THEN mean END), max(CASE WHEN valid THEN worst_flag END)"
)


def day_aggregates(conninfo: Conn, stations: Sequence[str], first_end: int, last_end: int) -> list[DayAggregate]:
    """Per (station, device, parameter, unit), the valid hourly means ending in [first_end, last_end]:
    count, mean, min and max (one local day's 24 hours)."""
    sql = (
        f"SELECT {_DAY_COLUMNS} FROM hourly_means"
        f" WHERE station IN ({', '.join(['%s'] * len(stations))}) AND ts >= cast(%s AS TIMESTAMP_NS)"
        " AND ts <= cast(%s AS TIMESTAMP_NS) GROUP BY 1, 2, 3, 4"
    )
    with _connection(conninfo) as conn:
        rows = conn.execute(sql, (*stations, first_end, last_end)).fetchall()
    return [DayAggregate(s, d, p, u or "", int(n or 0), m, lo, hi, wf) for s, d, p, u, n, m, lo, hi, wf in rows]


def local_days_aggregates(
    conn: Conn, stations: Sequence[str], first_day: dt.date, last_day: dt.date
) -> list[tuple[dt.date, DayAggregate]]:
    """``day_aggregates`` of every local day first_day..last_day at once: one query grouped by the day
    (the VN_AQI day, hours ending 01:00..24:00 Asia/Ho_Chi_Minh), not one query per day."""
    first_end = (first_day - _EPOCH).days * DAY_NS - _LOCAL_OFFSET_NS + HOUR_NS
    last_end = ((last_day - _EPOCH).days + 1) * DAY_NS - _LOCAL_OFFSET_NS
    sql = (
        f"SELECT (ts::long + {_LOCAL_OFFSET_NS - 1}) / {DAY_NS} AS local_day, {_DAY_COLUMNS} FROM hourly_means"
        f" WHERE station IN ({', '.join(['%s'] * len(stations))}) AND ts >= cast(%s AS TIMESTAMP_NS)"
        " AND ts <= cast(%s AS TIMESTAMP_NS) GROUP BY 1, 2, 3, 4, 5"
    )
    with _connection(conn) as c:
        rows = c.execute(sql, (*stations, first_end, last_end)).fetchall()
    return [
        (_EPOCH + dt.timedelta(days=k), DayAggregate(s, d, p, u or "", int(n or 0), m, lo, hi, wf))
        for k, s, d, p, u, n, m, lo, hi, wf in rows
    ]


# -- the feed: which hours the collector wrote into ------------------------------------------------------


def touched_hours(conninfo: Conn, after_ns: int, upto_ns: int) -> list[tuple[int, str, int]]:
    """(ts, station, hour_end) of the collector's touched_hours rows with after < ts <= upto."""
    with _connection(conninfo) as conn:
        return conn.execute(
            "SELECT ts::long, station, hour_end::long FROM touched_hours WHERE ts > cast(%s AS TIMESTAMP_NS)"
            " AND ts <= cast(%s AS TIMESTAMP_NS)",
            (after_ns, upto_ns),
        ).fetchall()


def wait_applied(conninfo: Conn, tables: Iterable[str], timeout_s: float = 30.0) -> None:
    """Return once every transaction committed to ``tables`` so far is visible to queries."""
    names = tuple(tables)
    deadline = time.monotonic() + timeout_s
    with _connection(conninfo) as conn:
        while True:
            rows = conn.execute(
                "SELECT name, writerTxn, sequencerTxn FROM wal_tables()"
                f" WHERE name IN ({', '.join(['%s'] * len(names))})",
                names,
            ).fetchall()
            if all(w >= s for _, w, s in rows):
                return
            if time.monotonic() > deadline:
                lag = {n: s - w for n, w, s in rows if s > w}
                raise WarehouseUnavailable(f"WAL of {lag} not applied within {timeout_s} s")
            time.sleep(0.02)


def latest_watermark(conninfo: Conn, aggregator: str) -> int | None:
    with _connection(conninfo) as conn:
        row = conn.execute(
            "SELECT watermark::long FROM aggregator_progress WHERE aggregator = %s"
            " LATEST ON ts PARTITION BY aggregator",
            (aggregator,),
        ).fetchone()
    return None if row is None else row[0]


# -- episodes and alerts ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoredEpisode:
    opened: int
    station: str
    device: str
    parameter: str
    limit_id: str
    state: str
    escalated_at: int | None
    closed_at: int | None
    periods: int
    peak: float
    version: int


def stored_episodes(conninfo: Conn, station: str, period: str) -> list[StoredEpisode]:
    """Every episode row of one station's limits on one averaging period (withdrawn ones too), oldest first."""
    with _connection(conninfo) as conn:
        rows = conn.execute(
            "SELECT ts::long, station, device, parameter, limit_id, state, escalated_at::long, closed_at::long,"
            " periods, peak, version FROM exceedance_episodes WHERE station = %s AND period = %s ORDER BY ts",
            (station, period),
        ).fetchall()
    return [StoredEpisode(*r) for r in rows]


def existing_alert_ids(conninfo: Conn, alert_ids: Sequence[str], chunk: int = 500) -> set[str]:
    """Which of ``alert_ids`` the alerts table holds already (one query per ``chunk`` ids)."""
    ids = list(dict.fromkeys(alert_ids))
    found: set[str] = set()
    if not ids:
        return found
    with _connection(conninfo) as conn:
        for i in range(0, len(ids), chunk):
            part = ids[i : i + chunk]
            rows = conn.execute(
                f"SELECT DISTINCT alert_id FROM alerts WHERE alert_id IN ({', '.join(['%s'] * len(part))})", part
            ).fetchall()
            found.update(r[0] for r in rows)
    return found


@dataclass(frozen=True, slots=True)
class StoredAlert:
    ts: int
    alert_id: str
    station: str
    kind: str
    audience: str
    payload: str
    webhook_state: str
    webhook_attempts: int
    mqtt_state: str
    mqtt_attempts: int


_ALERT_COLUMNS = (
    "ts::long, alert_id, station, kind, audience, payload, webhook_state, webhook_attempts, mqtt_state, mqtt_attempts"
)


def undelivered_alerts(conninfo: Conn) -> list[StoredAlert]:
    """Alerts whose webhook or MQTT delivery is still pending, oldest first (the outbox after a restart)."""
    with _connection(conninfo) as conn:
        rows = conn.execute(
            f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE webhook_state = 'pending' OR mqtt_state = 'pending' ORDER BY ts"
        ).fetchall()
    return [StoredAlert(*r) for r in rows]


def recent_alerts(conninfo: Conn, station: str | None = None, limit: int = 100) -> list[StoredAlert]:
    where, params = ("WHERE station = %s", [station]) if station else ("", [])
    with _connection(conninfo) as conn:
        rows = conn.execute(
            f"SELECT {_ALERT_COLUMNS} FROM alerts {where} ORDER BY ts DESC LIMIT %s", [*params, limit]
        ).fetchall()
    return [StoredAlert(*r) for r in rows]


# -- data availability (analysis/availability.py) -------------------------------------------------------------


def _scalar(cursor) -> object | None:
    """The one value of an aggregate; QuestDB answers no row at all where nothing matched."""
    row = cursor.fetchone()
    return None if row is None else row[0]


def newest_of_every_series(conninfo: Conn, since_ns: int) -> list[tuple[str, str, str, int, str]]:
    """(station, device, parameter, ts, status) of the newest reading of every series since ``since_ns``."""
    with _connection(conninfo) as conn:
        return conn.execute(
            "SELECT station, device, parameter, ts::long, status FROM readings WHERE ts >= cast(%s AS TIMESTAMP_NS)"
            " LATEST ON ts PARTITION BY station, device, parameter",
            (since_ns,),
        ).fetchall()


def status_run_start(conninfo: Conn, station: str, device: str, parameter: str, status: str, since_ns: int) -> int:
    """The first reading of the run of ``status`` that the series' newest reading ends (not before
    ``since_ns``): after the newest reading of another status. Two plain queries (no sub-query)."""
    series = "station = %s AND device = %s AND parameter = %s AND ts >= cast(%s AS TIMESTAMP_NS)"
    with _connection(conninfo) as conn:
        other = _scalar(
            conn.execute(
                f"SELECT max(ts)::long FROM readings WHERE {series} AND status != %s",
                (station, device, parameter, since_ns, status),
            )
        )
        first = _scalar(
            conn.execute(
                f"SELECT min(ts)::long FROM readings WHERE {series} AND status = %s",
                (station, device, parameter, since_ns if other is None else other + 1, status),
            )
        )
    return since_ns if first is None else first


def newest_hourly_validity(conninfo: Conn, since_ns: int) -> list[tuple[str, str, str, int, bool]]:
    """(station, device, parameter, hour end, valid) of every series' newest hourly mean since ``since_ns``."""
    with _connection(conninfo) as conn:
        return conn.execute(
            "SELECT station, device, parameter, ts::long, valid FROM hourly_means WHERE ts >= cast(%s AS TIMESTAMP_NS)"
            " LATEST ON ts PARTITION BY station, device, parameter",
            (since_ns,),
        ).fetchall()


def invalid_hours_run_start(conninfo: Conn, station: str, device: str, parameter: str, since_ns: int) -> int:
    """The first of the invalid hourly means that end at the series' newest one."""
    series = "station = %s AND device = %s AND parameter = %s AND ts >= cast(%s AS TIMESTAMP_NS)"
    with _connection(conninfo) as conn:
        valid = _scalar(
            conn.execute(
                f"SELECT max(ts)::long FROM hourly_means WHERE {series} AND valid",
                (station, device, parameter, since_ns),
            )
        )
        first = _scalar(
            conn.execute(
                f"SELECT min(ts)::long FROM hourly_means WHERE {series} AND NOT valid",
                (station, device, parameter, since_ns if valid is None else valid + 1),
            )
        )
    return since_ns if first is None else first


@dataclass(frozen=True, slots=True)
class StoredAvailability:
    since: int
    station: str
    device: str
    parameter: str
    condition: str
    opened_at: int
    detail: str


def open_availability(conninfo: Conn) -> list[StoredAvailability]:
    """Every availability condition whose newest row is open."""
    with _connection(conninfo) as conn:
        rows = conn.execute(
            "SELECT ts::long, station, device, parameter, condition, state, opened_at::long, detail"
            " FROM availability_episodes LATEST ON ts PARTITION BY station, device, parameter, condition"
        ).fetchall()
    return [StoredAvailability(r[0], r[1], r[2], r[3], r[4], r[6], r[7] or "") for r in rows if r[5] == "open"]
