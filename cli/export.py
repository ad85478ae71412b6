"""`quantrac export tt10`: the regulation's TXT files from the warehouse, one per cycle; and
`quantrac export csv|parquet`: the bulk downloads (``store.bulk_export``, its README), whose days,
filters and messages are here.

For forwarding a station's stored readings to a system that only takes TT10 files (the
ministry's current one). The cycles, the mean and the period's status are
``broker_bridge.tt10.cycles``' (the same rules as the agent's TT10 out); names, lines and
Vietnam local time are the codec's; the SQL is ``store.queries.readings_for_export``.
Cycles ending in ``(--from, --to]`` are written; a cycle without readings has no file.
Each file is written under a temporary name and renamed, so a reader of ``--out`` never
sees half a file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from broker_bridge.tt10.codec import Tt10WriteError
from broker_bridge.tt10.cycles import MODES, NS_PER_S, CycleFile, check_cycle, cycle_end, cycle_ends, cycle_file
from broker_bridge.tt10.names import NAME_FORMS, FileNameError

if TYPE_CHECKING:
    from store.queries import StoredReading

export_app = typer.Typer(help="Export from the warehouse in the regulation's formats.", no_args_is_help=True)

_DURATION = re.compile(r"^\s*(\d+)\s*([smh]?)\s*$")
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600}


class ExportError(RuntimeError):
    """A bad argument, an unreachable warehouse or data that cannot be written, said so an operator can act."""


def parse_cycle(text: str) -> int:
    """``5m``, ``300s``, ``300``, ``1h`` -> seconds (dividing a day)."""
    match = _DURATION.match(text)
    if not match:
        raise ExportError(f"--cycle {text!r} is not a duration such as 5m, 300s or 1h")
    try:
        return check_cycle(int(match.group(1)) * _SECONDS[match.group(2)])
    except ValueError as exc:
        raise ExportError(f"--cycle {text!r}: {exc}") from exc


def _ns(moment: datetime) -> int:
    return int(moment.timestamp()) * NS_PER_S + moment.microsecond * 1000


def export_tt10(
    conninfo: str,
    station: str,
    after: datetime,
    until: datetime,
    out: Path,
    *,
    cycle_s: int = 300,
    mode: str = "mean",
    prefix: str | None = None,
    form: str = "tinh_coso_tram",
    devices: Iterable[str] = (),
    decimals: int | None = None,
) -> list[Path]:
    """Write the files of the cycles ending in ``(after, until]``; returns their paths, oldest first."""
    from store.errors import WarehouseUnavailable  # psycopg only for the command that needs it
    from store.queries import QueryError, readings_for_export

    if mode not in MODES:
        raise ExportError(f"--mode {mode!r} is not one of {', '.join(MODES)}")
    if form not in NAME_FORMS:
        raise ExportError(f"--form {form!r} is not one of {', '.join(NAME_FORMS)}")
    ends = cycle_ends(_ns(after), _ns(until), cycle_s)
    if not ends:
        raise ExportError(f"no {cycle_s} s cycle ends after --from and at or before --to")
    chosen = set(devices)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    current: list[StoredReading] = []
    current_end = None
    low, high = ends[0] - cycle_s * NS_PER_S + NS_PER_S, ends[-1] + NS_PER_S
    try:
        for r in readings_for_export(conninfo, station, low, high):
            if chosen and r.device not in chosen:
                continue
            end = cycle_end(r.ts_ns, cycle_s)
            if end != current_end and current:
                written.append(_write(out, _file(prefix or station, current_end, current, mode, form, decimals)))
                current = []
            current_end = end
            current.append(r)
        if current:
            written.append(_write(out, _file(prefix or station, current_end, current, mode, form, decimals)))
    except (WarehouseUnavailable, QueryError) as exc:
        raise ExportError(f"the warehouse cannot answer: {exc}") from exc
    return written


def _file(prefix: str, end_ns: int, readings: list[StoredReading], mode, form, decimals) -> CycleFile:
    try:
        return cycle_file(prefix, end_ns, readings, mode=mode, form=form, decimals=decimals)
    except (Tt10WriteError, FileNameError) as exc:
        raise ExportError(f"cycle ending {end_ns} ns: {exc}") from exc


def _write(out: Path, f: CycleFile) -> Path:
    final = out / f.name
    temporary = out / f".{f.name}.part"
    with open(temporary, "wb") as handle:
        handle.write(f.content)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, final)
    return final


@export_app.command("tt10")
def export_tt10_cmd(
    station: str = typer.Option(..., "--station", help="the station's id in the warehouse"),
    after: str = typer.Option(..., "--from", help="ISO 8601 (UTC unless a zone is given) or an age (24h, 7d)"),
    until: str = typer.Option(..., "--to", help="ISO 8601 or an age; cycles ending in (--from, --to] are written"),
    out: Path = typer.Option(..., "--out", help="folder to write the files into"),
    cycle: str = typer.Option("5m", "--cycle", help="cycle length: 5m, 300s, 1h (must divide a day)"),
    mode: str = typer.Option("mean", "--mode", help="mean (one line per parameter) or each (every reading)"),
    prefix: str | None = typer.Option(
        None, "--prefix", help="file-name prefix <Tinh>_<CoSo>_<Tram> (default: station)"
    ),
    form: str = typer.Option("tinh_coso_tram", "--form", help="name form: " + ", ".join(NAME_FORMS)),
    device: list[str] = typer.Option(
        [], "--device", help="only these devices (repeat); needed when two share a parameter"
    ),
    decimals: int | None = typer.Option(None, "--decimals", min=0, max=12, help="fixed decimals (default: exact)"),
    questdb_pg: str = typer.Option("127.0.0.1:8812", "--questdb-pg", help="QuestDB PostgreSQL-wire host:port"),
) -> None:
    """Write a station's TT10 files (TT 10/2021, Phụ lục 15) from QuestDB, one per cycle."""
    from cli.rejects import RejectsError, parse_when, pg_conninfo  # the --since/--until forms, one place

    try:
        low, high = parse_when(after), parse_when(until)
        assert low is not None and high is not None
        written = export_tt10(
            pg_conninfo(questdb_pg),
            station,
            low,
            high,
            out,
            cycle_s=parse_cycle(cycle),
            mode=mode,
            prefix=prefix,
            form=form,
            devices=device,
            decimals=decimals,
        )
    except (ExportError, RejectsError, OSError) as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2) from None
    typer.echo(f"{len(written)} file{'s' if len(written) != 1 else ''} written to {out}", err=True)


