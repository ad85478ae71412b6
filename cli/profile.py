"""`quantrac profile check FILE` and `quantrac profile new --from-csv MAP.csv`: a technician's own
analyzer profiles, checked alone and drafted from the manufacturer's register map.

``check`` loads one profile exactly as the agent would (station_profiles.loader.load_profile) and
prints either every problem as FILE:LINE: path: message (fix: ...) with exit code 1, or a short
summary of what it defines (values, addresses, types, status) with exit code 0, plus a note when
another file of the same name sits in the search path (a station naming it would be refused).

``new`` drafts a profile from a CSV table (station_profiles.register_map); the draft is checked
before it is written, and refused rows are reported at the CSV's lines (exit 1).
"""

from __future__ import annotations

from pathlib import Path

import typer

from configuration.errors import ConfigError
from configuration.yaml_source import display_path
from station_profiles.loader import SYSTEM_PROFILES_DIR, find_profile, load_profile, profile_search_path
from station_profiles.profile_model import AnalyzerProfile, SerialAsciiProfile
from station_profiles.register_map import ADDRESS_BASES, draft_profile, profile_name_for
from vocabulary.modbus import TABLES

profile_app = typer.Typer(
    help="Analyzer profiles: check one, or draft one from a register map table.", no_args_is_help=True
)


def _num(x: float) -> str:
    return f"{x:g}"


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]


def summary(profile: AnalyzerProfile | SerialAsciiProfile, path: Path) -> list[str]:
    """What a profile defines, for a person."""
    lines = [
        f"{display_path(path)}: OK",
        f"profile {profile.profile}: {profile.manufacturer} {profile.model}".rstrip()
        + f" (protocol {profile.protocol}"
        + (f", address_base {profile.address_base})" if isinstance(profile, AnalyzerProfile) else ")"),
        f"source: {profile.source}",
        f"{len(profile.values)} value{'s' if len(profile.values) != 1 else ''}:",
    ]
    if isinstance(profile, AnalyzerProfile):
        rows = [["parameter", "table", "address", "wire", "type", "order", "scale", "offset", "unit", "range"]]
        for v in profile.values:
            rows.append(
                [
                    v.parameter,
                    v.table,
                    str(v.address),
                    str(v.wire_address),
                    v.type,
                    v.word_order if v.width > 1 else "-",
                    "loop" if v.loop else _num(v.scale),
                    "-" if v.loop else _num(v.offset),
                    v.unit or '""',
                    f"{_num(v.range[0])}..{_num(v.range[1])}" if v.range else "-",
                ]
            )
        lines += _table(rows)
        st = profile.status
        if st is None:
            lines.append("status: none (every reading is 00 unless the analyzer does not answer)")
        else:
            parts = []
            if st.has_register:
                parts.append(f"code register {st.table} {st.address} ({st.type}, {len(st.codes)} codes)")
            if st.bits:
                parts.append(f"{len(st.bits)} status bit{'s' if len(st.bits) != 1 else ''}")
            lines.append("status: " + ", ".join(parts))
    else:
        rows = [["parameter", "field", "scale", "unit", "range"]]
        for v in profile.values:
            rows.append(
                [
                    v.parameter,
                    str(v.field),
                    _num(v.scale),
                    v.unit or '""',
                    f"{_num(v.range[0])}..{_num(v.range[1])}" if v.range else "-",
                ]
            )
        lines += _table(rows)
        lines.append(f"poll command: {profile.poll_command!r}")
    missing = [v.parameter for v in profile.values if v.range is None]
    if missing:
        lines.append(f"no measuring range (range: [low, high]) for: {', '.join(missing)}")
    return lines


@profile_app.command("check")
def check(
    file: Path = typer.Argument(..., help="the profile file (YAML), e.g. /etc/quantrac/profiles/acme-dust.yaml"),
    profiles_dir: list[Path] = typer.Option(
        [], "--profiles-dir", help="also look for another profile of the same name here (repeatable)"
    ),
) -> None:
    """Check one analyzer profile alone: problems as FILE:LINE (exit 1), or what it defines (exit 0)."""
    try:
        profile = load_profile(file.absolute())  # always this file, never a built-in profile of that name
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(code=1) from None
    for line in summary(profile, file):
        typer.echo(line)
    try:
        search = profile_search_path(None, profiles_dir)
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(code=2) from None
    others = [p for p in find_profile(profile.profile, search) if p.resolve() != file.resolve()]
    for other in others:
        typer.echo(
            f"note: another profile {profile.profile!r} is at {display_path(other)}; a station naming"
            f" {profile.profile!r} with both in its search path is refused: rename one, or name this file by path"
        )
    typer.echo(
        f"use it: profile: {profile.profile} in a station file, with this file beside the station file, in its"
        f" profiles/ folder, in a --profiles-dir folder or in {SYSTEM_PROFILES_DIR}; or profile: <path to this file>"
    )


@profile_app.command("new")
def new(
    from_csv: Path = typer.Option(..., "--from-csv", help="the register map table (CSV, UTF-8)"),
    out: Path | None = typer.Option(None, "--out", help="the profile file to write (default: print it)"),
    name: str | None = typer.Option(None, "--name", help="profile name (default: --out's stem, else the CSV's)"),
    manufacturer: str = typer.Option("", "--manufacturer", help="the analyzer's manufacturer"),
    model: str = typer.Option("", "--model", help="the analyzer model"),
    source: str = typer.Option("", "--source", help="the manual the map comes from: title, version, page"),
    table: str = typer.Option(
        "holding_register", "--table", help=f"table of rows the map gives none for: {', '.join(TABLES)}"
    ),
    address_base: str = typer.Option(
        "auto",
        "--address-base",
        help=f"how the map numbers addresses: {', '.join(ADDRESS_BASES)} (auto: 4xxxx when every address is a"
        " 1xxxx/3xxxx/4xxxx reference, else 0)",
    ),
    force: bool = typer.Option(False, "--force", help="replace --out if it exists"),
) -> None:
    """Draft a profile from a register map table (address, type, word order, scale, unit, symbol)."""
    if out is not None and name is not None and name != out.stem:
        _fail(f"--name {name} and --out {out.name} differ: the file name must be the profile's name ({name}.yaml)")
    if out is not None and out.exists() and not force:
        _fail(f"{display_path(out)} exists; choose another --out or add --force")
    profile_name = name or (out.stem if out is not None else profile_name_for(from_csv))
    try:
        draft = draft_profile(
            from_csv,
            profile_name,
            manufacturer=manufacturer,
            model=model,
            source=source,
            table=table,
            address_base=address_base,
        )
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(code=1) from None
    said = f"{draft.rows} value{'s' if draft.rows != 1 else ''} from {display_path(from_csv)}"
    if draft.skipped:
        said += f"; left out line {', '.join(map(str, draft.skipped))} (no symbol)"
    if draft.ignored_columns:
        said += f"; columns not read: {', '.join(draft.ignored_columns)}"
    if out is None:
        typer.echo(draft.text, nl=False)
        typer.echo(f"drafted profile {profile_name}: {said}; save it as {profile_name}.yaml", err=True)
        return
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp")
        tmp.write_text(draft.text, encoding="utf-8")
        tmp.replace(out)
    except OSError as exc:
        _fail(f"cannot write {display_path(out)}: {exc}")
    typer.echo(f"wrote {display_path(out)}: profile {profile_name}, {said}")
    typer.echo(f"next: read the VERIFY comments, then quantrac profile check {display_path(out)}")


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)
