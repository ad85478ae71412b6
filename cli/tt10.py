"""`quantrac tt10 check FILE...`: what a TT10 file says, line by line, for a province clerk or a technician.

Each line is shown as read (parameter, value, unit, the time in Vietnam and in
UTC, the status and its meaning) or as refused (its raw text and why), then
what concerns the whole file and a verdict. ``--json`` prints the same as one
JSON object per line, for scripts. The exit code is 1 when anything was refused.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path

import typer

from broker_bridge.tt10 import (
    DEFAULT_NAME_TIME_TOLERANCE_S,
    MappingError,
    Tt10File,
    Tt10Reading,
    describe_time,
    format_value,
    load_mapping,
    read_path,
)
from broker_bridge.tt10.local_time import local_datetime, utc_datetime
from vocabulary.status import STATUS_MEANING

tt10_app = typer.Typer(
    help="TT10 TXT files (TT 10/2021, Phụ lục 15): check what a station sends.", no_args_is_help=True
)

Echo = Callable[[str], None]


@tt10_app.command("check")
def check(
    files: list[Path] = typer.Argument(..., help="TT10 .txt files, e.g. HN_BKHN_KHIKXQ_20260325000500.txt"),
    as_json: bool = typer.Option(False, "--json", help="one JSON object per output line instead of text"),
    map_file: Path | None = typer.Option(
        None,
        "--map",
        help="parameter mapping (YAML 'name as sent: symbol'), see broker_bridge/tt10/parameter_map.sample.yaml",
    ),
    name_time_tolerance_s: int = typer.Option(
        DEFAULT_NAME_TIME_TOLERANCE_S,
        "--name-time-tolerance",
        min=0,
        help="seconds the name's time may differ from the lines'",
    ),
) -> None:
    """Read TT10 files and say, per line, what was read or why it was refused. Exit code 1 if anything was refused."""
    mapping: dict[str, str] = {}
    if map_file is not None:
        try:
            mapping = load_mapping(map_file)
        except MappingError as exc:
            typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
            raise typer.Exit(code=2) from None
    ok = check_files(
        files, mapping=mapping, as_json=as_json, name_time_tolerance_s=name_time_tolerance_s, echo=typer.echo
    )
    raise typer.Exit(code=0 if ok else 1)


def check_files(
    paths: list[Path], *, mapping: Mapping[str, str], as_json: bool, name_time_tolerance_s: int, echo: Echo
) -> bool:
    """Print every file's report; True when every line of every file was read."""
    all_clean = True
    for path in paths:
        try:
            parsed = read_path(path, mapping=mapping, name_time_tolerance_s=name_time_tolerance_s)
        except OSError as exc:
            all_clean = False
            if as_json:
                echo(
                    _dumps(
                        {
                            "kind": "file_error",
                            "file": str(path),
                            "reason": f"cannot read the file: {exc.strerror or exc}",
                        }
                    )
                )
            else:
                echo(f"== {path}\n   CANNOT READ: {exc.strerror or exc}\n")
            continue
        all_clean &= parsed.clean
        for line in (json_lines if as_json else text_lines)(str(path), parsed):
            echo(line)
    return all_clean


# --------------------------------------------------------------------------- JSON


def json_lines(file: str, parsed: Tt10File) -> list[str]:
    out: list[dict] = []
    for event in _in_line_order(parsed):
        if isinstance(event, Tt10Reading):
            local, utc = describe_time(event.ts_ns)
            out.append(
                {
                    "kind": "reading",
                    "file": file,
                    "line": event.line,
                    "station": parsed.station,
                    "parameter": event.parameter,
                    "value": event.value,
                    "unit": event.unit,
                    "status": event.status,
                    "ts": utc,
                    "local_time": local,
                    "sent_as": event.sent_as,
                    "notes": list(event.notes),
                }
            )
        else:
            out.append(
                {
                    "kind": "refused",
                    "file": file,
                    "line": event.line,
                    "raw": event.raw,
                    "reason": event.reason,
                    "truncated": event.truncated,
                }
            )
    for finding in parsed.findings:
        out.append(
            {
                "kind": "finding",
                "file": file,
                "code": finding.code,
                "severity": finding.severity,
                "detail": finding.detail,
                "line": finding.line,
            }
        )
    out.append(
        {
            "kind": "file",
            "file": file,
            "station": parsed.station,
            "name_time": ts_utc(parsed.file_name.ts_ns) if parsed.file_name else None,
            "readings": len(parsed.readings),
            "refused": len(parsed.refused),
            "complete": parsed.complete,
            "incomplete_reasons": list(parsed.incomplete_reasons),
            "clean": parsed.clean,
            "sha256": parsed.sha256,
        }
    )
    return [_dumps(o) for o in out]


def ts_utc(ts_ns: int) -> str:
    return describe_time(ts_ns)[1]


def _dumps(obj) -> str:
    """JSON without escaping Vietnamese; for a raw line, TAB shows as \\t so a clerk sees where fields split."""
    return json.dumps(obj, ensure_ascii=False)


# --------------------------------------------------------------------------- text


def _vn(ts_ns: int) -> str:
    return local_datetime(ts_ns).strftime("%d/%m/%Y %H:%M:%S") + " giờ VN"


def _utc(ts_ns: int) -> str:
    return utc_datetime(ts_ns).strftime("%Y-%m-%d %H:%M:%S") + " UTC"


def text_lines(file: str, parsed: Tt10File) -> list[str]:
    out = [f"== {file}"]
    name = parsed.file_name
    if name is not None:
        parts = f" (tỉnh {name.province}, cơ sở {name.facility}, trạm {name.station})" if name.province else ""
        out.append(f"   station {name.prefix}{parts}; file time {_vn(name.ts_ns)} = {_utc(name.ts_ns)}")
    width = len(str(parsed.lines or 1))
    for event in _in_line_order(parsed):
        label = f"   line {event.line:>{width}}"
        if isinstance(event, Tt10Reading):
            value = "no value (missing)" if event.value is None else format_value(event.value)
            unit = f" {event.unit}" if event.unit else ""
            vn, en = STATUS_MEANING[event.status]
            out.append(
                f"{label}  read     {event.parameter} = {value}{unit} | "
                f"{_vn(event.ts_ns)} = {_utc(event.ts_ns)} | {event.status} {vn} ({en})"
            )
            out.extend(f"{' ' * len(label)}           ({note})" for note in event.notes)
        else:
            out.append(f"{label}  {'CUT OFF' if event.truncated else 'REFUSED'}  {_dumps(event.raw)}")
            out.append(f"{' ' * len(label)}           why: {event.reason}")
    for finding in parsed.findings:
        out.append(f"   {finding.severity}: {finding.detail}")
    verdict = (
        "complete"
        if parsed.complete
        else "INCOMPLETE (hold it until it is sent again): " + "; ".join(parsed.incomplete_reasons)
    )
    refused = f"{len(parsed.refused)} line{'s' if len(parsed.refused) != 1 else ''} refused"
    out.append(
        f"   RESULT: {len(parsed.readings)} reading{'s' if len(parsed.readings) != 1 else ''} read, "
        f"{refused}; file {verdict}"
    )
    out.append("")
    return out


def _in_line_order(parsed: Tt10File) -> list:
    return sorted([*parsed.readings, *parsed.refused], key=lambda e: e.line)
