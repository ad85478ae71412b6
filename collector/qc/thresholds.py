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
          parameters: {...}
          devices: {aqms1: {parameters: {...}}}

A station's kind is its registry entry's (``quantrac station add --kind``,
``quantrac station set-kind``), not this file's: ``stations.<id>.kind`` is refused.

Layers, most general first, merged key by key within each check (``off``
switches a check off, a later mapping switches it on again):
defaults -> defaults' kind -> file -> file's kind -> station -> analyzer -> device.
The analyzer layer is not in a file: it is the device's measuring range from
its analyzer profile, as the station's newest birth states it
(``analyzer_ranges``), and sets ``gross_range.fail`` only.

Thresholds are keyed by unit as well as symbol because one symbol is
measured in different units at different kinds of station (SO2 in ug/m3
ambient, mg/Nm3 in a stack), and a limit in the wrong unit is worse than none.
"""

from __future__ import annotations

import copy
import datetime as dt
import difflib
import math
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any

import numpy as np
import structlog
from pydantic import BaseModel, BeforeValidator, ConfigDict, PlainValidator, model_validator

from configuration.errors import ConfigError, ConfigIssue, DocumentProblem, Loc, config_error, format_loc
from configuration.yaml_source import YamlDocument, display_path, parse_yaml, read_yaml, validate
from vocabulary.stations import STATION_ID_PATTERN, STATION_KINDS

log = structlog.get_logger("collector.qc")

DEFAULTS_PATH = Path(__file__).resolve().parent / "defaults.yaml"
README = "collector/qc/README.md"
MAX_SPIKE_WINDOW = 8  # below state.HISTORY (16): the rest leaves room for redeliveries to find their neighbours
NS = 1_000_000_000

# --------------------------------------------------------------------------- #
# Errors
# --------------------------------------------------------------------------- #


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
    "spike": {
        "suspect": ("pos", REQUIRED),
        "fail": ("pos", math.inf),
        "window": ("int1", 3),
        "max_gap_s": ("pos", 3600.0),
    },
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

# Column layout of ParamThresholds.vector, the numbers the vectorised checks read.
COLS = (
    "range_on", "fail_lo", "fail_hi", "suspect_lo", "suspect_hi",
    "spike_window", "spike_suspect", "spike_fail", "spike_gap_ns",
    "roc_on", "roc_per_s", "roc_min_delta", "roc_gap_ns",
    "flat_on", "flat_tol", "flat_floor", "flat_min_count", "flat_suspect_ns", "flat_fail_ns",
    "range_profile",  # > 0: the fail span is the analyzer profile's range, ThresholdSource.range_profiles[i]
)  # fmt: skip
C = {name: i for i, name in enumerate(COLS)}
NO_VECTOR = tuple([0.0] * len(COLS))  # a series without thresholds: every check off
ANALYZER = "analyzer"  # Setting.path of a fail span taken from an analyzer profile's range

# (station, device, parameter, unit) -> (low, high, profile): the analyzers' measuring ranges
AnalyzerRanges = Mapping[tuple[str, str, str, str], tuple[float, float, str]]


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
    devices: dict[str, Scope] = field(default_factory=dict)


@dataclass
class ThresholdsFile:
    source: str
    top: Scope
    kinds: dict[str, Scope]
    stations: dict[str, StationScope]


# The file as pydantic models. Every value is validated on its own here, with
# the file's words for each problem; whether the blocks make sense merged with
# the layers under them is checked when a ThresholdSource installs the file.


def _shape(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def _number(value: Any, allow_null: bool = False) -> float | None:
    if value is None and allow_null:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        fix = "write a number"
        if isinstance(value, str):
            try:
                float(value)
                fix = "write the number without quotes"
            except ValueError:
                pass
        raise config_error(f"expected a number, got {_shape(value)}", fix)
    if not math.isfinite(value):
        raise config_error(
            f"expected a finite number, got {value}", "write a finite number (null for an open end of a span)"
        )
    return float(value)


def _span(value: Any) -> tuple[float, float]:
    if not isinstance(value, list) or len(value) != 2:
        raise config_error(
            f"expected [low, high], got {_shape(value)}",
            "write two numbers in brackets, e.g. [0, 1000]; null for an open end",
        )
    lo, hi = (_number(v, allow_null=True) for v in value)
    lo = -math.inf if lo is None else lo
    hi = math.inf if hi is None else hi
    if not lo < hi:
        raise config_error(f"low {lo:g} is not below high {hi:g}", "write [low, high] with low < high")
    return (lo, hi)


def _positive(value: Any) -> float:
    num = _number(value)
    if not num > 0:
        raise config_error(
            f"must be greater than 0, got {num:g}", "write a positive number (switch the whole check off with `off`)"
        )
    return num


def _non_negative(value: Any) -> float:
    num = _number(value)
    if num < 0:
        raise config_error(f"must not be negative, got {num:g}", "write 0 or a positive number")
    return num


def _whole(low: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        num = _number(value)
        if num != int(num) or num < low:
            raise config_error(
                f"expected a whole number >= {low}, got {num:g}", f"write a whole number such as {max(low, 3)}"
            )
        return int(num)

    return check


def _date(value: Any) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC)
    raise config_error(f"expected a date, got {_shape(value)}", "write a date without quotes, e.g. 2020-01-01")


def _true_or_false(value: Any) -> bool:
    if not isinstance(value, bool):
        raise config_error(f"expected true or false, got {_shape(value)}", "write true or false")
    return value


def _symbol(value: Any) -> str:
    if isinstance(value, bool):
        raise config_error(f"YAML read an unquoted word as the boolean {value}", "put the symbol in quotes")
    if not isinstance(value, str) or not value:
        raise config_error(
            f"expected a parameter symbol, got {_shape(value)}", 'write the regulation symbol, e.g. "PM2,5" or NOx'
        )
    return value


def _name(value: Any) -> str:
    """A mapping key chosen by people (a symbol, a unit, a device): plain text."""
    if value is None or value == "":
        raise config_error("empty key", "give the key a name")
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise config_error("keys must be plain text", "use a name as the key")
    return str(value)


def _station_id(value: Any) -> str:
    text = _name(value)
    if not STATION_ID_PATTERN.match(text):
        raise config_error(
            f"{text!r} is not a station id", "use 1-64 characters of A-Z a-z 0-9 _ . - starting with a letter or digit"
        )
    return text


def _station_kind(value: Any) -> str:
    text = _name(value)
    if text not in STATION_KINDS:
        close = difflib.get_close_matches(text, STATION_KINDS, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise config_error(f"{text!r} is not a station kind", f"{hint}use one of {', '.join(STATION_KINDS)}")
    return text


Span = Annotated[tuple[float, float], PlainValidator(_span)]
Positive = Annotated[float, PlainValidator(_positive)]
NonNegative = Annotated[float, PlainValidator(_non_negative)]
NumberOrNull = Annotated[float | None, PlainValidator(lambda v: _number(v, allow_null=True))]
Name = Annotated[str, BeforeValidator(_name)]


class _Block(BaseModel):
    """A block of settings. A key left out is inherited from the layers below, so
    the models have no defaults of their own: CHECK_KEYS, TIMESTAMP_KEYS,
    CLOCK_KEYS and RULE_KEYS say what applies when no layer sets a key."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class GrossRangeBlock(_Block):
    fail: Span = None
    suspect: Span = None