# -- bulk downloads: daily files per province and parameter (store/bulk_export) -------------------------------


def bulk_days(day: str | None, first: str | None, last: str | None) -> list:
    """The Vietnam local days asked for: ``--day D``, or ``--from D1 --to D2`` (both included)."""
    from store.bulk_export.layout import LocalDay, days_between

    try:
        if day is not None:
            if first is not None or last is not None:
                raise ExportError("give --day, or --from and --to, not both")
            return [LocalDay.parse(day)]
        if first is None or last is None:
            raise ExportError("give --day D, or --from D1 --to D2 (Vietnam local days, e.g. 2026-03-25)")
        return days_between(LocalDay.parse(first), LocalDay.parse(last))
    except ValueError as exc:
        raise ExportError(str(exc)) from exc


def _bulk(fmt: str, day, first, last, province, parameter, out: Path, settle_days: float, questdb_pg: str) -> None:
    from cli.rejects import RejectsError, pg_conninfo
    from store.bulk_export.export import ExportError as BulkError
    from store.bulk_export.export import export_day
    from store.bulk_export.publish import PublishError
    from store.errors import WarehouseUnavailable
    from store.queries import QueryError

    try:
        days = bulk_days(day, first, last)
        conninfo = pg_conninfo(questdb_pg)
        for d in days:
            result = export_day(
                conninfo,
                d,
                out,
                fmt,
                provinces=province or None,
                parameters=parameter or None,
                settle_days=settle_days,
            )
            state = "provisional" if result.provisional else "final"
            rows = sum(e["rows"] for e in result.written)
            typer.echo(
                f"{d}: {len(result.written)} {fmt} file{'s' if len(result.written) != 1 else ''}, {rows} rows,"
                f" {state} (generation {result.generation}, {result.kept} other files kept) -> {out / str(d)}",
                err=True,
            )
            if result.unknown_stations:
                typer.echo(
                    f"{d}: no province known for {', '.join(result.unknown_stations)}: under 'unknown'", err=True
                )
            for name in result.revised_final:
                typer.secho(f"warning: {d}: final file {name} changed; the manifest says what it supersedes", err=True)
            for name in result.withdrawn:
                typer.secho(f"warning: {d}: {name} has no rows any more; withdrawn (listed in the manifest)", err=True)
    except (ExportError, BulkError, PublishError, RejectsError, OSError) as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2) from None
    except (WarehouseUnavailable, QueryError) as exc:
        typer.secho(f"error: the warehouse cannot answer: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2) from None


_DAY = typer.Option(None, "--day", help="one Vietnam local day, e.g. 2026-03-25")
_FIRST = typer.Option(None, "--from", help="first local day (with --to; both included)")
_LAST = typer.Option(None, "--to", help="last local day")
_PROVINCE = typer.Option([], "--province", help="only this province code (repeat; 'unknown': no province known)")
_PARAMETER = typer.Option([], "--parameter", help="only this parameter symbol, e.g. PM2,5 (repeat)")
_OUT = typer.Option(..., "--out", help="folder of the downloads: <day>/ with the files and manifest.json")
_SETTLE = typer.Option(60.0, "--settle-days", help="days after a day ends until its files are final (default 60)")
_PG = typer.Option("127.0.0.1:8812", "--questdb-pg", help="QuestDB PostgreSQL-wire host:port")


@export_app.command("csv")
def export_csv_cmd(
    day: str | None = _DAY,
    first: str | None = _FIRST,
    last: str | None = _LAST,
    province: list[str] = _PROVINCE,
    parameter: list[str] = _PARAMETER,
    out: Path = _OUT,
    settle_days: float = _SETTLE,
    questdb_pg: str = _PG,
) -> None:
    """Daily CSV files of raw readings per province and parameter, with a manifest (sha256, rows, provisional)."""
    _bulk("csv", day, first, last, province, parameter, out, settle_days, questdb_pg)


@export_app.command("parquet")
def export_parquet_cmd(
    day: str | None = _DAY,
    first: str | None = _FIRST,
    last: str | None = _LAST,
    province: list[str] = _PROVINCE,
    parameter: list[str] = _PARAMETER,
    out: Path = _OUT,
    settle_days: float = _SETTLE,
    questdb_pg: str = _PG,
) -> None:
    """The same files as `export csv`, as Parquet (pyarrow)."""
    _bulk("parquet", day, first, last, province, parameter, out, settle_days, questdb_pg)
