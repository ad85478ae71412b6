"""Load analyzer profiles and station files, with errors that name FILE:LINE and a FIX.

    station_profiles/stations/x.yaml:12: devices[0].port: 70000: input should be less than or equal to 65535 (fix: ...)

Reading, the YAML traps and the translation of pydantic's errors into lines
are :mod:`configuration.yaml_source`'s, shared with the QC thresholds and the
station registry; this module knows where profiles live and how a station
file names them.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from configuration.errors import ConfigError, ConfigIssue, Loc
from configuration.yaml_source import YamlDocument, display_path, parse_yaml, read_yaml, short, validate
from station_profiles.profile_model import (
    PROTOCOLS,
    TRANSPORT_PROTOCOL,
    AnalyzerProfile,
    Profile,
    SerialAsciiProfile,
    StationConfig,
    is_profile_path,
)

__all__ = [
    "ConfigError",
    "ConfigIssue",
    "find_profile",
    "list_profiles",
    "load_profile",
    "load_profile_text",
    "load_station",
    "load_stations",
    "profile_path",
    "profile_search_path",
]

PACKAGE_DIR = Path(__file__).resolve().parent
PROFILES_DIR = PACKAGE_DIR / "profiles"
STATIONS_DIR = PACKAGE_DIR / "stations"
#: The machine's own profiles, searched after the folders given on the command line.
SYSTEM_PROFILES_DIR = Path("/etc/quantrac/profiles")
README = "station_profiles/README.md"

ProfileDirs = Sequence[Path | str] | Path | str | None


# --------------------------------------------------------------------------- #
# Public API
# --------------------------------------------------------------------------- #


def list_profiles(profiles_dir: Path | str | None = None) -> list[str]:
    d = Path(profiles_dir) if profiles_dir is not None else PROFILES_DIR
    return sorted(p.stem for p in d.glob("*.yaml"))


def profile_path(name_or_path: str | os.PathLike[str], profiles_dir: Path | str | None = None) -> Path:
    """A profile name ("demo-ambient-air") or a path to a YAML file -> the file's path."""
    s = os.fspath(name_or_path)
    if is_profile_path(s):
        return Path(s)
    return (Path(profiles_dir) if profiles_dir is not None else PROFILES_DIR) / f"{s}.yaml"


def profile_search_path(
    station_file: str | os.PathLike[str] | None = None,
    profiles_dirs: ProfileDirs = None,
    *,
    system_dir: Path | str | None = SYSTEM_PROFILES_DIR,
    builtin_dir: Path | str = PROFILES_DIR,
) -> list[Path]:
    """The folders a profile *name* is looked up in, in order, each once: the station file's folder,
    the ``profiles/`` folder beside the station file, ``profiles_dirs`` (``--profiles-dir``, in the
    order given), ``system_dir`` (/etc/quantrac/profiles) and the built-in ``builtin_dir``. Folders
    that do not exist are left out, except a ``profiles_dirs`` entry: a folder the operator named must
    exist (ConfigError)."""
    given = [Path(d) for d in _as_dirs(profiles_dirs)]
    missing = [d for d in given if not d.is_dir()]
    if missing:
        raise ConfigError(
            [
                ConfigIssue(
                    display_path(d),
                    0,
                    "",
                    "profiles folder not found" if not d.exists() else "is not a folder",
                    "check --profiles-dir: it names a folder holding <name>.yaml profile files",
                )
                for d in missing
            ]
        )
    candidates: list[Path] = []
    if station_file is not None:
        here = Path(station_file).parent
        candidates += [here, here / "profiles"]
    candidates += given
    if system_dir is not None:
        candidates.append(Path(system_dir))
    candidates.append(Path(builtin_dir))
    out: list[Path] = []
    seen: set[Path] = set()
    for d in candidates:
        key = d.resolve()
        if key not in seen and d.is_dir():
            seen.add(key)
            out.append(d)
    return out


def find_profile(name: str, search_path: Sequence[Path], *, besides: Path | None = None) -> list[Path]:
    """Every ``<name>.yaml`` in the search path, in its order, each file once (a symlink to a file
    already found is that file), leaving out ``besides`` (the station file itself). One is the
    answer; two or more are an error."""
    found: list[Path] = []
    seen = {besides.resolve()} if besides is not None else set()
    for d in search_path:
        candidate = d / f"{name}.yaml"
        if candidate.is_file() and candidate.resolve() not in seen:
            seen.add(candidate.resolve())
            found.append(candidate)
    return found


def load_profile(name_or_path: str | os.PathLike[str], profiles_dir: Path | str | None = None) -> Profile:
    """Load and check one analyzer profile (``protocol: modbus`` -> AnalyzerProfile,
    ``protocol: serial_ascii`` -> SerialAsciiProfile); a name is looked up in ``profiles_dir``
    (default: the built-in profiles). Raises :class:`ConfigError`."""
    return _profile_of(_read(profile_path(name_or_path, profiles_dir)))