class SpikeBlock(_Block):
    suspect: Positive = None
    fail: Positive = None
    window: Annotated[int, PlainValidator(_whole(1))] = None
    max_gap_s: Positive = None


class RateOfChangeBlock(_Block):
    suspect_per_s: Positive = None
    min_delta: NonNegative = None
    max_gap_s: Positive = None


class FlatLineBlock(_Block):
    tolerance: NonNegative = None
    floor: NumberOrNull = None
    min_count: Annotated[int, PlainValidator(_whole(2))] = None
    suspect_s: Positive = None
    fail_s: Positive = None


def _settings_or_off(check: str) -> Callable[[Any], Any]:
    def check_value(value: Any) -> Any:
        if value is False:
            return None  # `off`; set but None is how the layers see "switched off here"
        if isinstance(value, dict):
            return value
        raise config_error(
            f"expected settings or `off`, got {_shape(value)}", f"write {check}: off, or {check}: {{...}}"
        )

    return check_value


class ChecksBlock(_Block):
    """What a parameter in one unit sets; a key left out is inherited from the layers below."""

    gross_range: Annotated[GrossRangeBlock | None, BeforeValidator(_settings_or_off("gross_range"))] = None
    spike: Annotated[SpikeBlock | None, BeforeValidator(_settings_or_off("spike"))] = None
    rate_of_change: Annotated[RateOfChangeBlock | None, BeforeValidator(_settings_or_off("rate_of_change"))] = None
    flat_line: Annotated[FlatLineBlock | None, BeforeValidator(_settings_or_off("flat_line"))] = None


