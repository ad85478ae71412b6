"""Times as the API gives them: every instant in UTC and in Vietnam's local time, to the nanosecond."""

from __future__ import annotations

import datetime as dt
import functools

from pydantic import BaseModel

from vocabulary.local_time import VIETNAM_OFFSET_S

_NS = 1_000_000_000
_DAY_S = 86_400
_EPOCH = dt.date(1970, 1, 1)


class Moment(BaseModel):
    utc: str  # e.g. 2026-12-02T06:00:00Z; a fraction only when the instant has one (up to 9 digits)
    local: str  # the same instant in Asia/Ho_Chi_Minh, e.g. 2026-12-02T13:00:00+07:00


@functools.lru_cache(maxsize=8192)
def _date(day: int) -> str:
    return (_EPOCH + dt.timedelta(days=day)).isoformat()


def _iso(seconds: int, fraction_ns: int) -> str:
    # Arithmetic and a cached date instead of datetime.strftime: answers of thousands of rows spent most of
    # their time formatting times (two per instant). The zone is a fixed offset (vocabulary.local_time).
    day, second = divmod(seconds, _DAY_S)
    hour, second = divmod(second, 3600)
    minute, second = divmod(second, 60)
    text = f"{_date(day)}T{hour:02d}:{minute:02d}:{second:02d}"
    return text + f".{fraction_ns:09d}".rstrip("0") if fraction_ns else text


def moment_json(ns: int) -> dict[str, str]:
    """``Moment`` as the plain dict an answer serialises (no model per instant)."""
    seconds, fraction = divmod(ns, _NS)
    return {"utc": _iso(seconds, fraction) + "Z", "local": _iso(seconds + VIETNAM_OFFSET_S, fraction) + "+07:00"}


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
