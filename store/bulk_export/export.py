"""One day's bulk files from the warehouse: which files, their rows, provisional or final, the manifest.

``export_day`` is the whole job for one Vietnam local day and one format; ``quantrac export csv|parquet``
calls it for each day asked. The rules (what makes a day final, what a re-export does) are in README.md.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from store.bulk_export import publish
from store.bulk_export.formats import COLUMNS, ENCODERS
from store.bulk_export.layout import DAY_NS, FORMATS, UNKNOWN_PROVINCE, LocalDay, file_name, iso_local, iso_utc
from store.export_queries import day_series, export_reader, open_gaps_seen_since, station_provinces

KIND = "readings"
MANIFEST_VERSION = 1
#: The edge keeps the regulation's 60 days (README: "The regulation's 60 days on disk"): after that
#: no station is bound to still hold a day's readings, so no backlog or re-send of it can be counted on.
DEFAULT_SETTLE_DAYS = 60.0
UNKNOWN_WHY = (
    "the warehouse has no station_metadata row naming a province for these stations (a warehouse older than"
    " the table, or a station the registry does not describe yet); their files are under province 'unknown'"
)


class ExportError(RuntimeError):
    """A bad argument or an output that cannot be written, said so an operator can act."""


@dataclass
class DayExport:
    day: LocalDay
    fmt: str
    generation: int
    provisional: bool
    written: list[dict] = field(default_factory=list)  # the manifest entries of the files this export wrote
    kept: int = 0  # files outside this export's scope carried over unchanged
    revised_final: list[str] = field(default_factory=list)  # final files whose content changed: said loudly
    withdrawn: list[str] = field(default_factory=list)  # files of the scope that no longer have rows
    unknown_stations: list[str] = field(default_factory=list)


def export_day(
    conninfo: str,
    day: LocalDay,
    out: Path,
    fmt: str,
    *,
    provinces: Collection[str] | None = None,
    parameters: Collection[str] | None = None,
    settle_days: float = DEFAULT_SETTLE_DAYS,
    now_ns: int | None = None,
) -> DayExport:
    """Write (or re-write) ``day``'s ``fmt`` files under ``out`` for the provinces and parameters asked
    (None: all), and publish them with the day's manifest in one swap (``publish``)."""
    if fmt not in FORMATS:
        raise ExportError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    if settle_days < 0:
        raise ExportError(f"--settle-days {settle_days} is negative")
    now_ns = time.time_ns() if now_ns is None else now_ns
    final_after_ns = day.end_ns + int(settle_days * DAY_NS)
    in_scope = _scope(fmt, provinces, parameters)

    known = station_provinces(conninfo)
    groups: dict[tuple[str, str], list[str]] = {}
    for station, parameter in day_series(conninfo, day.start_ns, day.end_ns):
        province = known.get(station) or UNKNOWN_PROVINCE
        if in_scope({"format": fmt, "province": province, "parameter": parameter}):
            groups.setdefault((province, parameter), []).append(station)
    stations = sorted({s for members in groups.values() for s in members})
    gaps = open_gaps_seen_since(conninfo, stations, day.start_ns)

    with publish.locked(out), export_reader(conninfo) as reader:
        current = publish.current_generation(out, day)
        old = publish.read_manifest(current[1]) if current else {"files": [], "withdrawn": []}
        old_by_path = {entry["path"]: entry for entry in old["files"]}
        generation, folder = publish.new_generation(out, day, current[0] if current else None)
        result = DayExport(day, fmt, generation, provisional=False)
        entries = []
        for entry in old["files"]:
            if not in_scope(entry):
                publish.keep_file(current[1], folder, entry["path"])
                entries.append(entry)
                result.kept += 1
        encode = ENCODERS[fmt]
        for (province, parameter), members in sorted(groups.items()):
            name = file_name(KIND, day, province, parameter, fmt)
            data, rows = encode(province, reader.rows(parameter, members, day.start_ns, day.end_ns))
            publish.write_file(folder, name, data)
            reasons = _provisional_reasons(now_ns, final_after_ns, settle_days, members, gaps)
            entry = {
                "path": name,
                "format": fmt,
                "kind": KIND,
                "day": str(day),
                "province": province,
                "parameter": parameter,
                "rows": rows,
                "bytes": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
                "stations": members,
                "provisional": bool(reasons),
                "provisional_reasons": reasons,
                "exported_at_utc": iso_utc(now_ns),
            }
            before = old_by_path.pop(name, None)
            if before is not None and not before["provisional"] and before["sha256"] == entry["sha256"] and not reasons:
                entry = before  # final and unchanged: its entry (when it was exported) stays as it was
            elif before is not None and not before["provisional"]:
                # A final file must not change silently: the manifest keeps what it replaced.
                entry["supersedes"] = {k: before[k] for k in ("sha256", "rows", "exported_at_utc")}
                result.revised_final.append(name)
            entries.append(entry)
            result.written.append(entry)
        withdrawn = list(old.get("withdrawn", []))
        for name, before in old_by_path.items():
            if in_scope(before):  # asked for again, and no row of it is left
                withdrawn.append(
                    {
                        **{k: before[k] for k in ("path", "sha256", "rows", "provisional")},
                        "withdrawn_at_utc": iso_utc(now_ns),
                    }
                )
                result.withdrawn.append(name)
        entries.sort(key=lambda e: (e["province"], e["parameter"], e["format"]))
        result.provisional = now_ns < final_after_ns or any(e["provisional"] for e in entries)
        result.unknown_stations = sorted(
            {s for e in entries if e["province"] == UNKNOWN_PROVINCE for s in e["stations"]}
        )
        manifest = _manifest(day, generation, now_ns, final_after_ns, settle_days, result, entries, withdrawn)
        publish.write_manifest(folder, manifest)
        publish.swap(out, day, folder)
    return result