class TimestampsBlock(_Block):
    future_skew_s: NonNegative = None
    max_age_s: Positive = None
    not_before: Annotated[dt.datetime, PlainValidator(_date)] = None


class ClockBlock(_Block):
    max_offset_s: NonNegative = None


class RuleBlock(_Block):
    lesser: Annotated[str, PlainValidator(_symbol)]
    greater: Annotated[str, PlainValidator(_symbol)]
    rel_tolerance: NonNegative = None
    abs_tolerance: NonNegative = None
    enabled: Annotated[bool, PlainValidator(_true_or_false)] = None

    @model_validator(mode="before")
    @classmethod
    def _both_sides(cls, value: Any) -> Any:
        if isinstance(value, dict) and ("lesser" not in value or "greater" not in value):
            raise config_error("a consistency rule needs both lesser and greater", "write {lesser: NO2, greater: NOx}")
        return value


Parameters = dict[Name, dict[Name, ChecksBlock]]


class DeviceBlock(_Block):
    parameters: Parameters = {}


class ScopeBlock(_Block):
    timestamps: TimestampsBlock = TimestampsBlock()
    clock: ClockBlock = ClockBlock()
    consistency: list[RuleBlock] = []
    parameters: Parameters = {}


class StationBlock(ScopeBlock):
    devices: dict[Name, DeviceBlock] = {}


class QcSection(ScopeBlock):
    kinds: dict[Annotated[str, BeforeValidator(_station_kind)], ScopeBlock] = {}
    stations: dict[Annotated[str, BeforeValidator(_station_id)], StationBlock] = {}


class ThresholdsDocument(_Block):
    qc: QcSection | None


CHECK_BLOCKS: dict[str, type[_Block]] = {
    "gross_range": GrossRangeBlock,
    "spike": SpikeBlock,
    "rate_of_change": RateOfChangeBlock,
    "flat_line": FlatLineBlock,
}


def _parameter_maps(qc: Any) -> Iterator[tuple[Loc, Any]]:
    """(loc, the raw ``parameters:`` mapping) of every scope of a ``qc:`` section."""
    if not isinstance(qc, dict):
        return
    yield ("qc", "parameters"), qc.get("parameters")
    for kind, scope in (qc.get("kinds") or {}).items() if isinstance(qc.get("kinds"), dict) else ():
        if isinstance(scope, dict):
            yield ("qc", "kinds", kind, "parameters"), scope.get("parameters")
    for st, scope in (qc.get("stations") or {}).items() if isinstance(qc.get("stations"), dict) else ():
        if not isinstance(scope, dict):
            continue
        yield ("qc", "stations", st, "parameters"), scope.get("parameters")
        devices = scope.get("devices")
        for dev, dscope in devices.items() if isinstance(devices, dict) else ():
            if isinstance(dscope, dict):
                yield ("qc", "stations", st, "devices", dev, "parameters"), dscope.get("parameters")


