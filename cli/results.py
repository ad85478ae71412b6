"""``quantrac averages | aqi | exceedances | alerts``: what the warehouse computed, for people at a terminal.

The rows come from the same store functions the REST API pages with (store/api_queries.py, walked page
after page to the end of the period), so a terminal and the API never disagree. Times are printed in
UTC and in Vietnam local time (the regulation's day is local); ``--format json`` and ``csv`` carry both.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta

import typer

from cli.rejects import RejectsError, parse_when, pg_conninfo
from vocabulary.local_time import VIETNAM

FORMATS = ("table", "json", "csv")
PAGE = 5000
# Columns holding UTC nanoseconds: each is printed as <name>_utc and <name>_local.
_TIMES = {"ts", "computed_at", "escalated_at", "closed_at", "decided_at"}


class ResultsError(RuntimeError):
    pass


def column_names(select: str) -> list[str]:
    """``"ts::long, device, mean"`` -> ``["ts", "device", "mean"]`` (the store module's SELECT lists)."""
    return [part.strip().split("::")[0] for part in select.split(",")]


def _moment(ns: int | None) -> tuple[str, str]:
    if ns is None:
        return "", ""
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=ns // 1000)
    return moment.isoformat(), moment.astimezone(VIETNAM).isoformat()


def records(names: Sequence[str], rows: Iterator[tuple]) -> Iterator[dict[str, object]]:
    """Rows as dicts, every time column as a UTC and a local ISO time."""
    for row in rows:
        out: dict[str, object] = {}
        for name, value in zip(names, row):
            if name in _TIMES:
                out[f"{name}_utc"], out[f"{name}_local"] = _moment(value)
            else:
                out[name] = value
        yield out


def walk(fetch: Callable[..., list[tuple]], key_index: Sequence[int]) -> Iterator[tuple]:
    """Every row of a keyset-paged query: ``fetch(after=..., limit=...)`` until a short page."""
    after = None
    while True:
        rows = fetch(after=after, limit=PAGE)
        yield from rows
        if len(rows) < PAGE:
            return
        after = [rows[-1][i] for i in key_index]


def emit(rows: Iterator[dict[str, object]], fmt: str, columns: Sequence[str], out=None) -> int:
    """Write ``rows`` as a table (``columns`` only), JSON lines or CSV (every field); returns the count."""
    out = out or sys.stdout
    n = 0
    if fmt == "json":
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
        return n
    if fmt == "csv":
        writer = None
        for row in rows:
            if writer is None:
                writer = csv.DictWriter(out, fieldnames=list(row))
                writer.writeheader()
            writer.writerow(row)
            n += 1
        return n
    table = [[_cell(c, row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in table)]) for i, c in enumerate(columns)]
    out.write("  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip() + "\n")
    for r in table:
        out.write("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() + "\n")
    return len(table)


def _cell(column: str, value: object) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if column.endswith(("_utc", "_local")):
        return str(value)[:16].replace("T", " ")  # a time: to the minute in the table (json/csv keep it whole)
    return str(value)


def _period(from_: str, to: str | None) -> tuple[int, int]:
    low, high = parse_when(from_), parse_when(to) if to else datetime.now(UTC)
    if low is None or high is None or low >= high:
        raise ResultsError(f"--from {from_!r} must be before --to {to or 'now'!r}")
    return int(low.timestamp() * 1e9), int(high.timestamp() * 1e9)


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


def _run(questdb_pg: str, fmt: str, produce: Callable) -> None:
    """Connect, produce the rows, print them: every foreseeable failure is one line and exit code 2."""
    from store.errors import WarehouseUnavailable
    from store.queries import QueryError, connect

    if fmt not in FORMATS:
        _fail(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    try:
        conninfo = pg_conninfo(questdb_pg)
        with connect(conninfo) as conn:
            names, rows, columns = produce(conn)
            n = emit(records(names, rows), fmt, columns)
    except (ResultsError, RejectsError) as exc:
        _fail(str(exc))
    except WarehouseUnavailable as exc:
        _fail(f"QuestDB at {questdb_pg} is not reachable over the PostgreSQL wire: {exc}")
    except QueryError as exc:  # an older warehouse without the analysis tables, say
        _fail(f"the warehouse refused the query: {str(exc).strip()} (has `quantrac warehouse aggregate` run?)")
    if fmt == "table":
        typer.echo(f"{n} rows", err=True)


_FROM = typer.Option("1d", "--from", help="start: ISO 8601 time (UTC if no zone) or an age (24h, 7d)")
_TO = typer.Option(None, "--to", help="end (exclusive), default now")
_FORMAT = typer.Option("table", "--format", help="table, json (one object per line) or csv")
_PG = typer.Option("127.0.0.1:8812", help="QuestDB PostgreSQL-wire host:port")


def averages(
    station: str = typer.Option(..., help="station id"),
    period: str = typer.Option("hourly", help="hourly, 8h or daily"),
    parameter: str | None = typer.Option(None, help="one parameter symbol (PM2,5, COD...)"),
    from_: str = _FROM,
    to: str | None = _TO,
    fmt: str = _FORMAT,
    questdb_pg: str = _PG,
) -> None:
    """Hourly, 8-hour or daily means of a station with their coverage (valid only when complete enough)."""
    from store import api_queries as q

    def produce(conn):
        if period not in q.MEAN_TABLES:
            raise ResultsError(f"--period must be one of {', '.join(q.MEAN_TABLES)}, not {period!r}")
        low, high = _period(from_, to)
        names = column_names(q.mean_select(period))
        rows = walk(lambda **k: q.means_page(conn, period, station, low, high, parameter=parameter, **k), (0, 1, 2))
        shown = ["ts_local", "parameter", "mean", "unit", "n_valid", "n_expected", "coverage", "valid", "worst_flag"]
        return names, rows, shown

    _run(questdb_pg, fmt, produce)


def aqi(
    station: str = typer.Option(..., help="station id"),
    daily: bool = typer.Option(False, "--daily/--hourly", help="the day's VN_AQI instead of the hourly (NowCast)"),
    from_: str = _FROM,
    to: str | None = _TO,
    fmt: str = _FORMAT,
    questdb_pg: str = _PG,
) -> None:
    """A station's hourly or daily VN_AQI (QĐ 1459): value, category, colour, dominant parameter, sub-indices."""
    from store import api_queries as q

    def produce(conn):
        low, high = _period(from_, to)
        period = "daily" if daily else "hourly"
        rows = walk(lambda **k: q.aqi_page(conn, period, station, low, high, **k), (0,))
        shown = ["ts_local", "aqi", "category", "colour", "dominant", "reason"]
        return column_names(q.AQI_COLUMNS), rows, shown

    _run(questdb_pg, fmt, produce)


def exceedances(
    station: str | None = typer.Option(None, help="one station (default: all)"),
    parameter: str | None = typer.Option(None, help="one parameter symbol"),
    state: str | None = typer.Option(None, help="open, escalated, closed or withdrawn"),
    from_: str = typer.Option("30d", "--from", help="episodes opened from: ISO 8601 or an age (7d)"),
    to: str | None = _TO,
    fmt: str = _FORMAT,
    questdb_pg: str = _PG,
) -> None:
    """QCVN exceedance episodes that opened in the period, with their state, peak and limit."""
    from store import api_queries as q

    def produce(conn):
        low, high = _period(from_, to)
        rows = walk(
            lambda **k: q.episodes_page(conn, low, high, station=station, parameter=parameter, state=state, **k),
            (0, 1, 2, 3, 4),
        )
        shown = ["ts_local", "station", "parameter", "limit_id", "period", "limit_value", "peak", "unit", "state",
                 "closed_at_local"]  # fmt: skip
        return column_names(q.EPISODE_COLUMNS), rows, shown

    _run(questdb_pg, fmt, produce)


def alerts(
    station: str | None = typer.Option(None, help="one station (default: all)"),
    limit: int = typer.Option(100, min=1, max=100_000, help="the newest N alerts"),
    fmt: str = _FORMAT,
    questdb_pg: str = _PG,
) -> None:
    """The newest alerts (pollution episodes and data availability) and how far their delivery got."""
    from store.analysis_queries import recent_alerts

    def produce(conn):
        rows = recent_alerts(conn, station, limit)
        names = ["ts", "alert_id", "station", "kind", "audience", "payload", "webhook_state", "webhook_attempts",
                 "mqtt_state", "mqtt_attempts"]  # fmt: skip
        shown = ["ts_local", "station", "kind", "audience", "webhook_state", "mqtt_state", "alert_id"]
        return names, iter([tuple(getattr(a, n) for n in names) for a in rows]), shown

    _run(questdb_pg, fmt, produce)


COMMANDS = {"averages": averages, "aqi": aqi, "exceedances": exceedances, "alerts": alerts}
