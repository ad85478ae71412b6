"""Times as the API gives them: every instant in UTC and in Vietnam's local time, to the nanosecond."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel

from vocabulary.local_time import VIETNAM

_NS = 1_000_000_000


class Moment(BaseModel):
    utc: str  # e.g. 2026-12-02T06:00:00Z; a fraction only when the instant has one (up to 9 digits)
    local: str  # the same instant in Asia/Ho_Chi_Minh, e.g. 2026-12-02T13:00:00+07:00


def _iso(seconds: int, fraction_ns: int, zone: dt.tzinfo) -> str:
    text = dt.datetime.fromtimestamp(seconds, zone).strftime("%Y-%m-%dT%H:%M:%S")
    return text + (f".{fraction_ns:09d}".rstrip("0") if fraction_ns else "")


def moment(ns: int) -> Moment:
    seconds, fraction = divmod(ns, _NS)
    return Moment(utc=_iso(seconds, fraction, dt.UTC) + "Z", local=_iso(seconds, fraction, VIETNAM) + "+07:00")


def maybe_moment(ns: int | None) -> Moment | None:
    return None if ns is None else moment(ns)


def to_ns(instant: dt.datetime) -> int:
    """An aware datetime as UTC nanoseconds (exact: no float on the way)."""
    delta = instant - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return (delta.days * 86_400 + delta.seconds) * _NS + delta.microseconds * 1000
