"""Where a day's files go and what they are called; the Vietnam local day's bounds; times as text.

A day is the Vietnam local day (UTC+7), as the VN_AQI day is (QĐ 1459/QĐ-TCMT: hours ending
01:00..24:00 local): readings with ``00:00 local <= ts < 24:00 local``, i.e. 17:00 UTC the day
before to 17:00 UTC.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from urllib.parse import quote

from vocabulary.local_time import VIETNAM, VIETNAM_OFFSET_S

NS_PER_S = 1_000_000_000
DAY_NS = 86_400 * NS_PER_S
UNKNOWN_PROVINCE = "unknown"  # stations whose province the warehouse does not know
FORMATS = ("csv", "parquet")
MANIFEST = "manifest.json"
VERSIONS = ".versions"  # OUT/.versions/<day>/<generation>/: the day's files; OUT/<day> links to one
# Kept as they are in a name: letters, digits and these; the regulation's ``PM2,5`` keeps its comma.
_NAME_SAFE = ",-+=@"
_EPOCH = datetime(1970, 1, 1)


@dataclass(frozen=True, order=True)
class LocalDay:
    day: date

    @classmethod
    def parse(cls, text: str) -> LocalDay:
        try:
            return cls(date.fromisoformat(text.strip()))
        except ValueError as exc:
            raise ValueError(f"{text!r} is not a day such as 2026-03-25") from exc

    @property
    def start_ns(self) -> int:
        start = datetime(self.day.year, self.day.month, self.day.day, tzinfo=VIETNAM)
        return int(start.astimezone(UTC).timestamp()) * NS_PER_S

    @property
    def end_ns(self) -> int:
        return self.start_ns + DAY_NS  # no DST in Vietnam: every day is 24 hours

    def __str__(self) -> str:
        return self.day.isoformat()

    def next(self) -> LocalDay:
        return LocalDay(self.day + timedelta(days=1))


def days_between(first: LocalDay, last: LocalDay) -> list[LocalDay]:
    if last < first:
        raise ValueError(f"--to {last} is before --from {first}")
    days, day = [], first
    while day <= last:
        days.append(day)
        day = day.next()
    return days


def name_part(text: str) -> str:
    """A province code or parameter symbol as a file-name part: kept where it is safe in a path and a URL
    (``PM2,5`` stays ``PM2,5``); anything else (``/``, ``%``, ``_``, a leading dot, non-ASCII) percent-encoded
    as UTF-8, so every name is reversible and no symbol can reach outside the day's folder. ``_`` is encoded
    because it separates the parts."""
    encoded = quote(text, safe=_NAME_SAFE).replace("_", "%5F").replace(".", "%2E")
    return encoded


def file_name(kind: str, day: LocalDay, province: str, parameter: str, fmt: str) -> str:
    """``readings_2026-03-25_HN_PM2,5.csv``: self-describing when downloaded alone (the manifest is the index)."""
    return f"{kind}_{day}_{name_part(province)}_{name_part(parameter)}.{fmt}"


def iso_utc(ts_ns: int) -> str:
    """``2026-03-24T17:05:00.123456789Z``: always nine fraction digits (the warehouse keeps nanoseconds)."""
    return _iso(ts_ns, 0, "Z")


def iso_local(ts_ns: int) -> str:
    """The same instant in Vietnam local time: ``2026-03-25T00:05:00.123456789+07:00``."""
    return _iso(ts_ns, VIETNAM_OFFSET_S, "+07:00")


def _iso(ts_ns: int, offset_s: int, suffix: str) -> str:
    seconds, fraction = divmod(ts_ns, NS_PER_S)
    days, in_day = divmod(seconds + offset_s, 86_400)
    hours, rest = divmod(in_day, 3600)
    return f"{_date_text(days)}T{hours:02d}:{rest // 60:02d}:{rest % 60:02d}.{fraction:09d}{suffix}"


@lru_cache(maxsize=1024)
def _date_text(days_since_epoch: int) -> str:
    # A file's rows fall on two or three calendar dates: the date is worked out once, not per row.
    return (_EPOCH + timedelta(days=days_since_epoch)).date().isoformat()
