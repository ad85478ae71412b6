"""The SQL the REST API (api/) reads the warehouse with, and the connections it reads over.

Every page is a keyset page: ordered by the designated timestamp, then the table's key columns,
and continued strictly after the last key a page returned (``after``), never with OFFSET: a deep
page costs what the first one does, and rows arriving meanwhile are neither repeated nor shift
others out of the walk. Times are UTC nanoseconds (``ts::long`` keeps what the PG wire would round).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import psycopg

from store.errors import WarehouseUnavailable
from store.schema import AQI_DAILY, AQI_HOURLY, DAILY_MEANS, EIGHT_HOUR_MEANS, HOURLY_MEANS, Table

QueryError = psycopg.Error


class Pool:
    """A few open autocommit connections, shared by the API's worker threads (opening one costs a
    round trip and a login per request otherwise). A connection that fails is dropped, not reused."""

    def __init__(self, conninfo: str, size: int = 16) -> None:
        self.conninfo = conninfo
        self._idle: queue.LifoQueue[psycopg.Connection] = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(size)

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        self._slots.acquire()
        conn: psycopg.Connection | None = None
        try:
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                conn = psycopg.connect(self.conninfo, autocommit=True)
            yield conn
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            if conn is not None:
                conn.close()
                conn = None
            raise WarehouseUnavailable(f"QuestDB over PostgreSQL wire: {type(exc).__name__}: {exc}") from exc
        finally:
            if conn is not None:
                if conn.closed or conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                    conn.close()
                else:
                    self._idle.put(conn)
            self._slots.release()

    def close(self) -> None:
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return


def _after(columns: Sequence[str], values: Sequence[object]) -> tuple[str, list[object]]:
    """``(c1, c2, ...) > (v1, v2, ...)`` spelt out (QuestDB has no row comparison); ts is the first column."""
    column, value = columns[0], values[0]
    ref = "cast(%s AS TIMESTAMP_NS)" if column == "ts" else "%s"
    if len(columns) == 1:
        return f"{column} > {ref}", [value]
    rest, rest_params = _after(columns[1:], values[1:])
    return f"({column} > {ref} OR ({column} = {ref} AND {rest}))", [value, value, *rest_params]


def _page(
    conn: psycopg.Connection,
    select: str,
    table: str,
    key: Sequence[str],
    filters: Sequence[tuple[str, object]],
    low_ns: int,
    high_ns: int,
    after: Sequence[object] | None,
    limit: int,
) -> list[tuple]:
    clauses = ["ts >= cast(%s AS TIMESTAMP_NS)", "ts < cast(%s AS TIMESTAMP_NS)"]
    # The interval starts at the cursor's time too, so QuestDB scans only what is left of the period.
    params: list[object] = [low_ns if after is None else max(low_ns, int(after[0])), high_ns]
    for clause, value in filters:
        clauses.append(clause)
        params.append(value)
    if after is not None:
        clause, more = _after(key, after)
        clauses.append(clause)
        params += more
    sql = f"SELECT {select} FROM {table} WHERE {' AND '.join(clauses)} ORDER BY {', '.join(key)} LIMIT %s"
    return conn.execute(sql, [*params, limit]).fetchall()


# -- stations --------------------------------------------------------------------------------------------------


def last_reading_times(conn: psycopg.Connection) -> dict[str, int]:
    """Per station, the time (ns) of its newest stored reading."""
    return dict(conn.execute("SELECT station, ts::long FROM readings LATEST ON ts PARTITION BY station").fetchall())


# -- latest readings -------------------------------------------------------------------------------------------

# What the public may see of a reading: measured (00), a value, and not failed by the controls (the same
# admission as the averages' "pass" and "not evaluated" classes; suspect is left out there too).
_VALID = "status = '00' AND value IS NOT NULL AND (qc_flag IS NULL OR qc_flag IN (1, 2))"

LATEST_VALUE_COLUMNS = "station, device, parameter, ts::long, value, unit"
# Blanks and the default provenance are filled in here, so a row is what the API answers as it comes
# (api/app.py zips it with the model's field names instead of testing each column in Python).
READING_COLUMNS = (
    "ts::long, device, parameter, value, coalesce(unit, ''), coalesce(status, ''), coalesce(cause, ''), qc_flag,"
    " coalesce(qc_check, ''), coalesce(qc_cause, ''), coalesce(qc_checks, ''), seq, historical,"
    " coalesce(source, 'agent'), received_at::long"
)
# The station, then everything a raw reading has: /latest/raw and /readings answer the same fields.
LATEST_COLUMNS = "station, " + READING_COLUMNS


def latest_readings(
    conn: psycopg.Connection, *, valid_only: bool, stations: Sequence[str] | None = None
) -> list[tuple]:
    """The newest reading of every (station, device, parameter), one LATEST ON scan.

    ``valid_only``: the newest reading that would count in a mean (the filter applies before LATEST ON),
    not the newest reading when that one is calibration or a device error; rows as ``LATEST_VALUE_COLUMNS``.
    Otherwise the newest of any status, rows as ``LATEST_COLUMNS``.
    """
    clauses, params = [], []
    if valid_only:
        clauses.append(_VALID)
    if stations is not None:
        if not stations:
            return []
        clauses.append(f"station IN ({', '.join(['%s'] * len(stations))})")
        params += list(stations)
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    columns = LATEST_VALUE_COLUMNS if valid_only else LATEST_COLUMNS
    return conn.execute(
        f"SELECT {columns} FROM readings{where} LATEST ON ts PARTITION BY station, device, parameter", params
    ).fetchall()


# -- raw readings ----------------------------------------------------------------------------------------------

READING_KEY = ("ts", "device", "parameter")


def readings_page(
    conn: psycopg.Connection,
    station: str,
    low_ns: int,
    high_ns: int,
    *,
    parameter: str | None = None,
    after: Sequence[object] | None = None,
    limit: int = 1000,
) -> list[tuple]:
    """A station's readings with ``low <= ts < high`` after the key ``after`` (ts, device, parameter)."""
    filters: list[tuple[str, object]] = [("station = %s", station)]
    if parameter is not None:
        filters.append(("parameter = %s", parameter))
    return _page(conn, READING_COLUMNS, "readings", READING_KEY, filters, low_ns, high_ns, after, limit)


