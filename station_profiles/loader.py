"""Load analyzer profiles and station files, with errors that name FILE:LINE and a FIX.

    station_profiles/stations/x.yaml:12: devices[0].port: 70000: input should be less than or equal to 65535 (fix: ...)

The YAML is parsed twice: once into plain data for pydantic, once with
``yaml.compose`` into a node tree that remembers where every key and value
starts. Errors (pydantic's and the whole-document checks of
:mod:`station_profiles.profile_model`) carry a path such as
``("devices", 0, "port")`` which is walked through the node tree to find the
line.
"""

from __future__ import annotations

import difflib
import os
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from station_profiles.profile_model import (
    PROTOCOLS,
    TRANSPORT_PROTOCOL,
    AnalyzerProfile,
    Loc,
    Profile,
    SemanticErrors,
    SerialAsciiProfile,
    StationConfig,
    format_loc,
)

PACKAGE_DIR = Path(__file__).resolve().parent
PROFILES_DIR = PACKAGE_DIR / "profiles"
STATIONS_DIR = PACKAGE_DIR / "stations"
README = "station_profiles/README.md"


@dataclass(frozen=True)
class ConfigIssue:
    file: str
    line: int
    path: str
    message: str
    fix: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        path = f" {self.path}:" if self.path else ""
        return f"{where}:{path} {self.message} (fix: {self.fix})"