def _scope(fmt: str, provinces: Collection[str] | None, parameters: Collection[str] | None):
    wanted_provinces = None if provinces is None else set(provinces)
    wanted_parameters = None if parameters is None else set(parameters)

    def in_scope(entry: dict) -> bool:
        return (
            entry["format"] == fmt
            and (wanted_provinces is None or entry["province"] in wanted_provinces)
            and (wanted_parameters is None or entry["parameter"] in wanted_parameters)
        )

    return in_scope


def _provisional_reasons(
    now_ns: int, final_after_ns: int, settle_days: float, stations: list[str], gaps: dict[str, list[tuple[int, int]]]
) -> list[str]:
    reasons = []
    if now_ns < final_after_ns:
        reasons.append(
            f"within the {settle_days:g}-day settle period: a backlog may still arrive"
            f" until {iso_local(final_after_ns)}"
        )
    for station in stations:
        for first, last in gaps.get(station, ()):
            reasons.append(
                f"{station}: batches {first}..{last} missing and still asked for"
                " (an open gap seen on or after the day began)"
            )
    return reasons


def _manifest(day, generation, now_ns, final_after_ns, settle_days, result, entries, withdrawn) -> dict:
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "kind": KIND,
        "day": str(day),
        "day_is": "the Vietnam local day (UTC+7), as the VN_AQI day: readings with start <= ts < end",
        "start_utc": iso_utc(day.start_ns),
        "end_utc": iso_utc(day.end_ns),
        "start_local": iso_local(day.start_ns),
        "end_local": iso_local(day.end_ns),
        "provisional": result.provisional,
        "settle_days": settle_days,
        "final_after_utc": iso_utc(final_after_ns),
        "final_after_local": iso_local(final_after_ns),
        "generation": generation,
        "exported_at_utc": iso_utc(now_ns),
        "columns": [{"name": name, "means": means} for name, means in COLUMNS],
        "files": entries,
        "withdrawn": withdrawn,
    }
    if result.unknown_stations:
        manifest["unknown_province"] = {"stations": result.unknown_stations, "why": UNKNOWN_WHY}
    return manifest