# -- means -----------------------------------------------------------------------------------------------------

MEAN_TABLES: dict[str, Table] = {"hourly": HOURLY_MEANS, "8h": EIGHT_HOUR_MEANS, "daily": DAILY_MEANS}
MEAN_KEY = ("ts", "device", "parameter")
MEAN_COLUMNS = (
    "ts::long, device, parameter, unit, mean, min, max, n_valid, n_expected, coverage, valid, worst_flag, rule,"
    " computed_at::long"
)
# Only the hourly table counts what was left out, and only the daily one has the local day and the day's max.
_MEAN_EXTRA = {
    "hourly": ", n_readings, n_calibrating, n_device_error, n_qc_fail, n_suspect",
    "8h": "",
    "daily": ", local_day, max_hourly",
}


def mean_select(period: str) -> str:
    """What ``means_page`` returns for ``period``: MEAN_COLUMNS then that table's extras."""
    return MEAN_COLUMNS + _MEAN_EXTRA[period]


def means_page(
    conn: psycopg.Connection,
    period: str,
    station: str,
    low_ns: int,
    high_ns: int,
    *,
    parameter: str | None = None,
    after: Sequence[object] | None = None,
    limit: int = 1000,
) -> list[tuple]:
    """``period``'s means (``MEAN_TABLES``) of a station ending in [low, high); MEAN_COLUMNS then the extras."""
    filters: list[tuple[str, object]] = [("station = %s", station)]
    if parameter is not None:
        filters.append(("parameter = %s", parameter))
    return _page(conn, mean_select(period), MEAN_TABLES[period].name, MEAN_KEY, filters, low_ns, high_ns, after, limit)


# -- VN_AQI ----------------------------------------------------------------------------------------------------

AQI_TABLES: dict[str, Table] = {"hourly": AQI_HOURLY, "daily": AQI_DAILY}
AQI_COLUMNS = "ts::long, aqi, category, colour, dominant, sub_indices, missing, reason, computed_at::long"


def aqi_page(
    conn: psycopg.Connection,
    period: str,
    station: str,
    low_ns: int,
    high_ns: int,
    *,
    after: Sequence[object] | None = None,
    limit: int = 1000,
) -> list[tuple]:
    """A station's hourly or daily VN_AQI ending in [low, high), one row per period (keyed by ts alone)."""
    table = AQI_TABLES[period].name
    return _page(conn, AQI_COLUMNS, table, ("ts",), [("station = %s", station)], low_ns, high_ns, after, limit)


def latest_aqi(conn: psycopg.Connection) -> list[tuple]:
    """Every station's newest hourly VN_AQI: (station, AQI_COLUMNS...)."""
    return conn.execute(f"SELECT station, {AQI_COLUMNS} FROM aqi_hourly LATEST ON ts PARTITION BY station").fetchall()


# -- exceedance episodes ---------------------------------------------------------------------------------------

EPISODE_KEY = ("ts", "station", "device", "parameter", "limit_id")
EPISODE_COLUMNS = (
    "ts::long, station, device, parameter, limit_id, period, limit_value, unit, state, escalated_at::long,"
    " closed_at::long, periods, peak, last_mean, decided_at::long, version"
)


def episodes_page(
    conn: psycopg.Connection,
    low_ns: int,
    high_ns: int,
    *,
    station: str | None = None,
    parameter: str | None = None,
    state: str | None = None,
    after: Sequence[object] | None = None,
    limit: int = 1000,
) -> list[tuple]:
    """Episodes that opened in [low, high), by opening time then key; filters by station, parameter, state."""
    filters: list[tuple[str, object]] = []
    for column, value in (("station", station), ("parameter", parameter), ("state", state)):
        if value is not None:
            filters.append((f"{column} = %s", value))
    return _page(conn, EPISODE_COLUMNS, "exceedance_episodes", EPISODE_KEY, filters, low_ns, high_ns, after, limit)


# -- rejects ---------------------------------------------------------------------------------------------------

REJECT_KEY = ("ts", "payload_sha256")
REJECT_COLUMNS = "ts::long, payload_sha256, topic, claimed_station, reason, detail, payload_size, payload_stored"


def rejects_page(
    conn: psycopg.Connection,
    low_ns: int,
    high_ns: int,
    *,
    station: str | None = None,
    reason: str | None = None,
    after: Sequence[object] | None = None,
    limit: int = 1000,
) -> list[tuple]:
    """What the collector refused in [low, high), without payloads (``quantrac rejects export`` has them)."""
    filters: list[tuple[str, object]] = []
    if station is not None:
        filters.append(("claimed_station = %s", station))
    if reason is not None:
        filters.append(("reason = %s", reason))
    return _page(conn, REJECT_COLUMNS, "rejects", REJECT_KEY, filters, low_ns, high_ns, after, limit)
