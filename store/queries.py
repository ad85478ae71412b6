"""Read-side SQL over QuestDB's PostgreSQL wire (psycopg).

Every read goes through ``connect``: a warehouse that cannot be reached (refused, dropped mid-query,
restarting) raises ``WarehouseUnavailable``, the one error the collector holds messages for and
retries, never a driver error that would make a message look like poison.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

import psycopg

from store import sta_queries
from store.errors import WarehouseUnavailable
from store.station_state import connection_states


@contextmanager
def connect(conninfo: str) -> Iterator[psycopg.Connection]:
    """An autocommit connection; connection failures (at open or during the block) become WarehouseUnavailable."""
    try:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            yield conn
    except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
        raise WarehouseUnavailable(f"QuestDB over PostgreSQL wire: {type(exc).__name__}: {exc}") from exc


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
    latest_qc_flag: int | None = None
    latest_qc_check: str = ""


def parameter_summaries(conninfo: str) -> list[ParameterSummary]:
    """Per station, device and parameter: how many readings, and the latest one."""
    with connect(conninfo) as conn:
        counts = {
            (s, d, p): n
            for s, d, p, n in conn.execute(
                "SELECT station, device, parameter, count() FROM readings GROUP BY station, device, parameter"
            )
        }
        latest = conn.execute(
            "SELECT station, device, parameter, value, unit, status, ts, qc_flag, qc_check FROM readings "
            "LATEST ON ts PARTITION BY station, device, parameter"
        ).fetchall()
    summaries = [
        ParameterSummary(s, d, p, counts.get((s, d, p), 0), v, u or "", st or "", ts, qf, qc or "")
        for s, d, p, v, u, st, ts, qf, qc in latest
    ]
    return sorted(summaries, key=lambda x: (x.station, x.device, x.parameter))


def reject_counts(conninfo: str) -> dict[tuple[str, str], int]:
    with connect(conninfo) as conn:
        return {
            (s or "", r): n
            for s, r, n in conn.execute(
                "SELECT claimed_station, reason, count() FROM rejects GROUP BY claimed_station, reason"
            )
        }


@dataclass(frozen=True)
class StationOverview:
    station: str
    state: str  # online / offline / unknown, from the newest session's newest event
    session: int | None
    last_reading: datetime | None
    readings: int
    latest_payload: (
        str | None
    )  # the newest session's newest message, as the station sent it (its format: broker_bridge)
    missing_batches: int  # sequence numbers between the lowest and highest that never arrived
    rejects: int
    open_gaps: int = 0  # recorded gaps still asked for
    lost_at_source: int = 0  # batches of closed gaps the station no longer held


def highest_station_sessions(conninfo: str) -> dict[str, int]:
    """Each station's highest stored session: where the collector's session bound starts (collector/sessions.py)."""
    with connect(conninfo) as conn:
        return {
            station: session
            for station, session in conn.execute("SELECT station, max(session) FROM station_events GROUP BY station")
            if session is not None
        }


def newest_births(conninfo: str, within_s: int | None = None) -> dict[str, str]:
    """Station -> the JSON body of its newest birth (received in the last ``within_s`` seconds): the
    analyzer ranges the collector applies after a restart (collector/analyzer_ranges.py), and what
    the members of a share group learn of each other's births."""
    with connect(conninfo) as conn:
        return sta_queries.newest_births(conn, within_s=within_s)


