"""The SQL of the SensorThings view (api/sensorthings/): its Datastreams, what births say about devices,
and pages and counts of Observations (readings) under a filter.

A filter arrives as a small condition tree (``Compare``, ``AllOf``, ``AnyOf``, ``Negated``) over the
column names of ``OBSERVATION_COLUMNS``; it becomes a WHERE clause whose every value is a bound
parameter, never text pasted into the SQL. Pages in the time order are keyset pages (strictly beyond
the last key a page returned, with the time bound repeated on its own so QuestDB scans only what is
left of the interval); any other order takes an offset, whose cost grows with the depth.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import psycopg

# -- conditions ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Compare:
    column: str  # a key of OBSERVATION_COLUMNS (or, in api/sensorthings, a property path of an entity)
    op: str  # eq ne lt le gt ge
    value: object  # int ns for "ts", float/int for "value", str, or None (eq/ne only: IS [NOT] NULL)


@dataclass(frozen=True)
class AllOf:
    parts: tuple[Condition, ...]


@dataclass(frozen=True)
class AnyOf:
    parts: tuple[Condition, ...]


@dataclass(frozen=True)
class Negated:
    part: Condition


Condition = Compare | AllOf | AnyOf | Negated

# Column -> how a bound value is written (ts compared as a nanosecond timestamp, not a micro one).
OBSERVATION_COLUMNS: dict[str, str] = {
    "ts": "cast(%s AS TIMESTAMP_NS)",
    "station": "%s",
    "device": "%s",
    "parameter": "%s",
    "value": "%s",
    "status": "%s",
    "qc_flag": "%s",
    "unit": "%s",
}
_OPS = {"eq": "=", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}
KEY = ("ts", "station", "device", "parameter")  # the readings' dedup key: a total order of observations


def where_sql(condition: Condition) -> tuple[str, list[object]]:
    """``condition`` as SQL with placeholders and the values to bind; ValueError for a column or operator
    outside the lists (the caller's translation should have refused it already)."""
    if isinstance(condition, Compare):
        if condition.column not in OBSERVATION_COLUMNS or condition.op not in _OPS:
            raise ValueError(f"cannot filter on {condition.column} {condition.op}")
        if condition.value is None:
            if condition.op not in ("eq", "ne"):
                raise ValueError(f"null compares only with eq or ne, not {condition.op}")
            return f"{condition.column} IS {'NOT ' if condition.op == 'ne' else ''}NULL", []
        ref = OBSERVATION_COLUMNS[condition.column]
        return f"{condition.column} {_OPS[condition.op]} {ref}", [condition.value]
    if isinstance(condition, Negated):
        text, params = where_sql(condition.part)
        return f"NOT ({text})", params
    joiner = " AND " if isinstance(condition, AllOf) else " OR "
    texts, params = [], []
    for part in condition.parts:
        text, more = where_sql(part)
        texts.append(f"({text})")
        params += more
    return joiner.join(texts) or ("true" if isinstance(condition, AllOf) else "false"), params


def _beyond(values: Sequence[object], descending: bool) -> tuple[str, list[object]]:
    """Rows strictly after ``values`` (a KEY) in the order: ``(ts, station, ...) > (...)`` spelt out."""
    op = "<" if descending else ">"
    clause, params = "", []
    for i in reversed(range(len(KEY))):
        ref = OBSERVATION_COLUMNS[KEY[i]]
        here = f"{KEY[i]} {op} {ref}"
        if not clause:
            clause, params = here, [values[i]]
        else:
            clause = f"({here} OR ({KEY[i]} = {ref} AND {clause}))"
            params = [values[i], values[i], *params]
    return clause, params


OBSERVATION_SELECT = (
    "ts::long, station, device, parameter, value, unit, status, cause, qc_flag, qc_check, qc_cause, qc_checks,"
    " received_at::long, seq, historical, source"
)
ORDERABLE = {"ts": "ts", "value": "value"}


def observations_page(
    conn: psycopg.Connection,
    condition: Condition | None,
    *,
    order: Sequence[tuple[str, bool]] = (("ts", False),),
    after: Sequence[object] | None = None,
    offset: int = 0,
    limit: int = 100,
) -> list[tuple]:
    """Readings under ``condition`` as ``OBSERVATION_SELECT`` rows, ``limit`` of them.

    ``order``: (column of ORDERABLE, descending) pairs; the KEY follows as the tie-break, in the
    direction of the first. ``after`` (a KEY; only when the order is ts alone): rows beyond it, the
    keyset way; otherwise ``offset`` rows are skipped."""
    clauses, params = [], []
    if condition is not None:
        text, params = where_sql(condition)
        clauses.append(f"({text})")
    descending = order[0][1] if order else False
    if after is not None:
        if [c for c, _ in order] != ["ts"]:
            raise ValueError("a keyset page needs the time order")
        # The time bound alone too: QuestDB narrows its interval scan with it, not with the OR below.
        clauses.append(f"ts {'<=' if descending else '>='} cast(%s AS TIMESTAMP_NS)")
        params.append(after[0])
        text, more = _beyond(after, descending)
        clauses.append(text)
        params += more
    terms = [f"{ORDERABLE[c]} {'DESC' if d else 'ASC'}" for c, d in order]
    terms += [f"{k} {'DESC' if descending else 'ASC'}" for k in KEY if k not in [c for c, _ in order]]
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    sql = f"SELECT {OBSERVATION_SELECT} FROM readings{where} ORDER BY {', '.join(terms)} LIMIT %s, %s"
    return conn.execute(sql, [*params, offset, offset + limit]).fetchall()


def observations_count(conn: psycopg.Connection, condition: Condition | None) -> int:
    """How many readings ``condition`` admits: one count() over the same WHERE (QuestDB answers it from
    the columns it reads, the whole table's from its row count)."""
    if condition is None:
        return conn.execute("SELECT count() FROM readings").fetchone()[0]
    text, params = where_sql(condition)
    return conn.execute(f"SELECT count() FROM readings WHERE {text}", params).fetchone()[0]


# -- datastreams and devices ------------------------------------------------------------------------------------


def datastreams(conn: psycopg.Connection, station: str | None = None) -> list[tuple[str, str, str, str | None, int]]:
    """Every (station, device, parameter) with a reading (or just ``station``'s): its newest unit and
    reading time (ns), one ``LATEST ON`` scan, sorted by the key."""
    where, params = ("", ()) if station is None else (" WHERE station = %s", (station,))
    rows = conn.execute(
        f"SELECT station, device, parameter, unit, ts::long FROM readings{where}"
        " LATEST ON ts PARTITION BY station, device, parameter",
        params,
    ).fetchall()
    return sorted(rows, key=lambda r: (r[0], r[1], r[2]))


def newest_births(conn: psycopg.Connection, station: str | None = None, within_s: int | None = None) -> dict[str, str]:
    """Station -> the JSON body of its newest birth message: it names each device's profile and range.

    Periodic statuses and re-send reports are ``online`` too; their bodies carry an ``"outbox"`` or
    ``"resend"`` key (broker_bridge/station_messages.py), which a birth's never does (inside a JSON
    string a quote is escaped), so they are filtered out before ``LATEST ON`` picks the newest.
    ``within_s``: only births received in the last so many seconds (a cheap look at the newest partition)."""
    where, params = ("", ()) if station is None else (" AND station = %s", (station,))
    if within_s is not None:
        where, params = f"{where} AND ts >= dateadd('s', %s, now())", (*params, -int(within_s))
    rows = conn.execute(
        "SELECT station, payload FROM station_events WHERE state = 'online'"
        f" AND payload NOT LIKE %s AND payload NOT LIKE %s{where} LATEST ON ts PARTITION BY station",
        ('%"outbox":%', '%"resend":%', *params),
    ).fetchall()
    return {s: payload for s, payload in rows if payload}