class ConfigError(ValueError):
    """A profile or station file is invalid. ``issues`` lists every problem found."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))


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
    data, node = _read_yaml(path)
    protocol = data.get("protocol", "modbus") if isinstance(data, dict) else "modbus"
    if protocol not in PROTOCOLS:
        close = difflib.get_close_matches(str(protocol), PROTOCOLS, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise ConfigError([_issue(path, node, ("protocol",), f"{_short(protocol)} is not one of {', '.join(PROTOCOLS)}", f"{hint}use one of {', '.join(PROTOCOLS)}")])
    cls: type[BaseModel] = SerialAsciiProfile if protocol == "serial_ascii" else AnalyzerProfile
    profile = _validate(cls, data, node, path)
    if profile.profile != path.stem:
        raise ConfigError([_issue(path, node, ("profile",), f"profile {profile.profile!r} does not match the file name {path.name!r}", f"rename the file to {profile.profile}.yaml or set profile: {path.stem}")])
    return profile


def load_station(path: str | os.PathLike[str], profiles_dir: Path | str | None = None) -> StationConfig:
    """Load a station file and resolve every device's profile (from ``profiles_dir``,
    default station_profiles/profiles/). Raises :class:`ConfigError` listing the
    problems of the station file and of the profiles it uses."""
    path = Path(path)
    data, node = _read_yaml(path)
    station = _validate(StationConfig, data, node, path)
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
            issues.append(_issue(path, node, ("devices", i, "profile"), f"no analyzer profile {name!r} in {_display(pdir)}", f"{hint}available: {', '.join(available) or '(none)'}; or add {_display(ppath)}"))
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
            issues.append(_issue(path, node, ("devices", i, "profile"), f"profile {device.profile!r} speaks {profile.protocol} but transport {device.transport} needs a {needed} profile", f"use a {needed} profile here, or transport: {' / '.join(fitting)}"))
    if issues:
        raise ConfigError(issues)
    return station.with_profiles(profiles)


def load_stations(stations_dir: Path | str | None = None, profiles_dir: Path | str | None = None) -> list[StationConfig]:
    d = Path(stations_dir) if stations_dir is not None else STATIONS_DIR
    return [load_station(p, profiles_dir) for p in sorted(d.glob("*.yaml"))]


# --------------------------------------------------------------------------- #
# YAML with line numbers
# --------------------------------------------------------------------------- #


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _read_yaml(path: Path) -> tuple[Any, Node | None]:
    shown = _display(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([ConfigIssue(shown, 0, "", "file not found", "check the path")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([ConfigIssue(shown, 0, "", f"cannot read: {exc}", "check the file")]) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        problem = " ".join(str(x) for x in (exc.context, exc.problem) if x)
        fix = "fix the YAML syntax (indentation, quotes, a missing ':')"
        if "sequence entries are not allowed" in problem:
            fix = 'a bare "-" starts a list item; put a value such as unit: "-" in quotes, or fix the indentation'
        raise ConfigError([ConfigIssue(shown, line, "", f"not valid YAML: {problem}", fix)]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([ConfigIssue(shown, 0, "", f"not valid YAML: {exc}", "fix the YAML syntax")]) from None
    if node is None or data is None:
        raise ConfigError([ConfigIssue(shown, 1, "", "the file is empty", f"see {README} for the layout")])
    dups = list(_duplicate_keys(node, ()))
    if dups:
        raise ConfigError([ConfigIssue(shown, line, format_loc(loc), f"duplicate key {key!r} (YAML would silently keep the last one)", "remove one of them") for loc, key, line in dups])
    return data, node


def _scalar_key(node: Node) -> Any:
    """A mapping key node -> the Python value SafeLoader gives it (NO -> False, 1 -> 1)."""
    if not isinstance(node, ScalarNode):
        return None
    try:
        return yaml.constructor.SafeConstructor().construct_object(node)
    except Exception:  # noqa: BLE001 - fall back to the raw text
        return node.value


def _duplicate_keys(node: Node, loc: Loc):
    if isinstance(node, MappingNode):
        seen: set[Any] = set()
        for k, v in node.value:
            key = _scalar_key(k)
            try:
                hashable = key in seen
            except TypeError:
                hashable = False
            if hashable:
                yield loc, key, k.start_mark.line + 1
            else:
                try:
                    seen.add(key)
                except TypeError:
                    pass
            yield from _duplicate_keys(v, loc + (key,) if isinstance(key, (str, int)) else loc)
    elif isinstance(node, SequenceNode):
        for i, item in enumerate(node.value):
            yield from _duplicate_keys(item, loc + (i,))


def _locate(node: Node | None, loc: Loc) -> tuple[int, Loc]:
    """Walk ``loc`` through the node tree -> (line of the deepest node found, loc
    without pydantic's union tags and member names)."""
    if node is None:
        return 0, loc
    line = node.start_mark.line + 1
    clean: list[str | int] = []
    cur: Node | None = node
    parts = list(loc)
    while parts:
        part = parts.pop(0)
        if part == "[key]":
            break
        if isinstance(cur, MappingNode):
            hit = None
            for k, v in cur.value:
                key = _scalar_key(k)
                if key == part or (not isinstance(key, bool) and str(key) == str(part)):
                    hit = (k, v)
                    break
            if hit is None:
                tags = {str(_scalar_key(v)) for k, v in cur.value if _scalar_key(k) == "transport" and isinstance(v, ScalarNode)}
                if isinstance(part, str) and part in tags:
                    continue  # pydantic's discriminated-union tag, not a key
                clean.append(part)  # a missing key: point at the mapping
                clean.extend(p for p in parts if p != "[key]" and not _is_member_name(p))
                break
            clean.append(part)
            line = hit[0].start_mark.line + 1
            cur = hit[1]
        elif isinstance(cur, SequenceNode) and isinstance(part, int):
            if not 0 <= part < len(cur.value):
                clean.append(part)
                break
            clean.append(part)
            cur = cur.value[part]
            line = cur.start_mark.line + 1
        else:
            break  # a scalar: the rest are pydantic member names ("int", "str", ...)
    return line, tuple(clean)


def _is_member_name(part: str | int) -> bool:
    return isinstance(part, str) and (part in {"int", "str", "float", "bool", "none", "list", "tuple", "dict"} or "[" in part)


def _issue(path: Path, node: Node | None, loc: Loc, message: str, fix: str) -> ConfigIssue:
    line, clean = _locate(node, loc)
    return ConfigIssue(_display(path), line, format_loc(clean), message, fix)


# --------------------------------------------------------------------------- #
# Validation and error translation
# --------------------------------------------------------------------------- #

M = typing.TypeVar("M", bound=BaseModel)


def _validate(cls: type[M], data: Any, node: Node | None, path: Path) -> M:
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        issues: list[ConfigIssue] = []
        seen: set[tuple[int, str]] = set()
        for err in exc.errors(include_url=False):
            loc = tuple(err["loc"])
            if err["type"] == "union_tag_invalid":
                loc += (str((err.get("ctx") or {}).get("discriminator", "transport")).strip("'"),)
            line, clean = _locate(node, loc)
            message, fix = _explain(err, cls, clean, data)
            key = (line, format_loc(clean))
            if key in seen:  # one problem reported once (unions give one error per member)
                continue
            seen.add(key)
            issues.append(ConfigIssue(_display(path), line, format_loc(clean), message, fix))
        raise ConfigError(issues) from None
    except SemanticErrors as exc:
        raise ConfigError([_issue(path, node, i.loc, i.message, i.fix) for i in exc.issues]) from None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _expected(ctx: dict[str, Any]) -> str:
    return str(ctx.get("expected", "")).replace("'", "").replace(" or ", ", ")


def _explain(err: dict[str, Any], root: type[BaseModel], loc: Loc, data: Any) -> tuple[str, str]:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    value = err.get("input")
    last = loc[-1] if loc else ""
    if kind == "literal_error":
        options = _expected(ctx)
        close = difflib.get_close_matches(str(value), options.split(", "), n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        return f"{_short(value)} is not one of {options}", f"{hint}use one of {options}"
    if kind == "extra_forbidden":
        allowed = _allowed_keys(root, loc[:-1], data)
        close = difflib.get_close_matches(str(last), allowed, n=1)
        hint = f"did you mean {close[0]!r}? " if close else "remove it; "
        return f"unknown key {last!r}", f"{hint}allowed keys here: {', '.join(allowed)}"
    if kind == "missing":
        return f"required key {last!r} is missing", f"add `{last}: ...` (see {README})"
    if kind == "union_tag_invalid":
        tags = _expected({"expected": ctx.get("expected_tags", "")})
        close = difflib.get_close_matches(str(ctx.get("tag")), tags.split(", "), n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        return f"{ctx.get('discriminator', 'transport').strip(chr(39))} {ctx.get('tag')!r} is not supported", f"{hint}use one of {tags}"
    if kind == "union_tag_not_found":
        return "required key 'transport' is missing", "add `transport: modbus_tcp` (or modbus_rtu, serial_ascii)"
    if kind == "string_type" and isinstance(value, bool):
        return f"YAML read an unquoted word (yes/no/on/off/NO...) as the boolean {value}", f'put it in quotes, e.g. {last}: "NO"'
    if kind == "string_type" and value is None:
        return "the value is empty", f'write a value in quotes, e.g. {last}: "-" (a bare - starts a YAML list)'
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return f"expected a whole number, got {_short(value)}", "write an integer without quotes or decimals"
    if kind in ("float_parsing", "float_type", "finite_number"):
        return f"expected a number, got {_short(value)}", "write a plain number, e.g. 1.0"
    if kind == "string_type":
        return f"expected text, got {_short(value)}", "put the value in quotes"
    if kind == "string_pattern_mismatch":
        if last == "port":
            return f"port {_short(value)} is not a device path", "write the full path, preferably the stable one: /dev/serial/by-id/usb-...-if00-port0 (ls -l /dev/serial/by-id/)"
        if last == "parameter":
            return f"parameter {_short(value)} is not a regulation symbol", 'use the symbol without spaces, e.g. "PM2,5", COD, NH4'
        return f"{_short(value)} is not a valid name", "use 1-64 characters of A-Z a-z 0-9 _ . - starting with a letter or digit"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"expected a mapping (key: value lines), got {_short(value)}", f"see {README} for the layout"
    if kind in ("list_type", "tuple_type"):
        return f"expected a list, got {_short(value)}", "write [a, b] or one '- item' line per entry"
    if kind == "too_short" and last == "range" or kind == "too_long" and last == "range":
        return f"range {_short(value)} must be two numbers", "write range: [low, high]"
    if kind == "too_short":
        return f"needs at least {ctx.get('min_length', 1)} entries", f"add entries (see {README})"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        return f"{_short(value)}: {err['msg'][0].lower()}{err['msg'][1:]}", "change the value"
    return f"{_short(value)}: {err['msg']}", f"see {README}"


def _unwrap(tp: Any) -> list[Any]:
    """Annotated/Optional/Union -> the candidate types."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(tp)[0])
    if origin in (typing.Union, types.UnionType):
        out: list[Any] = []
        for arg in typing.get_args(tp):
            if arg is not type(None):
                out.extend(_unwrap(arg))
        return out
    return [tp]


def _allowed_keys(root: type[BaseModel], loc: Loc, data: Any) -> list[str]:
    """Field names of the model that sits at ``loc`` (best effort)."""
    candidates: list[Any] = [root]
    cur_data = data
    for part in loc:
        nxt: list[Any] = []
        for tp in candidates:
            origin = typing.get_origin(tp)
            if isinstance(tp, type) and issubclass(tp, BaseModel) and isinstance(part, str) and part in tp.model_fields:
                nxt.extend(_unwrap(tp.model_fields[part].annotation))
            elif origin in (list, tuple) and isinstance(part, int):
                nxt.extend(_unwrap(typing.get_args(tp)[0]))
            elif origin is dict:
                nxt.extend(_unwrap(typing.get_args(tp)[1]))
        try:
            cur_data = cur_data[part]
        except (KeyError, IndexError, TypeError):
            cur_data = None
        candidates = nxt
    models = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
    if len(models) > 1 and isinstance(cur_data, dict):  # discriminated union: pick by transport
        picked = [m for m in models if "transport" in m.model_fields and cur_data.get("transport") in typing.get_args(m.model_fields["transport"].annotation)]
        models = picked or models
    return sorted(models[0].model_fields) if models else []
