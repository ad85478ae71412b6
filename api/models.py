"""The API's response documents (pydantic): what /openapi.json describes and every endpoint returns."""

from __future__ import annotations

from typing import Generic, Literal, TypeVar

from pydantic import BaseModel, Field

from api.times import Moment

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    data: list[T]
    next_cursor: str | None = Field(None, description="pass as ?cursor= for the next page; null on the last page")


class Completeness(BaseModel):
    expected: int = Field(description="readings the station should have logged (its logging intervals)")
    observed: int = Field(description="valid readings that went into its hourly means")
    percent: float | None


class Availability(BaseModel):
    """How complete a station's data were, from the hourly means (as far as the aggregator has got)."""

    through: Moment = Field(description="the end of the newest hour the aggregator has written")
    last_hour: Completeness = Field(description="the hour ending at `through`")
    last_day: Completeness = Field(description="the 24 hours ending at `through`")
    calibrating: int = Field(description="readings with status 01 (calibrating) in the last day")
    device_error: int = Field(description="readings with status 02 (device error) in the last day")
    qc_fail: int = Field(description="readings with status 00 failed by the controls (QC 4 or 9) in the last day")


class Station(BaseModel):
    id: str
    name: str
    province_code: str
    facility: str
    kind: str
    latitude: float | None
    longitude: float | None
    enabled: bool
    parameters: dict[str, float | None] = Field(description="parameter symbol -> logging interval in seconds")
    described_at: Moment = Field(description="when the registry that gave this description was loaded")
    last_reading: Moment | None
    state: Literal["online", "offline", "never"] = Field(
        description="never: no reading stored; online: the newest reading is at most the largest logging interval"
        " plus the grace period old (quantrac api serve --offline-grace); offline: older"
    )
    connection: str = Field(description="what the station last announced over MQTT: online / offline / unknown")
    availability: Availability | None = Field(description="null: no hourly means and no declared intervals")


class LatestValue(BaseModel):
    """A series' newest reading that counts (status 00, a value, QC pass or not evaluated)."""

    station: str
    device: str
    parameter: str
    ts: Moment
    value: float
    unit: str


class LatestValues(BaseModel):
    as_of: Moment = Field(description="when the answer was read from the warehouse (shared, at most a second old)")
    data: list[LatestValue]


class Reading(BaseModel):
    ts: Moment
    device: str
    parameter: str
    value: float | None
    unit: str
    status: str = Field(description="the regulation's 00 measuring, 01 calibrating, 02 device error")
    cause: str
    qc_flag: int | None = Field(description="QARTOD: 1 pass, 2 not evaluated, 3 suspect, 4 fail, 9 missing")
    qc_check: str
    qc_cause: str
    qc_checks: str
    seq: int | None
    historical: bool
    source: str
    received_at: Moment | None


class LatestReading(Reading):
    station: str


class LatestReadings(BaseModel):
    as_of: Moment = Field(description="when the answer was read from the warehouse (shared, at most a second old)")
    data: list[LatestReading]


class Coverage(BaseModel):
    expected: int | None
    observed: int | None = Field(description="valid readings (hourly) or valid hours (8-hour, daily) that went in")
    percent: float | None
    valid: bool = Field(description="the completeness rule is met; only valid means are published")
    rule: str


class MeanDetail(BaseModel):
    """What went into a mean and what was left out (API key only)."""

    mean_if_invalid: float | None = Field(description="the mean of what there was, when the period is not valid")
    worst_flag: int | None
    n_readings: int | None = None
    n_calibrating: int | None = None
    n_device_error: int | None = None
    n_qc_fail: int | None = None
    n_suspect: int | None = None


class Mean(BaseModel):
    start: Moment
    end: Moment
    local_day: str | None = Field(None, description="daily means: the VN_AQI day (hours ending 01:00..24:00 local)")
    device: str
    parameter: str
    unit: str
    mean: float | None = Field(description="null unless the period is valid")
    min: float | None
    max: float | None
    max_hourly: float | None = None
    coverage: Coverage
    computed_at: Moment | None
    detail: MeanDetail | None = None


class AqiCategory(BaseModel):
    name_vi: str
    name_en: str
    colour_vi: str
    colour_en: str
    hex: str


class SubIndex(BaseModel):
    value: int
    scale: str
    concentration: float
    basis: str


class Aqi(BaseModel):
    start: Moment
    end: Moment
    local_day: str | None = None
    aqi: int | None = Field(description="null: no PM10 or PM2,5 sub-index (see reason)")
    category: AqiCategory | None
    dominant: str | None
    sub_indices: dict[str, SubIndex]
    missing: dict[str, str]
    reason: str
    computed_at: Moment | None


class StationAqi(Aqi):
    station: str


class Episode(BaseModel):
    opened: Moment = Field(description="the end of the first exceeding period")
    station: str
    device: str
    parameter: str
    limit_id: str
    period: str
    limit_value: float | None
    unit: str
    state: str = Field(description="open / escalated / closed / withdrawn")
    escalated_at: Moment | None
    closed_at: Moment | None
    periods: int | None
    peak: float | None
    last_mean: float | None
    decided_at: Moment | None
    version: int | None


class Reject(BaseModel):
    received_at: Moment
    payload_sha256: str
    topic: str
    claimed_station: str
    reason: str
    detail: str
    payload_size: int | None
    payload_stored: bool
