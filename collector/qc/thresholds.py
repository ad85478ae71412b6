"""QC thresholds: shipped defaults, an operator's overrides file, and hot reload.

Both files have one shape (see README.md):

    qc:
      timestamps: {future_skew_s: 300, max_age_s: 7776000, not_before: 2020-01-01}
      clock: {max_offset_s: 5}
      consistency: [{lesser: "PM2,5", greater: PM10, rel_tolerance: 0.1, abs_tolerance: 5}]
      parameters:                       # symbol -> unit -> check -> settings (or off)
        "PM2,5":
          ug/m3:
            gross_range: {fail: [-10, 1000], suspect: [0, 500]}
            spike: {suspect: 50, fail: 150, window: 3, max_gap_s: 3600}
            rate_of_change: {suspect_per_s: 0.5, min_delta: 25, max_gap_s: 3600}
            flat_line: {tolerance: 0, floor: 5, min_count: 5, suspect_s: 3600, fail_s: 10800}
      kinds:                            # per station kind (ambient_air, wastewater, ...)
        wastewater: {parameters: {...}}
      stations:                         # per station: what a station file's `qc:` section will hold
        HN_AIR_001:
          kind: ambient_air
          parameters: {...}
          devices: {aqms1: {parameters: {...}}}

Layers, most general first, merged key by key within each check (``off``
switches a check off, a later mapping switches it on again):
defaults -> defaults' kind -> file -> file's kind -> station -> device.

Thresholds are keyed by unit as well as symbol because one symbol is
measured in different units at different kinds of station (SO2 in ug/m3
ambient, mg/Nm3 in a stack), and a limit in the wrong unit is worse than none.
"""

from __future__ import annotations

import datetime as dt
import difflib
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import structlog
import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from station_profiles.loader import ConfigError, ConfigIssue
from vocabulary.stations import STATION_ID_PATTERN

log = structlog.get_logger("collector.qc")

DEFAULTS_PATH = Path(__file__).resolve().parent / "defaults.yaml"
README = "collector/qc/README.md"
STATION_KINDS = ("ambient_air", "wastewater", "stack_emission", "surface_water", "groundwater")
MAX_SPIKE_WINDOW = 8  # below state.HISTORY (16): the rest leaves room for redeliveries to find their neighbours
NS = 1_000_000_000

# --------------------------------------------------------------------------- #
# Errors
# --------------------------------------------------------------------------- #


# The same file:line:path message (fix) errors as the analyzer profiles: one
# format for every configuration file an operator edits.
Issue = ConfigIssue


class ThresholdsError(ConfigError):
    """A thresholds file is invalid; ``issues`` lists every problem found, each with file and line."""


# --------------------------------------------------------------------------- #
# The settings each check takes
# --------------------------------------------------------------------------- #

# check -> key -> (kind, default); kind: "span", "pos" (> 0), "nonneg" (>= 0),
# "int1" (int >= 1), "int2" (int >= 2), "num_or_null"; default REQUIRED must be set.
REQUIRED = object()
CHECK_KEYS: dict[str, dict[str, tuple[str, Any]]] = {
    "gross_range": {"fail": ("span", REQUIRED), "suspect": ("span", None)},
    "spike": {"suspect": ("pos", REQUIRED), "fail": ("pos", math.inf), "window": ("int1", 3), "max_gap_s": ("pos", 3600.0)},
    "rate_of_change": {"suspect_per_s": ("pos", REQUIRED), "min_delta": ("nonneg", 0.0), "max_gap_s": ("pos", 3600.0)},
    "flat_line": {
        "tolerance": ("nonneg", 0.0),
        "floor": ("num_or_null", None),
        "min_count": ("int2", 3),
        "suspect_s": ("pos", REQUIRED),
        "fail_s": ("pos", math.inf),
    },
}
TIMESTAMP_KEYS: dict[str, tuple[str, Any]] = {
    "future_skew_s": ("nonneg", 300.0),
    "max_age_s": ("pos", 90 * 86400.0),
    "not_before": ("date", dt.date(2020, 1, 1)),
}
CLOCK_KEYS: dict[str, tuple[str, Any]] = {"max_offset_s": ("nonneg", 5.0)}
RULE_KEYS: dict[str, tuple[str, Any]] = {
    "lesser": ("symbol", REQUIRED),
    "greater": ("symbol", REQUIRED),
    "rel_tolerance": ("nonneg", 0.0),
    "abs_tolerance": ("nonneg", 0.0),
    "enabled": ("bool", True),
}
SCOPE_KEYS = ("timestamps", "clock", "consistency", "parameters")
TOP_KEYS = SCOPE_KEYS + ("kinds", "stations")
STATION_KEYS = ("kind",) + SCOPE_KEYS + ("devices",)

