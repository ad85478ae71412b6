"""The aggregation settings and the QCVN limit files, read through ``configuration`` (FILE:LINE errors).

Settings (``--settings FILE``, layout in analysis/README.md) hold the completeness rules (defaults
plus per-parameter overrides), each station's logging interval and which regulation applies to it
(zone or column, Kq, Kf), and the episode rules. Limits are data, one YAML per regulation and
version in ``analysis/limits/``; a station picks one by its file name (``qcvn_19_2024``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from analysis.averages import AveragingRule
from configuration.errors import DocumentProblem, SemanticErrors
from configuration.yaml_source import read_yaml, validate
from store.analysis_queries import HOUR_NS
from vocabulary.parameters import misspelt_parameter

README = "analysis/README.md"
LIMITS_DIR = Path(__file__).resolve().parent / "limits"
PERIOD_NS = {"1h": HOUR_NS, "8h": 8 * HOUR_NS, "24h": 24 * HOUR_NS}
Period = Literal["1h", "8h", "24h"]


def _parameter_problem(loc: tuple, symbol: str) -> DocumentProblem | None:
    meant = misspelt_parameter(symbol)
    if meant is None:
        return None
    return DocumentProblem(
        loc, f"unknown parameter {symbol!r}", f"write {meant!r}, as TT10 spells it (vocabulary/parameters.py)"
    )


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ----------------------------------------------------------------------------------- limit files
class LimitSpec(_Strict):
    period: Period
    value: float | None = None  # the same for every zone/column
    by: dict[str, float] | None = None  # zone or column -> value
    lower: float | None = None
    lower_by: dict[str, float] | None = None
    scaled: bool = True  # multiplied by Kq x Kf where the regulation says so
    from_: dt.date | None = Field(None, alias="from")
    until: dt.date | None = None

    @model_validator(mode="after")
    def _one_value(self) -> LimitSpec:
        if (self.value is None) == (self.by is None):
            raise ValueError("give exactly one of value: (one number) or by: (per zone/column)")
        return self


class ParameterLimits(_Strict):
    unit: str
    limits: list[LimitSpec]


class LimitFile(_Strict):
    regulation: str
    kinds: list[str]
    effective_from: dt.date
    until: dt.date | None = None
    confidence: str = "primary"
    selector: Literal["zone", "column"] | None = None
    scaled_by_kq_kf: bool = False
    # The O2 (% by volume, dry) the limits are stated at: a stack's measured concentration is corrected to
    # it, C_ref = C x (21 - O2_ref) / (21 - O2_measured), before it is compared (analysis/README.md).
    reference_o2: float | None = Field(None, ge=0, lt=21)
    parameters: dict[str, ParameterLimits]

    @model_validator(mode="after")
    def _selector(self) -> LimitFile:
        problems = []
        for symbol, block in self.parameters.items():
            if (problem := _parameter_problem(("parameters", symbol), symbol)) is not None:
                problems.append(problem)
            for i, spec in enumerate(block.limits):
                if spec.by is not None and self.selector is None:
                    problems.append(
                        DocumentProblem(
                            ("parameters", symbol, "limits", i, "by"),
                            "per-zone values need a selector",
                            "add `selector: zone` (or column) at the top of the file",
                        )
                    )
        if problems:
            raise SemanticErrors(problems)
        return self


@dataclass(frozen=True)
class Limit:
    """One limit as it applies to one station: a value on one averaging period of one parameter."""

    limit_id: str
    regulation: str
    parameter: str
    unit: str
    period: str
    value: float
    lower: float | None
    starts: int | None  # UTC ns of period END from which it applies (effective dates are local days)
    ends: int | None
    confidence: str
    reference_o2: float | None = None  # correct to this O2 % before comparing (None: compare as measured)
    o2_parameter: str = "O2"  # the station's series of measured O2 (%), same device preferred

    def applies(self, period_end: int) -> bool:
        return (self.starts is None or period_end > self.starts) and (self.ends is None or period_end <= self.ends)


def _local_midnight_ns(day: dt.date | None) -> int | None:
    if day is None:
        return None
    from vocabulary.local_time import VIETNAM

    moment = dt.datetime(day.year, day.month, day.day, tzinfo=VIETNAM)
    return int(moment.timestamp()) * 1_000_000_000


def load_limit_file(name: str, directory: Path = LIMITS_DIR) -> LimitFile:
    doc = read_yaml(directory / f"{name}.yaml", readme=README)
    return validate(LimitFile, doc)


# ----------------------------------------------------------------------------------- settings
class RuleBlock(_Strict):
    interval_s: float | None = Field(None, gt=0)
    min_hour_coverage: float | None = Field(None, gt=0, le=1)
    admit_not_evaluated: bool | None = None
    admit_suspect: bool | None = None
    min_hours_per_day: int | None = Field(None, ge=1, le=24)
    min_hours_per_8h: int | None = Field(None, ge=1, le=8)


class AveragingBlock(RuleBlock):
    eight_hour_parameters: list[str] = ["O3", "CO"]
    parameters: dict[str, RuleBlock] = {}


class EpisodeRules(_Strict):
    hysteresis: float = Field(0.1, ge=0, lt=1)  # close when the mean falls under limit x (1 - hysteresis)
    escalate_after: int = Field(3, ge=1)  # exceeding periods in the episode before it escalates
    escalate_factor: float | None = Field(2.0, gt=1)  # or at once when the mean exceeds limit x this


class EpisodeBlock(_Strict):
    hysteresis: float | None = Field(None, ge=0, lt=1)
    escalate_after: int | None = Field(None, ge=1)
    escalate_factor: float | None = Field(None, gt=1)


class AvailabilityRules(_Strict):
    """When a technician is told (analysis/README.md, "Data availability")."""

    silent_after_s: float = Field(900.0, gt=0)  # no reading from the station for this long
    device_error_after_s: float = Field(600.0, gt=0)  # a series reporting 02 for this long
    calibration_after_s: float = Field(4 * 3600.0, gt=0)  # a series reporting 01 for this long
    incomplete_hours: int = Field(3, ge=1)  # this many invalid hourly means in a row
    lookback_days: float = Field(7.0, gt=0, le=60)  # how far back a condition's start is looked for


class StationAvailability(_Strict):
    silent_after_s: float | None = Field(None, gt=0)  # a station that reports every 5 minutes by file, say


class StationLimitChoice(_Strict):
    regulation: str  # a file name in analysis/limits/ without .yaml
    zone: str | None = None
    column: str | None = None
    kq: float = Field(1.0, gt=0)
    kf: float = Field(1.0, gt=0)
    reference_o2: float | None = Field(None, ge=0, lt=21)  # a permit's own reference O2 (the file's otherwise)
    o2_parameter: str = "O2"


class StationBlock(_Strict):
    interval_s: float | None = Field(None, gt=0)  # refused at load (so is parameters.<P>.interval_s): the registry's
    parameters: dict[str, RuleBlock] = {}
    aqi: bool | None = None  # default: true for ambient_air stations
    limits: list[StationLimitChoice] | None = None  # default: the files whose kinds name the station's kind
    episodes: EpisodeBlock = EpisodeBlock()
    availability: StationAvailability = StationAvailability()


def _station_intervals(raw: SettingsFile) -> list[tuple[tuple, str, str]]:
    """(loc, station, the --interval argument meant) of every per-station interval_s in the settings."""
    found = []
    for sid, block in raw.stations.items():
        if block.interval_s is not None:
            found.append((("stations", sid, "interval_s"), sid, f"<PARAMETER>={block.interval_s:g}"))
        for symbol, rules in block.parameters.items():
            if rules.interval_s is not None:
                found.append(
                    (
                        ("stations", sid, "parameters", symbol, "interval_s"),
                        sid,
                        f"{misspelt_parameter(symbol) or symbol}={rules.interval_s:g}",
                    )
                )
    return found


class SettingsFile(_Strict):
    averaging: AveragingBlock = AveragingBlock()
    episodes: EpisodeRules = EpisodeRules()
    availability: AvailabilityRules = AvailabilityRules()
    stations: dict[str, StationBlock] = {}


def _merge(rule: AveragingRule, block: RuleBlock | None) -> AveragingRule:
    if block is None:
        return rule
    changes = {k: getattr(block, k) for k in RuleBlock.model_fields if getattr(block, k) is not None}
    return dataclasses.replace(rule, **changes)


DEFAULT_KIND_LIMITS = {"ambient_air": "qcvn_05_2023"}


class Settings:
    """The merged settings: rules per (station, parameter), limits per station, episode rules."""

    def __init__(self, raw: SettingsFile, source: str = "(defaults)", limits_dir: Path = LIMITS_DIR) -> None:
        self.raw = raw
        self.source = source
        self.limits_dir = limits_dir
        self._files: dict[str, LimitFile] = {}
        base = _merge(AveragingRule(), raw.averaging)
        self._base = base
        self._rules: dict[tuple[str, str, float | None], AveragingRule] = {}
        self.eight_hour_parameters = tuple(raw.averaging.eight_hour_parameters)
        for choice in (c for s in raw.stations.values() for c in (s.limits or [])):
            self.limit_file(choice.regulation)  # a missing or broken file fails at start, not at the first alert

    @property
    def availability(self) -> AvailabilityRules:
        return self.raw.availability

    def silent_after_s(self, station: str) -> float:
        block = self.raw.stations.get(station)
        own = block.availability.silent_after_s if block is not None else None
        return own if own is not None else self.raw.availability.silent_after_s

    @classmethod
    def load(cls, path: Path | None) -> Settings:
        if path is None:
            return cls(SettingsFile())
        doc = read_yaml(path, readme=README)
        raw = validate(SettingsFile, doc)
        symbols = [
            *((("averaging", "parameters", p), p) for p in raw.averaging.parameters),
            *(
                (("averaging", "eight_hour_parameters", i), p)
                for i, p in enumerate(raw.averaging.eight_hour_parameters)
            ),
            *((("stations", sid, "parameters", p), p) for sid, b in raw.stations.items() for p in b.parameters),
        ]
        problems = [doc.issue(x.loc, x.message, x.fix) for loc, p in symbols if (x := _parameter_problem(loc, p))]
        problems += [
            doc.issue(
                loc,
                "a station's logging interval is a fact of the station: it lives in the registry now",
                f"remove this line and run `quantrac station set {sid} --interval {interval}` (collector/README.md)",
            )
            for loc, sid, interval in _station_intervals(raw)
        ]
        problems += [
            doc.issue(("stations", sid, "limits", i, "regulation"), f"no limit file {c.regulation}.yaml", fix)
            for sid, block in raw.stations.items()
            for i, c in enumerate(block.limits or [])
            if not (LIMITS_DIR / f"{c.regulation}.yaml").is_file()
            for fix in [f"use one of {', '.join(sorted(p.stem for p in LIMITS_DIR.glob('*.yaml')))}"]
        ]
        if problems:
            from configuration.errors import ConfigError

            raise ConfigError(problems)
        return cls(raw, doc.shown)

    def limit_file(self, name: str) -> LimitFile:
        if name not in self._files:
            self._files[name] = load_limit_file(name, self.limits_dir)
        return self._files[name]

    def rule(self, station: str, parameter: str, logged_interval_s: float | None = None) -> AveragingRule:
        """The rule of one station's parameter. ``logged_interval_s`` is the registry's logging interval of
        it (collector/registry.py, the one place that fact lives); without one, the settings' default
        (``averaging.parameters.<P>.interval_s``, else ``averaging.interval_s``, else 60 s) is assumed."""
        key = (station, parameter, logged_interval_s)
        rule = self._rules.get(key)
        if rule is None:
            rule = _merge(self._base, self.raw.averaging.parameters.get(parameter))
            rule = _merge(rule, RuleBlock(interval_s=logged_interval_s))
            block = self.raw.stations.get(station)
            if block is not None:
                rule = _merge(rule, block.parameters.get(parameter))  # its interval_s is refused at load
            self._rules[key] = rule
        return rule

    def daily_rules(self, station: str):
        """VN_AQI's DailyRules per parameter, from the same completeness settings."""
        from store.vn_aqi import PARAMETERS, DailyRules

        return {
            p: DailyRules(self.rule(station, p).min_hours_per_day, self.rule(station, p).min_hours_per_8h)
            for p in PARAMETERS
        }

    def aqi(self, station: str, kind: str | None) -> bool:
        block = self.raw.stations.get(station)
        if block is not None and block.aqi is not None:
            return block.aqi
        return kind == "ambient_air"

    def episode_rules(self, station: str) -> EpisodeRules:
        block = self.raw.stations.get(station)
        if block is None:
            return self.raw.episodes
        changes = {k: v for k, v in block.episodes.model_dump().items() if v is not None}
        return self.raw.episodes.model_copy(update=changes)

    def limits(self, station: str, kind: str | None) -> list[Limit]:
        block = self.raw.stations.get(station)
        choices = block.limits if block is not None and block.limits is not None else None
        if choices is None:
            default = DEFAULT_KIND_LIMITS.get(kind or "")
            choices = [StationLimitChoice(regulation=default)] if default else []
        out: list[Limit] = []
        for choice in choices:
            f = self.limit_file(choice.regulation)
            pick = choice.zone if f.selector == "zone" else choice.column if f.selector == "column" else None
            factor = choice.kq * choice.kf if f.scaled_by_kq_kf else 1.0
            for symbol, block_ in f.parameters.items():
                for spec in block_.limits:
                    if spec.by is not None:
                        if pick not in spec.by:
                            continue  # the station chose no zone/column this file knows: no limit
                        value = spec.by[pick]
                    else:
                        value = spec.value
                    lower = spec.lower_by.get(pick) if spec.lower_by and pick else spec.lower
                    scale = factor if spec.scaled else 1.0
                    starts = max(
                        x
                        for x in (_local_midnight_ns(f.effective_from), _local_midnight_ns(spec.from_))
                        if x is not None
                    )
                    ends_list = [x for x in (_local_midnight_ns(f.until), _local_midnight_ns(spec.until)) if x]
                    where = f" {f.selector} {pick}" if pick else ""
                    since = f" from {spec.from_}" if spec.from_ else ""
                    out.append(
                        Limit(
                            f"{f.regulation} {symbol} {spec.period}{where}{since}",
                            f.regulation,
                            symbol,
                            block_.unit,
                            spec.period,
                            value * scale,
                            lower,
                            starts,
                            min(ends_list) if ends_list else None,
                            f.confidence,
                            choice.reference_o2 if choice.reference_o2 is not None else f.reference_o2,
                            choice.o2_parameter,
                        )
                    )
        return out


def settings_summary(settings: Settings) -> Mapping[str, object]:
    return {"source": settings.source, "stations": sorted(settings.raw.stations)}