def station_overview(conninfo: str) -> list[StationOverview]:
    with connect(conninfo) as conn:
        readings = {
            s: (n, ts) for s, n, ts in conn.execute("SELECT station, count(), max(ts) FROM readings GROUP BY station")
        }
        ledger = {
            s: (n, lo, hi)
            for s, n, lo, hi in conn.execute(
                "SELECT station, count_distinct(seq), min(seq), max(seq) FROM batches GROUP BY station"
            )
        }
        rejects = {
            s: n for s, n in conn.execute("SELECT claimed_station, count() FROM rejects GROUP BY claimed_station")
        }
        gaps: dict[str, tuple[int, int]] = {}
        for station, state, count, lost in conn.execute(
            "SELECT station, state, count(), sum(lost) FROM sequence_gaps GROUP BY station, state"
        ):
            opened, lost_total = gaps.get(station, (0, 0))
            if state in (None, "open"):
                opened += count
            gaps[station] = (opened, lost_total + (lost or 0))
        events = connection_states(conn)
    overview = []
    for station in sorted(set(readings) | set(ledger) | set(events) | {s for s in rejects if s}):
        count, last = readings.get(station, (0, None))
        state, session, payload = events.get(station, ("unknown", None, None))
        distinct, low, high = ledger.get(station, (0, None, None))
        missing = 0 if low is None else (high - low + 1) - distinct
        overview.append(
            StationOverview(
                station,
                state,
                session,
                last,
                count,
                payload or None,
                missing,
                rejects.get(station, 0),
                *gaps.get(station, (0, 0)),
            )
        )
    return overview


def recent_readings(conninfo: str, lookback_s: float, slice_s: float = 900.0):
    """(station, device, parameter, ts_ns, value, status, unit) of the last ``lookback_s``, oldest first:
    what the measurement controls' history is rebuilt from after a restart (``QualityControl.seed``).

    Read in time slices so a long window never sits in memory at once;
    ts as LONG keeps the nanoseconds the PG wire would round to microseconds, and a history
    point must keep its exact time to be recognised when its message is redelivered.
    """
    import time as _time

    end_us = _time.time_ns() // 1000
    start_us = end_us - int(lookback_s * 1e6)
    step_us = int(slice_s * 1e6)
    with connect(conninfo) as conn:
        for low in range(start_us, end_us + step_us, step_us):
            yield from conn.execute(
                "SELECT station, device, parameter, cast(ts AS LONG), value, status, unit FROM readings"
                " WHERE ts >= cast(%s AS TIMESTAMP) AND ts < cast(%s AS TIMESTAMP) ORDER BY ts",
                (low, low + step_us),
            )


# -- the batch ledger, as the collector's sequence tracking reads it ---------------------------------------


def ledger_highest_seq(conninfo: str) -> dict[str, int]:
    """Per station, the highest sequence number in the ``batches`` ledger."""
    with connect(conninfo) as conn:
        return {station: seq for station, seq in conn.execute("SELECT station, max(seq) FROM batches GROUP BY station")}


def ledger_ranges(conninfo: str) -> list[tuple[str, int, int]]:
    """(station, first, last): the ledger's runs of consecutive sequence numbers (gaps and islands)."""
    with connect(conninfo) as conn:
        return conn.execute(
            "SELECT station, min(seq), max(seq) FROM ("
            " SELECT station, seq, seq - row_number() OVER (PARTITION BY station ORDER BY seq) island"
            " FROM (SELECT DISTINCT station, seq FROM batches)"
            ") GROUP BY station, island ORDER BY station, 2"
        ).fetchall()


def batches_received_since(conninfo: str, since: datetime, except_station: str | None = None) -> int:
    """How many batches the collectors committed with ``received_at`` at or after ``since`` (other stations'
    only, with ``except_station``): proof that a collector kept committing (bench/attack.py staging)."""
    sql = "SELECT count() FROM batches WHERE received_at >= %s"
    params: list[object] = [_bounded(since)]
    if except_station is not None:
        sql += " AND station != %s"
        params.append(except_station)
    with connect(conninfo) as conn:
        return conn.execute(sql, params).fetchone()[0]


def open_gaps(conninfo: str) -> list[tuple[str, int, int, int]]:
    """(station, first missing, last missing, seen ns) of every gap not closed yet: asked for again after a restart."""
    with connect(conninfo) as conn:
        return conn.execute(
            "SELECT station, first_missing, last_missing, ts::long FROM sequence_gaps"
            " WHERE state IS NULL OR state = 'open' ORDER BY ts"
        ).fetchall()


def ledger_entry(conninfo: str, station: str, seq: int) -> tuple[str, int] | None:
    """(payload sha256, received_at in ns) of a station's batch ``seq`` in the ledger, or None."""
    with connect(conninfo) as conn:
        row = conn.execute(
            "SELECT payload_sha256, received_at::long FROM batches WHERE station = %s AND seq = %s LIMIT 1",
            (station, seq),
        ).fetchone()
    return None if row is None else (row[0], row[1])