def load_profile_text(raw: bytes, path: str | os.PathLike[str]) -> Profile:
    """Check a profile's bytes as if read from ``path`` (which names it in errors and gives the stem
    its ``profile:`` must equal): what ``quantrac profile new`` runs on a draft before writing it."""
    return _profile_of(parse_yaml(raw, path, readme=README, tag_keys=("transport",)))


def _profile_of(doc: YamlDocument) -> Profile:
    path = doc.path
    data = doc.data
    protocol = data.get("protocol", "modbus") if isinstance(data, dict) else "modbus"
    if protocol not in PROTOCOLS:
        close = difflib.get_close_matches(str(protocol), PROTOCOLS, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise ConfigError(
            [
                doc.issue(
                    ("protocol",),
                    f"{short(protocol)} is not one of {', '.join(PROTOCOLS)}",
                    f"{hint}use one of {', '.join(PROTOCOLS)}",
                )
            ]
        )
    cls: type[BaseModel] = SerialAsciiProfile if protocol == "serial_ascii" else AnalyzerProfile
    profile = _validate(cls, doc)
    if profile.profile != path.stem:
        raise ConfigError(
            [
                doc.issue(
                    ("profile",),
                    f"profile {profile.profile!r} does not match the file name {path.name!r}",
                    f"rename the file to {profile.profile}.yaml or set profile: {path.stem}",
                )
            ]
        )
    return profile


def load_station(
    path: str | os.PathLike[str],
    profiles_dirs: ProfileDirs = None,
    *,
    system_dir: Path | str | None = SYSTEM_PROFILES_DIR,
    builtin_dir: Path | str = PROFILES_DIR,
) -> StationConfig:
    """Load a station file and resolve every device's profile. ``profile:`` is a path (relative to
    the station file's folder, or absolute) or a name, looked up in :func:`profile_search_path`
    (``profiles_dirs`` are the ``--profiles-dir`` folders); a name found in two folders is an error.
    In the station returned every device's ``profile`` is the name of the profile it resolved to, and
    ``profile_file(device_id)`` says which file. Raises :class:`ConfigError` listing the problems of
    the station file and of the profiles it uses."""
    path = Path(path)
    doc = _read(path)
    station = _validate(StationConfig, doc)
    search = profile_search_path(path, profiles_dirs, system_dir=system_dir, builtin_dir=builtin_dir)
    issues: list[ConfigIssue] = []
    by_reference: dict[str, Profile] = {}
    profiles: dict[str, Profile] = {}
    files: dict[str, Path] = {}  # profile name -> the file it came from
    first_device: dict[str, int] = {}  # profile name -> the first device using it
    for i, device in enumerate(station.devices):
        reference = device.profile
        if reference in by_reference:
            continue
        ppath = _resolve_reference(reference, path, search, doc, ("devices", i, "profile"), issues)
        if ppath is None:
            continue
        try:
            profile = load_profile(ppath)
        except ConfigError as exc:
            issues.extend(exc.issues)
            continue
        name = profile.profile
        if name in files and files[name].resolve() != ppath.resolve():
            issues.append(
                doc.issue(
                    ("devices", i, "profile"),
                    (
                        f"profile name {name!r} is used by two files: {display_path(files[name])}"
                        f" (devices[{first_device[name]}]) and {display_path(ppath)}"
                    ),
                    "a station's profiles need distinct names: rename one file and its profile: key",
                )
            )
            continue
        by_reference[reference] = profile
        profiles[name] = profile
        files.setdefault(name, ppath)
        first_device.setdefault(name, i)
    for i, device in enumerate(station.devices):
        profile = by_reference.get(device.profile)
        if profile is None:
            continue
        needed = TRANSPORT_PROTOCOL[device.transport]
        if profile.protocol != needed:
            fitting = [t for t, p in TRANSPORT_PROTOCOL.items() if p == profile.protocol]
            issues.append(
                doc.issue(
                    ("devices", i, "profile"),
                    (
                        f"profile {device.profile!r} speaks {profile.protocol} "
                        f"but transport {device.transport} needs a {needed} profile"
                    ),
                    f"use a {needed} profile here, or transport: {' / '.join(fitting)}",
                )
            )
    if not issues:
        renamed = {
            d.id: {"profile": by_reference[d.profile].profile}
            for d in station.devices
            if by_reference[d.profile].profile != d.profile
        }
        if renamed:
            station = station.with_device_updates(renamed)
    issues.extend(_tt10_parameter_clashes(station, profiles, doc))
    if issues:
        raise ConfigError(issues)
    return station.with_profiles(profiles, {name: str(f) for name, f in files.items()})


def _as_dirs(profiles_dirs: ProfileDirs) -> list[Path | str]:
    if profiles_dirs is None:
        return []
    if isinstance(profiles_dirs, (str, os.PathLike)):
        return [profiles_dirs]
    return list(profiles_dirs)


def _resolve_reference(
    reference: str, station_file: Path, search: list[Path], doc: YamlDocument, loc: Loc, issues: list[ConfigIssue]
) -> Path | None:
    """A device's ``profile:`` -> the profile file, or None with the problem added to ``issues``."""
    if is_profile_path(reference):
        ppath = Path(reference)
        if not ppath.is_absolute():
            ppath = (station_file.parent / ppath).resolve()  # "../models/x.yaml" as the system reads it
        if not ppath.is_file():
            issues.append(
                doc.issue(
                    loc,
                    f"profile file {display_path(ppath)} not found",
                    (
                        "check the path; a relative path starts at the station file's folder"
                        f" ({display_path(station_file.parent) or '.'}), or write the absolute path"
                    ),
                )
            )
            return None
        return ppath
    found = find_profile(reference, search, besides=station_file)
    if len(found) > 1:
        issues.append(
            doc.issue(
                loc,
                f"profile {reference!r} is found twice in the search path: {' and '.join(map(display_path, found))}",
                (
                    "keep one file, or rename one (the file and its profile: key), or name the file by path"
                    f" (profile: {found[0].resolve()})"
                ),
            )
        )
        return None
    if not found:
        own = station_file.resolve()
        available = sorted({p.stem for d in search for p in d.glob("*.yaml") if p.resolve() != own})
        close = difflib.get_close_matches(reference, available, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        folders = ", ".join(display_path(d) for d in search)
        issues.append(
            doc.issue(
                loc,
                f"no analyzer profile {reference!r} in {folders}",
                (
                    f"{hint}available: {', '.join(available) or '(none)'}; or put {reference}.yaml beside the"
                    " station file, name its folder with --profiles-dir, or write its path"
                    " (profile: path/to/model.yaml)"
                ),
            )
        )
        return None
    return found[0]


def _tt10_parameter_clashes(station: StationConfig, profiles: dict[str, Any], doc: YamlDocument) -> list[ConfigIssue]:
    """A TT10 file has one line per parameter and time: two devices sending one parameter cannot share it."""
    issues = []
    for i, target in enumerate(station.tt10_out):
        owner: dict[str, str] = {}
        for device in station.devices:
            profile = profiles.get(device.profile)
            if profile is None or (target.devices and device.id not in target.devices):
                continue
            for value in profile.values:
                first = owner.setdefault(value.parameter, device.id)
                if first != device.id:
                    issues.append(
                        doc.issue(
                            ("tt10_out", i, "name"),
                            f"parameter {value.parameter!r} comes from devices {first} and {device.id}",
                            f"a TT10 file has one line per parameter: list the devices to send (devices: [{first}])",
                        )
                    )
    return issues


def load_stations(stations_dir: Path | str | None = None, profiles_dirs: ProfileDirs = None) -> list[StationConfig]:
    d = Path(stations_dir) if stations_dir is not None else STATIONS_DIR
    return [load_station(p, profiles_dirs) for p in sorted(d.glob("*.yaml"))]


def _read(path: Path) -> YamlDocument:
    return read_yaml(path, readme=README, tag_keys=("transport",))


def _validate(cls: type[BaseModel], doc: YamlDocument) -> Any:
    return validate(cls, doc, explain=_explain)


def _explain(err: dict[str, Any], root: type[BaseModel], loc: Loc, data: Any, readme: str) -> tuple[str, str] | None:
    """The station file's own wording; everything else is configuration.yaml_source's."""
    kind = err["type"]
    value = err.get("input")
    last = loc[-1] if loc else ""
    if kind == "union_tag_not_found":
        return "required key 'transport' is missing", "add `transport: modbus_tcp` (or modbus_rtu, serial_ascii)"
    if kind == "string_pattern_mismatch" and last == "port":
        return (
            f"port {short(value)} is not a device path",
            (
                "write the full path, preferably the stable one: /dev/serial/by-id/usb-...-if00-port0 "
                "(ls -l /dev/serial/by-id/)"
            ),
        )
    if kind == "string_pattern_mismatch" and last == "parameter":
        return (
            f"parameter {short(value)} is not a regulation symbol",
            'use the symbol without spaces, e.g. "PM2,5", COD, NH4',
        )
    if kind in ("too_short", "too_long") and last == "range":
        return f"range {short(value)} must be two numbers", "write range: [low, high]"
    return None