# Column layout of ParamThresholds.vector, the numbers the vectorised checks read.
COLS = (
    "range_on", "fail_lo", "fail_hi", "suspect_lo", "suspect_hi",
    "spike_window", "spike_suspect", "spike_fail", "spike_gap_ns",
    "roc_on", "roc_per_s", "roc_min_delta", "roc_gap_ns",
    "flat_on", "flat_tol", "flat_floor", "flat_min_count", "flat_suspect_ns", "flat_fail_ns",
)  # fmt: skip
C = {name: i for i, name in enumerate(COLS)}
NO_VECTOR = tuple([0.0] * len(COLS))  # a series without thresholds: every check off


@dataclass(frozen=True)
class Setting:
    value: Any
    file: str
    line: int
    path: str = ""


@dataclass(frozen=True)
class ParamThresholds:
    """The merged thresholds of one (station, device, parameter, unit)."""

    parameter: str
    unit: str
    gross_range: dict[str, Any] | None
    spike: dict[str, Any] | None
    rate_of_change: dict[str, Any] | None
    flat_line: dict[str, Any] | None
    vector: tuple[float, ...] = field(repr=False, default=())  # numbers by COLS, for the vectorised checks
    vid: int = 0  # row of ``vector`` in ThresholdSource.matrix(); equal vectors share a row


@dataclass(frozen=True)
class Rule:
    """``lesser`` must not exceed ``greater`` at the same timestamp (both in the same unit)."""

    lesser: str
    greater: str
    rel_tolerance: float
    abs_tolerance: float

    def limit(self, greater_value: float) -> float:
        return greater_value * (1.0 + self.rel_tolerance) + self.abs_tolerance


@dataclass(frozen=True)
class StationSettings:
    kind: str | None
    future_skew_ns: int
    max_age_ns: int
    not_before_ns: int
    not_before_text: str
    clock_max_offset_s: float
    rules: tuple[Rule, ...]


# --------------------------------------------------------------------------- #
# Parsing, from the YAML node tree so every value keeps its line
# --------------------------------------------------------------------------- #


@dataclass
class Scope:
    """What one place in a file sets: timestamps, clock, rules, parameters."""

    timestamps: dict[str, Setting] = field(default_factory=dict)
    clock: dict[str, Setting] = field(default_factory=dict)
    rules: dict[tuple[str, str], dict[str, Setting]] = field(default_factory=dict)
    # symbol -> unit -> check -> False (switched off here) or {key: Setting} (keys set here)
    parameters: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)


@dataclass
class StationScope(Scope):
    kind: Setting | None = None
    devices: dict[str, Scope] = field(default_factory=dict)


@dataclass
class ThresholdsFile:
    source: str
    top: Scope
    kinds: dict[str, Scope]
    stations: dict[str, StationScope]


_constructor = yaml.constructor.SafeConstructor()