# -- revisions: stored readings a new batch may change (collector/revisions.py) -------------------------------


def newest_reading_ts(conninfo: str) -> dict[str, int]:
    """Per station, the time (ns) of its newest stored reading: no later reading can exist yet."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        return dict(conn.execute("SELECT station, ts::long FROM readings LATEST ON ts PARTITION BY station"))


def readings_applied(conninfo: str) -> bool:
    """Every committed transaction of ``readings`` is visible to queries (WAL applied)."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        row = conn.execute("SELECT writerTxn, sequencerTxn FROM wal_tables() WHERE name = 'readings'").fetchone()
    return row is None or row[0] >= row[1]


def stored_readings(conninfo: str, station: str, ts_low_ns: int, ts_high_ns: int):
    """(device, parameter, ts_ns, value, status, qc_flag, seq) of a station's readings in [low, high]."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        yield from conn.cursor().stream(
            "SELECT device, parameter, ts::long, value, status, qc_flag, seq FROM readings WHERE station = %s"
            " AND ts >= cast(%s AS TIMESTAMP_NS) AND ts <= cast(%s AS TIMESTAMP_NS)",
            (station, ts_low_ns, ts_high_ns),
        )


@dataclass(frozen=True, slots=True)
class StoredReading:
    """A stored reading as the regulation's files need it (``broker_bridge.tt10.cycles`` takes it)."""

    device: str
    parameter: str
    ts_ns: int
    value: float | None
    unit: str
    status: str


def readings_for_export(conninfo: str, station: str, low_ns: int, high_ns: int) -> Iterator[StoredReading]:
    """A station's readings with ``low_ns <= ts < high_ns``, oldest first, streamed (``quantrac export tt10``).

    ts as LONG keeps the nanoseconds; rows come in single-row mode, so a year never sits in memory.
    """
    with connect(conninfo) as conn:
        for device, parameter, ts_ns, value, unit, status in conn.cursor().stream(
            "SELECT device, parameter, ts::long, value, unit, status FROM readings WHERE station = %s"
            " AND ts >= cast(%s AS TIMESTAMP_NS) AND ts < cast(%s AS TIMESTAMP_NS) ORDER BY ts",
            (station, low_ns, high_ns),
        ):
            yield StoredReading(device, parameter, ts_ns, value, unit or "", status or "")


# -- WAL health: a suspended table still takes writes, but its rows stay invisible ---------------------------


@dataclass(frozen=True)
class WalTable:
    name: str
    suspended: bool
    writer_txn: int
    sequencer_txn: int

    @property
    def apply_lag(self) -> int:
        return self.sequencer_txn - self.writer_txn


def wal_tables(conninfo: str) -> list[WalTable]:
    with connect(conninfo) as conn:
        rows = conn.execute("SELECT name, suspended, writerTxn, sequencerTxn FROM wal_tables()").fetchall()
    return [WalTable(name, bool(suspended), writer, sequencer) for name, suspended, writer, sequencer in rows]


def suspended_wal_tables(conninfo: str) -> list[WalTable]:
    return [t for t in wal_tables(conninfo) if t.suspended]


# -- rejects: what the collector refused, for `quantrac rejects list|export` ---------------------------


QueryError = psycopg.Error  # what a read-side query raises when QuestDB cannot answer it


@dataclass(frozen=True)
class RejectRecord:
    received_at: datetime  # UTC (QuestDB returns it without a zone)
    received_ns: int  # the same instant to the nanosecond, as stored
    topic: str
    claimed_station: str  # "" when the topic named no station
    reason: str
    detail: str
    payload_sha256: str
    payload_b64: str | None  # None when the query did not fetch the payload (listing); the first 64 KiB of a larger one
    payload_size: int | None = None  # the whole payload's size in bytes (None: a reject stored before it was kept)
    payload_stored: bool = False  # the whole bytes are in the collector's payload store (--reject-store)