def _layout_problems(data: Any) -> list[DocumentProblem]:
    """What the models cannot say with the right line; the offending entries are removed from ``data``."""
    problems: list[DocumentProblem] = []
    qc = data.get("qc") if isinstance(data, dict) else None
    for loc, params in list(_parameter_maps(qc)):
        for sym, units in params.items() if isinstance(params, dict) else ():
            for unit in [u for u in units if u in CHECK_KEYS] if isinstance(units, dict) else ():
                problems.append(
                    DocumentProblem(
                        loc + (sym, unit),
                        f"{unit!r} is a check, but this level names the unit",
                        f"put the unit first: {sym}: {{ug/m3: {{{unit}: ...}}}}",
                    )
                )
                del units[unit]
    stations = qc.get("stations") if isinstance(qc, dict) else None
    for st, scope in stations.items() if isinstance(stations, dict) else ():
        if isinstance(scope, dict) and "kind" in scope:
            kind = scope.pop("kind")
            problems.append(
                DocumentProblem(
                    ("qc", "stations", st, "kind"),
                    "a station's kind is no longer set in the QC file (it is the station's registry entry)",
                    f"remove this line and set the kind in the registry: quantrac station set-kind {st} {kind}",
                )
            )
    return problems


class _Converter:
    """Validated models -> the layers' Scope structures, each setting with its line."""

    def __init__(self, doc: YamlDocument) -> None:
        self.doc = doc
        self.issues: list[ConfigIssue] = []

    def setting(self, value: Any, loc: Loc) -> Setting:
        return Setting(value, self.doc.shown, self.doc.line_of(loc), format_loc(loc))

    def settings(self, block: BaseModel, loc: Loc) -> dict[str, Setting]:
        return {
            key: self.setting(getattr(block, key), loc + (key,))
            for key in type(block).model_fields
            if key in block.model_fields_set
        }

    def scope(self, block: ScopeBlock | DeviceBlock, loc: Loc, target: Scope) -> Scope:
        if isinstance(block, ScopeBlock):
            target.timestamps = self.settings(block.timestamps, loc + ("timestamps",))
            target.clock = self.settings(block.clock, loc + ("clock",))
            target.rules = self.rules(block.consistency, loc + ("consistency",))
        target.parameters = {
            sym: {unit: self.checks(checks, loc + ("parameters", sym, unit)) for unit, checks in units.items()}
            for sym, units in block.parameters.items()
        }
        return target

    def checks(self, block: ChecksBlock, loc: Loc) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for check in CHECK_KEYS:
            if check in block.model_fields_set:
                settings = getattr(block, check)
                out[check] = False if settings is None else self.settings(settings, loc + (check,))
        return out

    def rules(self, rules: list[RuleBlock], loc: Loc) -> dict[tuple[str, str], dict[str, Setting]]:
        out: dict[tuple[str, str], dict[str, Setting]] = {}
        for i, rule in enumerate(rules):
            pair = (rule.lesser, rule.greater)
            if pair[0] == pair[1]:
                self.issues.append(
                    self.doc.issue(loc + (i,), f"rule compares {pair[0]} with itself", "name two different parameters")
                )
            elif pair in out:
                self.issues.append(
                    self.doc.issue(loc + (i,), f"a second rule for {pair[0]} <= {pair[1]}", "merge the two rules")
                )
            else:
                out[pair] = self.settings(rule, loc + (i,))
        return out


def _thresholds_file(doc: YamlDocument) -> ThresholdsFile:
    out = ThresholdsFile(doc.shown, Scope(), {}, {})
    if doc.data is None:
        return out  # an empty overrides file: defaults only
    data = copy.deepcopy(doc.data)
    issues = doc.issues(_layout_problems(data))
    try:
        model = validate(ThresholdsDocument, doc, data=data)
    except ConfigError as exc:
        raise ThresholdsError(sorted(issues + exc.issues, key=lambda i: i.line)) from None
    if issues:
        raise ThresholdsError(issues)
    if model.qc is None:
        return out
    conv = _Converter(doc)
    conv.scope(model.qc, ("qc",), out.top)
    out.kinds = {kind: conv.scope(block, ("qc", "kinds", kind), Scope()) for kind, block in model.qc.kinds.items()}
    for st, block in model.qc.stations.items():
        station = conv.scope(block, ("qc", "stations", st), StationScope())
        assert isinstance(station, StationScope)
        station.devices = {
            dev: conv.scope(dblock, ("qc", "stations", st, "devices", dev), Scope())
            for dev, dblock in block.devices.items()
        }
        out.stations[st] = station
    if conv.issues:
        raise ThresholdsError(conv.issues)
    return out


