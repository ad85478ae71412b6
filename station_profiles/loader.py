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
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from configuration.errors import ConfigError, ConfigIssue, Loc
from configuration.yaml_source import YamlDocument, display_path, read_yaml, short, validate
from station_profiles.profile_model import (
    PROTOCOLS,
    TRANSPORT_PROTOCOL,
    AnalyzerProfile,
    Profile,
    SerialAsciiProfile,
    StationConfig,
)

__all__ = [
    "ConfigError",
    "ConfigIssue",
    "list_profiles",
    "load_profile",
    "load_station",
    "load_stations",
    "profile_path",
]

PACKAGE_DIR = Path(__file__).resolve().parent
PROFILES_DIR = PACKAGE_DIR / "profiles"
STATIONS_DIR = PACKAGE_DIR / "stations"
README = "station_profiles/README.md"


# --------------------------------------------------------------------------- #
# Public API
# --------------------------------------------------------------------------- #


def list_profiles(profiles_dir: Path | str | None = None) -> list[str]:
    d = Path(profiles_dir) if profiles_dir is not None else PROFILES_DIR
    return sorted(p.stem for p in d.glob("*.yaml"))


def profile_path(name_or_path: str | os.PathLike[str], profiles_dir: Path | str | None = None) -> Path:
    """A profile name ("demo-ambient-air") or a path to a YAML file -> the file's path."""
    s = os.fspath(name_or_path)
    p = Path(s)
    if p.suffix in (".yaml", ".yml") or os.sep in s or "/" in s:
        return p
    return (Path(profiles_dir) if profiles_dir is not None else PROFILES_DIR) / f"{s}.yaml"


def load_profile(name_or_path: str | os.PathLike[str], profiles_dir: Path | str | None = None) -> Profile:
    """Load and check one analyzer profile (``protocol: modbus`` -> AnalyzerProfile,
    ``protocol: serial_ascii`` -> SerialAsciiProfile). Raises :class:`ConfigError`."""
    path = profile_path(name_or_path, profiles_dir)
    doc = _read(path)
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


def load_station(path: str | os.PathLike[str], profiles_dir: Path | str | None = None) -> StationConfig:
    """Load a station file and resolve every device's profile (from ``profiles_dir``,
    default station_profiles/profiles/). Raises :class:`ConfigError` listing the
    problems of the station file and of the profiles it uses."""
    path = Path(path)
    doc = _read(path)
    station = _validate(StationConfig, doc)
    pdir = Path(profiles_dir) if profiles_dir is not None else PROFILES_DIR
    issues: list[ConfigIssue] = []
    profiles: dict[str, AnalyzerProfile] = {}
    for i, device in enumerate(station.devices):
        name = device.profile
        if name in profiles:
            continue
        ppath = pdir / f"{name}.yaml"
        if not ppath.is_file():
            available = list_profiles(pdir)
            close = difflib.get_close_matches(name, available, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            issues.append(
                doc.issue(
                    ("devices", i, "profile"),
                    f"no analyzer profile {name!r} in {display_path(pdir)}",
                    f"{hint}available: {', '.join(available) or '(none)'}; or add {display_path(ppath)}",
                )
            )
            continue
        try:
            profiles[name] = load_profile(ppath)
        except ConfigError as exc:
            issues.extend(exc.issues)
    for i, device in enumerate(station.devices):
        profile = profiles.get(device.profile)
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
    issues.extend(_tt10_parameter_clashes(station, profiles, doc))
    if issues:
        raise ConfigError(issues)
    return station.with_profiles(profiles)


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


def load_stations(
    stations_dir: Path | str | None = None, profiles_dir: Path | str | None = None
) -> list[StationConfig]:
    d = Path(stations_dir) if stations_dir is not None else STATIONS_DIR
    return [load_station(p, profiles_dir) for p in sorted(d.glob("*.yaml"))]


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