_REJECT_COLUMNS = "ts, ts::long, topic, claimed_station, reason, detail, payload_sha256, payload_size, payload_stored"
# A row bigger than QuestDB's PG send buffer (1 MiB) fails the whole query, and rejects written before
# payloads were bounded hold up to 1.4 MB of base64: payloads are read in pieces of this many characters.
_PAYLOAD_CHUNK_CHARS = 256 * 1024
# QuestDB cannot convert a bound time past its largest TIMESTAMP_NS (end of 2261) and fails the query;
# no row can lie beyond it, so a filter beyond it means the same as one at it.
_LATEST_NS_TIME = datetime.fromisoformat("2261-12-31T23:59:59.999999+00:00")


def _bounded(moment: datetime) -> datetime:
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=_LATEST_NS_TIME.tzinfo)  # naive means UTC
    return min(aware, _LATEST_NS_TIME)


def _reject_filter(
    station: str | None, reason: str | None, since: datetime | None, until: datetime | None
) -> tuple[str, list[object]]:
    clauses, params = [], []
    if station is not None:
        clauses.append("claimed_station = %s")
        params.append(station)
    if reason is not None:
        clauses.append("reason = %s")
        params.append(reason)
    if since is not None:
        clauses.append("ts >= %s")
        params.append(_bounded(since))
    if until is not None:
        clauses.append("ts < %s")
        params.append(_bounded(until))
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def _reject(row: tuple, payload_b64: str | None) -> RejectRecord:
    ts, ns, topic, station, reason, detail, sha, size, stored = row
    return RejectRecord(
        ts, ns, topic or "", station or "", reason or "", detail or "", sha or "", payload_b64, size, bool(stored)
    )


def recent_rejects(
    conninfo: str,
    station: str | None = None,
    reason: str | None = None,
    since: datetime | None = None,
    limit: int = 50,
) -> list[RejectRecord]:
    """The newest ``limit`` rejects matching the filters, newest first, without their payloads."""
    where, params = _reject_filter(station, reason, since, None)
    with connect(conninfo) as conn:
        rows = conn.execute(
            f"SELECT {_REJECT_COLUMNS} FROM rejects{where} ORDER BY ts DESC LIMIT %s", [*params, limit]
        ).fetchall()
    return [_reject(row, None) for row in rows]


def stream_rejects(
    conninfo: str,
    station: str | None = None,
    reason: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
):
    """Every reject matching the filters, oldest first, with its base64 payload (as the row holds it).

    Rows are streamed (libpq single-row mode) without their payloads, and each payload is read
    in pieces of ``_PAYLOAD_CHUNK_CHARS`` over a second connection, so no row of any size fails
    the export and a year of rejects never sits in memory at once.
    """
    where, params = _reject_filter(station, reason, since, until)
    with psycopg.connect(conninfo, autocommit=True) as conn, psycopg.connect(conninfo, autocommit=True) as pieces:
        cursor = conn.cursor()
        query = (
            f"SELECT {_REJECT_COLUMNS}, length(payload_b64),"
            f" CASE WHEN length(payload_b64) <= {_PAYLOAD_CHUNK_CHARS} THEN payload_b64 END"
            f" FROM rejects{where} ORDER BY ts"
        )
        for row in cursor.stream(query, params):
            *fields, length, inline = row
            if inline is None and length:  # too big to come with its row: in pieces
                inline = _payload_b64(pieces, fields[1], fields[6], length)
            yield _reject(tuple(fields), inline or "")


def _payload_b64(conn: psycopg.Connection, ts_ns: int, sha256: str, length: int) -> str:
    parts = []
    for start in range(1, length + 1, _PAYLOAD_CHUNK_CHARS):
        (part,) = conn.execute(
            "SELECT substring(payload_b64, %s, %s) FROM rejects WHERE ts = cast(%s AS TIMESTAMP_NS)"
            " AND payload_sha256 = %s LIMIT 1",
            (start, _PAYLOAD_CHUNK_CHARS, ts_ns, sha256),
        ).fetchone()
        parts.append(part or "")
    return "".join(parts)