def _as_thresholds_error(read: Callable[[], YamlDocument]) -> YamlDocument:
    try:
        return read()
    except ConfigError as exc:
        raise ThresholdsError(exc.issues) from None


def parse_thresholds(text: str, source: str) -> ThresholdsFile:
    """Parse and check one thresholds document; raises ThresholdsError listing every issue.

    Checks each value on its own; whether the blocks make sense merged with
    the layers under them (a suspect span inside the inherited fail span) is
    checked when a ThresholdSource installs the file over the defaults.
    """
    return _thresholds_file(
        _as_thresholds_error(
            lambda: parse_yaml(text.encode("utf-8"), source, readme=README, allow_empty=True, allowed_words=OFF)
        )
    )


def read_thresholds(path: Path) -> ThresholdsFile:
    return _thresholds_file(
        _as_thresholds_error(lambda: read_yaml(path, readme=README, allow_empty=True, allowed_words=OFF))
    )


OFF = frozenset({"off"})  # `spike: off` switches a check off: the one yes/no word the format means

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


def _resolve_check(
    check: str, merged: dict[str, Setting] | None
) -> tuple[dict[str, Any] | None, tuple[str, str, Setting | None] | None]:
    """Merged settings -> (values with defaults, problem); a problem is (message, fix, where)."""
    if merged is None:
        return None, None
    values: dict[str, Any] = {}
    last = max(merged.values(), key=lambda s: s.line) if merged else None
    for key, (_kind, default) in CHECK_KEYS[check].items():
        if key in merged:
            values[key] = merged[key].value
        elif default is REQUIRED:
            return None, (
                f"{check} needs `{key}` (not set here, nor inherited)",
                f"add {key}: ... to this {check} block",
                last,
            )
        else:
            values[key] = default
    if values.get("window", 1) > MAX_SPIKE_WINDOW:
        return None, (
            f"spike window {values['window']} is more than {MAX_SPIKE_WINDOW}",
            f"use a window of 1 to {MAX_SPIKE_WINDOW}",
            merged.get("window", last),
        )
    # An analyzer's range may be narrower than the operator's suspect span: outside it a value
    # fails before the suspect span is looked at, so the two need not nest.
    if check == "gross_range" and values["suspect"] is not None and merged["fail"].path != ANALYZER:
        (flo, fhi), (slo, shi) = values["fail"], values["suspect"]
        if slo < flo or shi > fhi:
            return None, (
                f"suspect span [{slo:g}, {shi:g}] is not inside the fail span [{flo:g}, {fhi:g}]",
                "narrow the suspect span to lie within the fail span, or widen fail in the same block",
                merged.get("suspect", last),
            )
    if check == "spike" and values["fail"] < values["suspect"]:
        return None, (
            f"spike fail {values['fail']:g} is below suspect {values['suspect']:g}",
            "make fail at least suspect",
            merged.get("fail", last),
        )
    if check == "flat_line" and values["fail_s"] < values["suspect_s"]:
        return None, (
            f"flat_line fail_s {values['fail_s']:g} is below suspect_s {values['suspect_s']:g}",
            "make fail_s at least suspect_s",
            merged.get("fail_s", last),
        )
    return values, None


