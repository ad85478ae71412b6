"""Times as the API gives them: every instant in UTC and in Vietnam's local time, to the nanosecond."""

from __future__ import annotations

import datetime as dt
import functools

from pydantic import BaseModel

from vocabulary.local_time import VIETNAM_OFFSET_S

_NS = 1_000_000_000
_EPOCH_DT = dt.datetime(1970, 1, 1)


class Moment(BaseModel):
    utc: str  # e.g. 2026-12-02T06:00:00Z; a fraction only when the instant has one (up to 9 digits)
    local: str  # the same instant in Asia/Ho_Chi_Minh, e.g. 2026-12-02T13:00:00+07:00


@functools.lru_cache(maxsize=16384)
def _hour(hour: int) -> tuple[str, str]:
    """``YYYY-MM-DDTHH:`` of an hour since the epoch, in UTC and in Vietnam's time."""
    utc = _EPOCH_DT + dt.timedelta(hours=hour)
    local = utc + dt.timedelta(seconds=VIETNAM_OFFSET_S)
    return utc.strftime("%Y-%m-%dT%H:"), local.strftime("%Y-%m-%dT%H:")


def moment_json(ns: int) -> dict[str, str]:
    """``Moment`` as the plain dict an answer serialises (no model per instant).

    Formatting two times per row with datetime cost more than the query for answers of thousands of rows;
    the hour's text is cached and only minutes, seconds and fraction are formatted per instant (Vietnam's
    offset is whole hours: vocabulary.local_time)."""
    seconds, fraction = divmod(ns, _NS)
    hour, rest = divmod(seconds, 3600)
    utc, local = _hour(hour)
    tail = f"{rest // 60:02d}:{rest % 60:02d}"
    if fraction:
        tail += f".{fraction:09d}".rstrip("0")
    return {"utc": f"{utc}{tail}Z", "local": f"{local}{tail}+07:00"}


class Moments(dict):
    """``moment_json`` of each instant once per answer (``moments[ns]``; ``moments[None]`` is None).

    An answer repeats its instants: a station-day of raw readings has each time once per parameter, a month
    of hourly means each hour as one row's end and the next row's start. The rows share the one dict of an
    instant (the encoder writes it each time; nothing changes it), and a repeat costs a dict lookup."""

    def __missing__(self, ns: int | None) -> dict[str, str] | None:
        value = self[ns] = None if ns is None else moment_json(ns)
        return value


def maybe_moment_json(ns: int | None) -> dict[str, str] | None:
    return None if ns is None else moment_json(ns)


def moment(ns: int) -> Moment:
    return Moment(**moment_json(ns))


def maybe_moment(ns: int | None) -> Moment | None:
    return None if ns is None else moment(ns)


def to_ns(instant: dt.datetime) -> int:
    """An aware datetime as UTC nanoseconds (exact: no float on the way)."""
    delta = instant - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return (delta.days * 86_400 + delta.seconds) * _NS + delta.microseconds * 1000
