"""``quantrac agent doctor STATION_FILE``: probe every device once and print what came back.

Wired into cli/main.py as::

    @agent_app.command("doctor")
    def agent_doctor(...): raise typer.Exit(code=run_doctor(...))

Exit status: 0 when every value read fine, 1 when something needs a look
(the table says what), 2 for a station file that does not load.

Logging is the caller's business (the typer command calls
``configure_logging`` first, like every other command): configuring structlog
here would rebind it to whatever stderr is at that moment for the whole
process.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Sequence
from pathlib import Path


def run_doctor(
    station_file: Path,
    *,
    devices: list[str] | None = None,
    profiles_dirs: Sequence[Path] | Path | None = None,
    echo: Callable[[str], None] = print,
) -> int:
    from edge_agent.doctor import probe_station, render
    from station_profiles.loader import ConfigError, load_station

    try:
        station = load_station(station_file, profiles_dirs)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    unknown = sorted(set(devices or ()) - {d.id for d in station.devices})
    if unknown:
        print(
            (
                f"error: station {station.id} has no device(s) {', '.join(unknown)}; "
                f"it has {', '.join(d.id for d in station.devices)}"
            ),
            file=sys.stderr,
        )
        return 2
    results = asyncio.run(probe_station(station, devices))
    echo(profiles_used(station, devices) + "\n\n" + render(results))
    return 0 if all(r.ok for r in results) else 1


def profiles_used(station, devices: list[str] | None = None) -> str:
    """Which file each profile came from: with a search path, the technician must see which one won."""
    from configuration.yaml_source import display_path

    users: dict[str, list[str]] = {}
    for d in station.devices:
        if not devices or d.id in devices:
            users.setdefault(d.profile, []).append(d.id)
    width = max(map(len, users))
    lines = ["profiles used:"]
    for name, ids in users.items():
        file = station.profile_file(ids[0])
        lines.append(
            f"  {name:<{width}}  {display_path(Path(file)) if file else '(given in code)'}  ({', '.join(ids)})"
        )
    return "\n".join(lines)