def _vector(
    gr: dict | None, sp: dict | None, roc: dict | None, fl: dict | None, range_profile: int = 0
) -> tuple[float, ...]:
    inf = math.inf
    v = [0.0] * len(COLS)
    if gr is not None:
        v[C["range_on"]] = 1.0
        v[C["range_profile"]] = float(range_profile)
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

    def __init__(
        self,
        defaults: ThresholdsFile,
        overrides: ThresholdsFile | None,
        kinds: Mapping[str, str] = MappingProxyType({}),
        ranges: AnalyzerRanges = MappingProxyType({}),
    ) -> None:
        self.defaults = defaults
        self.overrides = overrides or ThresholdsFile("", Scope(), {}, {})
        self.kinds = kinds
        self.ranges = ranges
        # Index 0: no profile; causes name the profile by its index in the vector (range_profile).
        self.range_profiles = ["", *sorted({profile for _lo, _hi, profile in ranges.values()})]
        self._profile_index = {name: i for i, name in enumerate(self.range_profiles)}

    def kind_of(self, station: str) -> str | None:
        """The station's kind, from its registry entry."""
        return self.kinds.get(station)

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

    def param_layers(
        self, station: str | None, kind: str | None, device: str | None, parameter: str, unit: str
    ) -> list[dict[str, Any]]:
        scopes = self.scopes(station, kind)
        layers = [s.parameters[parameter][unit] for s in scopes if unit in s.parameters.get(parameter, {})]
        if station is None or device is None:
            return layers
        analyzer = self.ranges.get((station, device, parameter, unit))
        if analyzer is not None:
            low, high, profile = analyzer
            layers.append({"gross_range": {"fail": Setting((low, high), f"profile {profile}", 0, ANALYZER)}})
        dev = self.overrides.stations[station].devices.get(device) if station in self.overrides.stations else None
        if dev is not None and unit in dev.parameters.get(parameter, {}):
            layers.append(dev.parameters[parameter][unit])
        return layers

    def resolve_param(
        self, station: str | None, kind: str | None, device: str | None, parameter: str, unit: str
    ) -> tuple[ParamThresholds | None, list[tuple[str, str, Setting | None]]]:
        layers = self.param_layers(station, kind, device, parameter, unit)
        if not layers:
            return None, []
        problems: list[tuple[str, str, Setting | None]] = []
        resolved: dict[str, dict | None] = {}
        range_profile = 0
        for check in CHECK_KEYS:
            merged = _merge_check([layer[check] for layer in layers if check in layer])
            values, problem = _resolve_check(check, merged)
            if problem:
                problems.append(problem)
            resolved[check] = values
            if check == "gross_range" and values is not None and merged["fail"].path == ANALYZER:
                range_profile = self._profile_index[self.ranges[station, device, parameter, unit][2]]
        pt = ParamThresholds(
            parameter,
            unit,
            resolved["gross_range"],
            resolved["spike"],
            resolved["rate_of_change"],
            resolved["flat_line"],
            _vector(
                resolved["gross_range"],
                resolved["spike"],
                resolved["rate_of_change"],
                resolved["flat_line"],
                range_profile,
            ),
        )
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
            not_before = dt.datetime(not_before.year, not_before.month, not_before.day, tzinfo=dt.UTC)
        epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
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