def _scalar(node: Node) -> Any:
    return _constructor.construct_object(node, deep=True)


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _fmt_path(loc: Iterable[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source
        self.issues: list[Issue] = []

    def issue(self, node: Node | None, loc: tuple, message: str, fix: str) -> None:
        line = node.start_mark.line + 1 if node is not None else 0
        self.issues.append(Issue(self.source, line, _fmt_path(loc), message, fix))

    # -- generic shapes ---------------------------------------------------
    def mapping(self, node: Node, loc: tuple, allowed: Iterable[str] | None) -> Iterator[tuple[str, Node, Node]]:
        if not isinstance(node, MappingNode):
            self.issue(node, loc, f"expected a mapping (key: value), got {self._kind(node)}", f"see {README} for the layout")
            return
        allowed = tuple(allowed) if allowed is not None else None
        seen: set[str] = set()
        for knode, vnode in node.value:
            key = _scalar(knode) if isinstance(knode, ScalarNode) else None
            if isinstance(key, bool):
                self.issue(knode, loc, f"YAML read the unquoted key {knode.value!r} as the boolean {key}", f'put it in quotes: "{knode.value}":')
                continue
            if key is None and isinstance(knode, ScalarNode) and knode.value in ("", "~", "null"):
                self.issue(knode, loc, "empty key", "give the key a name")
                continue
            if not isinstance(key, (str, int, float)):
                self.issue(knode, loc, "keys must be plain text", "use a name as the key")
                continue
            key = str(key)
            if key in seen:
                self.issue(knode, loc + (key,), f"duplicate key {key!r} (YAML would silently keep the last one)", "remove one of them")
                continue
            seen.add(key)
            if allowed is not None and key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                self.issue(knode, loc + (key,), f"unknown key {key!r}", f"{hint}allowed here: {', '.join(allowed)}")
                continue
            yield key, knode, vnode

    @staticmethod
    def _kind(node: Node) -> str:
        if isinstance(node, MappingNode):
            return "a mapping"
        if isinstance(node, SequenceNode):
            return "a list"
        return repr(_scalar(node)) if isinstance(node, ScalarNode) else "nothing"

    def value(self, kind: str, node: Node, loc: tuple) -> Any:
        """One setting of a given kind; None after recording an issue."""
        if kind == "span":
            if not isinstance(node, SequenceNode) or len(node.value) != 2:
                self.issue(node, loc, f"expected [low, high], got {self._kind(node)}", "write two numbers in brackets, e.g. [0, 1000]; null for an open end")
                return None
            lo, hi = (self._number(n, loc, allow_null=True) for n in node.value)
            if lo is _BAD or hi is _BAD:
                return None
            lo = -math.inf if lo is None else lo
            hi = math.inf if hi is None else hi
            if not lo < hi:
                self.issue(node, loc, f"low {lo:g} is not below high {hi:g}", "write [low, high] with low < high")
                return None
            return (lo, hi)
        if kind == "date":
            val = _scalar(node) if isinstance(node, ScalarNode) else None
            if isinstance(val, dt.datetime):
                return val if val.tzinfo else val.replace(tzinfo=dt.timezone.utc)
            if isinstance(val, dt.date):
                return dt.datetime(val.year, val.month, val.day, tzinfo=dt.timezone.utc)
            self.issue(node, loc, f"expected a date, got {self._kind(node)}", "write a date without quotes, e.g. 2020-01-01")
            return None
        if kind == "bool":
            val = _scalar(node) if isinstance(node, ScalarNode) else None
            if not isinstance(val, bool):
                self.issue(node, loc, f"expected true or false, got {self._kind(node)}", "write true or false")
                return None
            return val
        if kind == "symbol":
            val = _scalar(node) if isinstance(node, ScalarNode) else None
            if isinstance(val, bool):
                self.issue(node, loc, f"YAML read the unquoted word {node.value!r} as the boolean {val}", f'put it in quotes: "{node.value}"')
                return None
            if not isinstance(val, str) or not val:
                self.issue(node, loc, f"expected a parameter symbol, got {self._kind(node)}", 'write the regulation symbol, e.g. "PM2,5" or NOx')
                return None
            return val
        num = self._number(node, loc, allow_null=kind == "num_or_null")
        if num is _BAD:
            return None
        if num is None:
            return _NULL
        if kind in ("int1", "int2"):
            low = 1 if kind == "int1" else 2
            if num != int(num) or num < low:
                self.issue(node, loc, f"expected a whole number >= {low}, got {num:g}", f"write a whole number such as {max(low, 3)}")
                return None
            return int(num)
        if kind == "pos" and not num > 0:
            self.issue(node, loc, f"must be greater than 0, got {num:g}", "write a positive number (switch the whole check off with `off`)")
            return None
        if kind == "nonneg" and num < 0:
            self.issue(node, loc, f"must not be negative, got {num:g}", "write 0 or a positive number")
            return None
        return num

    def _number(self, node: Node, loc: tuple, allow_null: bool) -> Any:
        val = _scalar(node) if isinstance(node, ScalarNode) else _BAD
        if val is None and allow_null:
            return None
        if isinstance(val, bool) or not isinstance(val, (int, float)):
            if isinstance(val, str):
                try:
                    float(val)
                    fix = "write the number without quotes"
                except ValueError:
                    fix = "write a number"
            else:
                fix = "write a number"
            self.issue(node, loc, f"expected a number, got {self._kind(node)}", fix)
            return _BAD
        if not math.isfinite(val):
            self.issue(node, loc, f"expected a finite number, got {val}", "write a finite number (null for an open end of a span)")
            return _BAD
        return float(val)

    def settings(self, node: Node, loc: tuple, spec: dict[str, tuple[str, Any]]) -> dict[str, Setting]:
        out: dict[str, Setting] = {}
        for key, _knode, vnode in self.mapping(node, loc, spec):
            val = self.value(spec[key][0], vnode, loc + (key,))
            if val is not None:
                out[key] = Setting(None if val is _NULL else val, self.source, vnode.start_mark.line + 1, _fmt_path(loc + (key,)))
        return out

    # -- the document -------------------------------------------------------
    def scope(self, node: Node, loc: tuple, target: Scope, allowed: tuple[str, ...]) -> None:
        for key, _knode, vnode in self.mapping(node, loc, allowed):
            self.scope_item(key, vnode, loc + (key,), target)

    def scope_item(self, key: str, vnode: Node, here: tuple, target: Scope) -> None:
        if key == "timestamps":
            target.timestamps = self.settings(vnode, here, TIMESTAMP_KEYS)
        elif key == "clock":
            target.clock = self.settings(vnode, here, CLOCK_KEYS)
        elif key == "consistency":
            target.rules = self.rules(vnode, here)
        elif key == "parameters":
            target.parameters = self.parameters(vnode, here)
        elif key == "kind" and isinstance(target, StationScope):
            val = _scalar(vnode) if isinstance(vnode, ScalarNode) else None
            if val not in STATION_KINDS:
                close = difflib.get_close_matches(str(val), STATION_KINDS, n=1)
                hint = f"did you mean {close[0]}? " if close else ""
                self.issue(vnode, here, f"{val!r} is not a station kind", f"{hint}use one of {', '.join(STATION_KINDS)}")
            else:
                target.kind = Setting(val, self.source, vnode.start_mark.line + 1)
        elif key == "devices" and isinstance(target, StationScope):
            for dev, _kn, dnode in self.mapping(vnode, here, None):
                scope = Scope()
                self.scope(dnode, here + (dev,), scope, ("parameters",))
                target.devices[dev] = scope

    def rules(self, node: Node, loc: tuple) -> dict[tuple[str, str], dict[str, Setting]]:
        out: dict[tuple[str, str], dict[str, Setting]] = {}
        if not isinstance(node, SequenceNode):
            self.issue(node, loc, f"expected a list of rules, got {self._kind(node)}", "write - {lesser: NO2, greater: NOx} items")
            return out
        for i, item in enumerate(node.value):
            known = len(self.issues)
            rule = self.settings(item, loc + (i,), RULE_KEYS)
            if "lesser" not in rule or "greater" not in rule:
                if isinstance(item, MappingNode) and len(self.issues) == known:
                    self.issue(item, loc + (i,), "a consistency rule needs both lesser and greater", "write {lesser: NO2, greater: NOx}")
                continue
            pair = (rule["lesser"].value, rule["greater"].value)
            if pair[0] == pair[1]:
                self.issue(item, loc + (i,), f"rule compares {pair[0]} with itself", "name two different parameters")
                continue
            if pair in out:
                self.issue(item, loc + (i,), f"a second rule for {pair[0]} <= {pair[1]}", "merge the two rules")
                continue
            out[pair] = rule
        return out

    def parameters(self, node: Node, loc: tuple) -> dict[str, dict[str, dict[str, Any]]]:
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for sym, _kn, unode in self.mapping(node, loc, None):
            units: dict[str, dict[str, Any]] = {}
            for unit, uknode, cnode in self.mapping(unode, loc + (sym,), None):
                if unit in CHECK_KEYS:
                    self.issue(uknode, loc + (sym, unit), f"{unit!r} is a check, but this level names the unit",
                               f"put the unit first: {sym}: {{ug/m3: {{{unit}: ...}}}}")
                    continue
                units[unit] = self.checks(cnode, loc + (sym, unit))
            out[sym] = units
        return out

    def checks(self, node: Node, loc: tuple) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for check, _kn, vnode in self.mapping(node, loc, CHECK_KEYS):
            if isinstance(vnode, ScalarNode):
                val = _scalar(vnode)
                if val is False:
                    out[check] = False
                    continue
                self.issue(vnode, loc + (check,), f"expected settings or `off`, got {self._kind(vnode)}", f"write {check}: off, or {check}: {{...}}")
                continue
            out[check] = self.settings(vnode, loc + (check,), CHECK_KEYS[check])
        return out


_BAD = object()
_NULL = object()


def parse_thresholds(text: str, source: str) -> ThresholdsFile:
    """Parse and check one thresholds document; raises ThresholdsError listing every issue.

    Checks each value on its own; whether the blocks make sense merged with
    the layers under them (a suspect span inside the inherited fail span) is
    checked when a ThresholdSource installs the file over the defaults.
    """
    p = _Parser(source)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = " ".join(str(x) for x in (exc.context, exc.problem) if x)
        raise ThresholdsError([Issue(source, mark.line + 1 if mark else 0, "", f"not valid YAML: {problem}", "fix the YAML syntax (indentation, quotes, a missing ':')")]) from None
    except yaml.YAMLError as exc:
        raise ThresholdsError([Issue(source, 0, "", f"not valid YAML: {exc}", "fix the YAML syntax")]) from None
    out = ThresholdsFile(source, Scope(), {}, {})
    if root is None:
        return out  # an empty overrides file: defaults only
    qc_node = None
    for key, _kn, vnode in p.mapping(root, (), ("qc",)):
        qc_node = vnode
    if qc_node is None and not p.issues:
        p.issue(root, (), "expected a top-level `qc:` section", f"start the file with qc: (see {README})")
    if qc_node is not None and not (isinstance(qc_node, ScalarNode) and _scalar(qc_node) is None):
        for key, _kn, vnode in p.mapping(qc_node, ("qc",), TOP_KEYS):
            loc = ("qc", key)
            if key in SCOPE_KEYS:
                p.scope_item(key, vnode, loc, out.top)
            elif key == "kinds":
                for kind, kknode, knode in p.mapping(vnode, loc, None):
                    if kind not in STATION_KINDS:
                        close = difflib.get_close_matches(kind, STATION_KINDS, n=1)
                        hint = f"did you mean {close[0]}? " if close else ""
                        p.issue(kknode, loc + (kind,), f"{kind!r} is not a station kind", f"{hint}use one of {', '.join(STATION_KINDS)}")
                        continue
                    scope = Scope()
                    p.scope(knode, loc + (kind,), scope, SCOPE_KEYS)
                    out.kinds[kind] = scope
            elif key == "stations":
                for st, sknode, snode in p.mapping(vnode, loc, None):
                    if not STATION_ID_PATTERN.match(st):
                        p.issue(sknode, loc + (st,), f"{st!r} is not a station id", "use 1-64 characters of A-Z a-z 0-9 _ . - starting with a letter or digit")
                        continue
                    scope = StationScope()
                    p.scope(snode, loc + (st,), scope, STATION_KEYS)
                    out.stations[st] = scope
    if p.issues:
        raise ThresholdsError(p.issues)
    return out  # blocks are checked merged with the layers under them by ThresholdSource


def read_thresholds(path: Path) -> ThresholdsFile:
    shown = _display(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ThresholdsError([Issue(shown, 0, "", "file not found", "check the path")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ThresholdsError([Issue(shown, 0, "", f"cannot read: {exc}", "check the file")]) from None
    return parse_thresholds(text, shown)


# --------------------------------------------------------------------------- #
# Merging layers
# --------------------------------------------------------------------------- #


def _merge_check(blocks: list[Any]) -> dict[str, Setting] | None:
    """Layered blocks of one check -> its settings, or None when off / never set."""
    merged: dict[str, Setting] | None = None
    for block in blocks:
        if block is False:
            merged = None
            continue
        merged = dict(merged or {})
        merged.update(block)
    return merged


def _resolve_check(check: str, merged: dict[str, Setting] | None) -> tuple[dict[str, Any] | None, tuple[str, str, Setting | None] | None]:
    """Merged settings -> (values with defaults, problem); a problem is (message, fix, where)."""
    if merged is None:
        return None, None
    values: dict[str, Any] = {}
    last = max(merged.values(), key=lambda s: s.line) if merged else None
    for key, (_kind, default) in CHECK_KEYS[check].items():
        if key in merged:
            values[key] = merged[key].value
        elif default is REQUIRED:
            return None, (f"{check} needs `{key}` (not set here, nor inherited)", f"add {key}: ... to this {check} block", last)
        else:
            values[key] = default
    if values.get("window", 1) > MAX_SPIKE_WINDOW:
        return None, (f"spike window {values['window']} is more than {MAX_SPIKE_WINDOW}", f"use a window of 1 to {MAX_SPIKE_WINDOW}", merged.get("window", last))
    if check == "gross_range" and values["suspect"] is not None:
        (flo, fhi), (slo, shi) = values["fail"], values["suspect"]
        if slo < flo or shi > fhi:
            return None, (f"suspect span [{slo:g}, {shi:g}] is not inside the fail span [{flo:g}, {fhi:g}]",
                          "narrow the suspect span to lie within the fail span, or widen fail in the same block", merged.get("suspect", last))
    if check == "spike" and values["fail"] < values["suspect"]:
        return None, (f"spike fail {values['fail']:g} is below suspect {values['suspect']:g}", "make fail at least suspect", merged.get("fail", last))
    if check == "flat_line" and values["fail_s"] < values["suspect_s"]:
        return None, (f"flat_line fail_s {values['fail_s']:g} is below suspect_s {values['suspect_s']:g}", "make fail_s at least suspect_s", merged.get("fail_s", last))
    return values, None


def _vector(gr: dict | None, sp: dict | None, roc: dict | None, fl: dict | None) -> tuple[float, ...]:
    inf = math.inf
    v = [0.0] * len(COLS)
    if gr is not None:
        v[C["range_on"]] = 1.0
        v[C["fail_lo"]], v[C["fail_hi"]] = gr["fail"]
        v[C["suspect_lo"]], v[C["suspect_hi"]] = gr["suspect"] if gr["suspect"] is not None else (-inf, inf)
    else:
        v[C["fail_lo"]], v[C["fail_hi"]], v[C["suspect_lo"]], v[C["suspect_hi"]] = -inf, inf, -inf, inf
    if sp is not None:
        v[C["spike_window"]] = float(sp["window"])
        v[C["spike_suspect"]], v[C["spike_fail"]] = sp["suspect"], sp["fail"]
        v[C["spike_gap_ns"]] = sp["max_gap_s"] * NS
    if roc is not None:
        v[C["roc_on"]] = 1.0
        v[C["roc_per_s"]] = roc["suspect_per_s"]
        v[C["roc_min_delta"]] = roc["min_delta"]
        v[C["roc_gap_ns"]] = roc["max_gap_s"] * NS
    if fl is not None:
        v[C["flat_on"]] = 1.0
        v[C["flat_tol"]] = fl["tolerance"]
        v[C["flat_floor"]] = -inf if fl["floor"] is None else fl["floor"]
        v[C["flat_min_count"]] = float(fl["min_count"])
        v[C["flat_suspect_ns"]] = fl["suspect_s"] * NS
        v[C["flat_fail_ns"]] = fl["fail_s"] * NS
    return tuple(v)


class Config:
    """Defaults plus one overrides file, with the layer lookups."""

    def __init__(self, defaults: ThresholdsFile, overrides: ThresholdsFile | None) -> None:
        self.defaults = defaults
        self.overrides = overrides or ThresholdsFile("", Scope(), {}, {})

    def kind_of(self, station: str) -> str | None:
        st = self.overrides.stations.get(station)
        return st.kind.value if st is not None and st.kind is not None else None

    def scopes(self, station: str | None, kind: str | None) -> list[Scope]:
        out: list[Scope] = [self.defaults.top]
        if kind in self.defaults.kinds:
            out.append(self.defaults.kinds[kind])
        out.append(self.overrides.top)
        if kind in self.overrides.kinds:
            out.append(self.overrides.kinds[kind])
        if station is not None and station in self.overrides.stations:
            out.append(self.overrides.stations[station])
        return out

    def param_layers(self, station: str | None, kind: str | None, device: str | None, parameter: str, unit: str) -> list[dict[str, Any]]:
        scopes = self.scopes(station, kind)
        if station is not None and device is not None and station in self.overrides.stations:
            dev = self.overrides.stations[station].devices.get(device)
            if dev is not None:
                scopes.append(dev)
        return [s.parameters[parameter][unit] for s in scopes if unit in s.parameters.get(parameter, {})]

    def resolve_param(self, station: str | None, kind: str | None, device: str | None, parameter: str, unit: str) -> tuple[ParamThresholds | None, list[tuple[str, str, Setting | None]]]:
        layers = self.param_layers(station, kind, device, parameter, unit)
        if not layers:
            return None, []
        problems: list[tuple[str, str, Setting | None]] = []
        resolved: dict[str, dict | None] = {}
        for check in CHECK_KEYS:
            values, problem = _resolve_check(check, _merge_check([layer[check] for layer in layers if check in layer]))
            if problem:
                problems.append(problem)
            resolved[check] = values
        pt = ParamThresholds(parameter, unit, resolved["gross_range"], resolved["spike"], resolved["rate_of_change"], resolved["flat_line"],
                             _vector(resolved["gross_range"], resolved["spike"], resolved["rate_of_change"], resolved["flat_line"]))
        return pt, problems

    def resolve_station(self, station: str | None, kind: str | None) -> StationSettings:
        ts: dict[str, Setting] = {}
        clock: dict[str, Setting] = {}
        rules: dict[tuple[str, str], dict[str, Setting]] = {}
        for scope in self.scopes(station, kind):
            ts.update(scope.timestamps)
            clock.update(scope.clock)
            for pair, rule in scope.rules.items():
                rules[pair] = {**rules.get(pair, {}), **rule}

        def get(d: dict[str, Setting], spec: dict[str, tuple[str, Any]], key: str) -> Any:
            return d[key].value if key in d else spec[key][1]

        not_before: dt.datetime = get(ts, TIMESTAMP_KEYS, "not_before")
        if not isinstance(not_before, dt.datetime):
            not_before = dt.datetime(not_before.year, not_before.month, not_before.day, tzinfo=dt.timezone.utc)
        epoch = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
        out_rules = tuple(
            Rule(pair[0], pair[1], get(r, RULE_KEYS, "rel_tolerance"), get(r, RULE_KEYS, "abs_tolerance"))
            for pair, r in rules.items()
            if get(r, RULE_KEYS, "enabled")
        )
        return StationSettings(
            kind=kind,
            future_skew_ns=int(get(ts, TIMESTAMP_KEYS, "future_skew_s") * NS),
            max_age_ns=int(get(ts, TIMESTAMP_KEYS, "max_age_s") * NS),
            not_before_ns=(not_before - epoch) // dt.timedelta(microseconds=1) * 1000,
            not_before_text=not_before.strftime("%Y-%m-%d"),
            clock_max_offset_s=float(get(clock, CLOCK_KEYS, "max_offset_s")),
            rules=out_rules,
        )

    def lookback_s(self) -> float:
        """The longest flat_line window anywhere: how far back state seeding should read."""
        longest = 0.0
        files = [self.defaults, self.overrides]
        scopes: list[Scope] = []
        for f in files:
            scopes += [f.top, *f.kinds.values(), *f.stations.values()]
            for st in f.stations.values():
                scopes += st.devices.values()
        for scope in scopes:
            for units in scope.parameters.values():
                for checks in units.values():
                    block = checks.get("flat_line")
                    if isinstance(block, dict):
                        for key in ("suspect_s", "fail_s"):
                            if key in block:
                                longest = max(longest, block[key].value)
        return longest


def _check_config(cfg: Config, p: _Parser) -> None:
    """Resolve every combination the files configure, so merge problems surface at load, with a line.

    Generic (file-wide and per-kind) blocks are resolved under every kind; a
    station's own blocks under its kind, for the station and each device.
    """
    seen: set[str] = set()
    kinds = [None, *STATION_KINDS]
    combos: set[tuple[str | None, str | None, str | None, str, str]] = set()
    all_files = [cfg.defaults, cfg.overrides]

    def pairs(scope: Scope) -> Iterator[tuple[str, str]]:
        for sym, units in scope.parameters.items():
            for unit in units:
                yield sym, unit

    generic = set()
    for f in all_files:
        for scope in [f.top, *f.kinds.values()]:
            generic.update(pairs(scope))
    for kind in kinds:
        for sym, unit in generic:
            combos.add((None, kind, None, sym, unit))
    for st, scope in cfg.overrides.stations.items():
        kind = scope.kind.value if scope.kind else None
        local = set(pairs(scope))  # other pairs resolve as under the generic combinations above
        for dev in scope.devices.values():
            local |= set(pairs(dev))
        for sym, unit in local:
            combos.add((st, kind, None, sym, unit))
            for dev in scope.devices:
                combos.add((st, kind, dev, sym, unit))
    for combo in sorted(combos, key=lambda c: tuple("" if x is None else x for x in c)):
        _pt, problems = cfg.resolve_param(*combo)
        for message, fix, where in problems:
            issue = Issue(where.file if where else p.source, where.line if where else 0, where.path.rsplit(".", 1)[0] if where else "", message, fix)
            if str(issue) not in seen:
                seen.add(str(issue))
                p.issues.append(issue)


# --------------------------------------------------------------------------- #
# The live source: defaults + overrides file, reloaded on change
# --------------------------------------------------------------------------- #


class ThresholdSource:
    """Thresholds for the collector, re-read when the overrides file changes.

    ``reload_if_changed()`` is cheap (one stat) and meant to be called once per
    collector flush, like ``StationRegistry.reload_if_changed``. A broken file
    at start-up raises ThresholdsError; a file broken later is logged with
    every issue and the last good thresholds stay in force, so a typo made
    while the collector runs does not stop it. Not thread-safe: reload and
    lookups belong to the collector's flush loop.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, *, defaults_path: str | os.PathLike[str] = DEFAULTS_PATH) -> None:
        self.path = Path(path) if path is not None else None
        self.defaults_path = Path(defaults_path)
        self._defaults = read_thresholds(self.defaults_path)
        self._stamp: tuple[int, int] | None = None
        self.generation = 0
        self.last_error: ThresholdsError | None = None
        self._install(None)
        if self.path is not None:
            if not self.path.exists():
                raise ThresholdsError([Issue(_display(self.path), 0, "", "file not found", "check the path, or start without a thresholds file")])
            self.reload_if_changed(raise_errors=True)

    def _install(self, overrides: ThresholdsFile | None) -> None:
        cfg = Config(self._defaults, overrides)
        p = _Parser(overrides.source if overrides else str(self.defaults_path))
        _check_config(cfg, p)
        if p.issues:
            raise ThresholdsError(p.issues)
        self._config = cfg
        self._params: dict[tuple[str, str, str, str], ParamThresholds | None] = {}
        self._stations: dict[str, StationSettings] = {}
        # Distinct setting rows: a handful per parameter, however many series share them.
        self._vectors: dict[tuple[float, ...], int] = {NO_VECTOR: 0}
        self._matrix = np.array([NO_VECTOR])
        self.generation += 1

    def reload_if_changed(self, raise_errors: bool = False) -> bool:
        """Re-read the overrides file if its mtime or size changed; True if new thresholds apply."""
        if self.path is None:
            return False
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False  # a file being replaced; the next call sees the new one
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            self._install(read_thresholds(self.path))
        except ThresholdsError as exc:
            self.last_error = exc
            if raise_errors:
                raise
            log.error("qc_thresholds_invalid", file=str(self.path), issues=[str(i) for i in exc.issues], kept_generation=self.generation)
            return False
        self.last_error = None
        log.info("qc_thresholds_loaded", file=str(self.path), generation=self.generation)
        return True

    # -- lookups (cached per generation) ------------------------------------
    def param(self, station: str, device: str, parameter: str, unit: str) -> ParamThresholds | None:
        key = (station, device, parameter, unit)
        try:
            return self._params[key]
        except KeyError:
            pass
        cfg = self._config
        pt, problems = cfg.resolve_param(station, cfg.kind_of(station), device, parameter, unit)
        if problems:  # _check_config resolved every configured combination, so this is a bug
            raise RuntimeError(f"unchecked thresholds combination {key}: {problems}")
        if pt is not None:
            vid = self._vectors.setdefault(pt.vector, len(self._vectors))
            pt = ParamThresholds(pt.parameter, pt.unit, pt.gross_range, pt.spike, pt.rate_of_change, pt.flat_line, pt.vector, vid)
        if len(self._params) > 200_000:  # bounded: junk device/parameter names must not grow it forever
            self._params.clear()
        self._params[key] = pt
        return pt

    def matrix(self) -> np.ndarray:
        """Setting rows by ParamThresholds.vid (row 0: no thresholds)."""
        if len(self._matrix) != len(self._vectors):
            self._matrix = np.array(list(self._vectors), dtype=np.float64)
        return self._matrix

    def station(self, station: str) -> StationSettings:
        try:
            return self._stations[station]
        except KeyError:
            cfg = self._config
            settings = cfg.resolve_station(station, cfg.kind_of(station))
            if len(self._stations) > 100_000:
                self._stations.clear()
            self._stations[station] = settings
            return settings

    def units_for(self, parameter: str) -> list[str]:
        """Units that have thresholds for ``parameter`` somewhere (for causes)."""
        units: set[str] = set()
        for f in (self._config.defaults, self._config.overrides):
            for scope in [f.top, *f.kinds.values(), *f.stations.values()]:
                units.update(scope.parameters.get(parameter, {}))
        return sorted(units)

    def lookback_s(self) -> float:
        return self._config.lookback_s()