def _check_config(cfg: Config, source: str) -> list[ConfigIssue]:
    """Resolve every combination the files configure, so merge problems surface at load, with a line.

    Generic (file-wide and per-kind) blocks are resolved under every kind; a
    station's own blocks under its kind, for the station and each device.
    """
    seen: set[str] = set()
    issues: list[ConfigIssue] = []
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
        kind = cfg.kind_of(st)
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
            issue = ConfigIssue(
                where.file if where else source,
                where.line if where else 0,
                where.path.rsplit(".", 1)[0] if where else "",
                message,
                fix,
            )
            if str(issue) not in seen:
                seen.add(str(issue))
                issues.append(issue)
    return issues


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

    ``station_kinds`` returns the registry's station id -> kind mapping
    (``StationRegistry.kinds``); each reload asks it again, and a changed
    mapping (compared by identity: the registry hands out a new one only when
    a kind changed) applies the kind layers anew. Without it no station has a
    kind and only the generic layers apply.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        defaults_path: str | os.PathLike[str] = DEFAULTS_PATH,
        station_kinds: Callable[[], Mapping[str, str]] | None = None,
        analyzer_ranges: Callable[[], AnalyzerRanges] | None = None,
    ) -> None:
        self.path = Path(path) if path is not None else None
        self.defaults_path = Path(defaults_path)
        self._station_kinds = station_kinds
        self._kinds: Mapping[str, str] = station_kinds() if station_kinds is not None else MappingProxyType({})
        self._analyzer_ranges = analyzer_ranges
        self._ranges: AnalyzerRanges = analyzer_ranges() if analyzer_ranges is not None else MappingProxyType({})
        self._overrides: ThresholdsFile | None = None
        self._defaults = read_thresholds(self.defaults_path)
        self._stamp: tuple[int, int] | None = None
        self.generation = 0
        self.last_error: ThresholdsError | None = None
        self.reload_errors = 0  # broken versions seen while running (one per change of the file or the kinds)
        self._refused_kinds: Mapping[str, str] | None = None  # kinds found invalid: judged once, not per flush
        self._install(None, self._kinds)
        if self.path is not None:
            if not self.path.exists():
                raise ThresholdsError(
                    [
                        ConfigIssue(
                            display_path(self.path),
                            0,
                            "",
                            "file not found",
                            "check the path, or start without a thresholds file",
                        )
                    ]
                )
            self.reload_if_changed(raise_errors=True)

    def _install(self, overrides: ThresholdsFile | None, kinds: Mapping[str, str], check: bool = True) -> None:
        cfg = Config(self._defaults, overrides, kinds, self._ranges)
        # The analyzer layer cannot make a combination invalid (see _resolve_check): new ranges alone
        # need no check.
        issues = _check_config(cfg, overrides.source if overrides else str(self.defaults_path)) if check else []
        if issues:
            raise ThresholdsError(issues)
        self._overrides, self._kinds = overrides, kinds
        self._config = cfg
        self._params: dict[tuple[str, str, str, str], ParamThresholds | None] = {}
        self._stations: dict[str, StationSettings] = {}
        # Distinct setting rows: a handful per parameter, however many series share them.
        self._vectors: dict[tuple[float, ...], int] = {NO_VECTOR: 0}
        self._matrix = np.array([NO_VECTOR])
        self.generation += 1

    def reload_if_changed(self, raise_errors: bool = False) -> bool:
        """Re-read the overrides file if its mtime or size changed, and the stations'
        kinds if they changed; True if new thresholds apply."""
        kinds_applied = self._reload_kinds(raise_errors)
        ranges_applied = self._reload_ranges()
        return self._reload_file(raise_errors) or kinds_applied or ranges_applied

    def _reload_ranges(self) -> bool:
        if self._analyzer_ranges is None:
            return False
        ranges = self._analyzer_ranges()
        if ranges is self._ranges:
            return False
        self._ranges = ranges
        self._install(self._overrides, self._kinds, check=False)
        log.info("qc_analyzer_ranges_applied", ranges=len(ranges), generation=self.generation)
        return True

    def _reload_kinds(self, raise_errors: bool) -> bool:
        if self._station_kinds is None:
            return False
        kinds = self._station_kinds()
        if kinds is self._kinds or kinds is self._refused_kinds:
            return False
        try:
            self._install(self._overrides, kinds)
        except ThresholdsError as exc:
            self.last_error = exc
            if raise_errors:
                raise
            self._refused_kinds = kinds
            self.reload_errors += 1
            log.error(
                "qc_thresholds_invalid",
                reason="station kinds changed in the registry",
                issues=[str(i) for i in exc.issues],
                kept_generation=self.generation,
            )
            return False
        log.info("qc_station_kinds_applied", stations=len(kinds), generation=self.generation)
        return True

    def _reload_file(self, raise_errors: bool) -> bool:
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
            self._install(read_thresholds(self.path), self._kinds)
        except ThresholdsError as exc:
            self.last_error = exc
            if raise_errors:
                raise
            self.reload_errors += 1
            log.error(
                "qc_thresholds_invalid",
                file=str(self.path),
                issues=[str(i) for i in exc.issues],
                kept_generation=self.generation,
            )
            return False
        self.last_error = None
        self._refused_kinds = None  # try the registry's kinds again against the mended file
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
            pt = ParamThresholds(
                pt.parameter, pt.unit, pt.gross_range, pt.spike, pt.rate_of_change, pt.flat_line, pt.vector, vid
            )
        if len(self._params) > 200_000:  # bounded: junk device/parameter names must not grow it forever
            self._params.clear()
        self._params[key] = pt
        return pt

    @property
    def range_profiles(self) -> list[str]:
        """Profile names by the ``range_profile`` column (0: the fail span is not an analyzer's)."""
        return self._config.range_profiles

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
