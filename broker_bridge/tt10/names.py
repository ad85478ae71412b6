"""TT10 file names: ``<Tinh>_<CoSo>_<Tram>_<yyyyMMddHHmmss>.txt`` and the forms real loggers use.

Three forms are read (see README.md): the regulation's ``HN_BKHN_KHIKXQ_20260325000500.txt``,
a prefix ending in a doubled underscore ``TH_BSON_KHILO2__20260325000500.txt``, and the older
form without a separator ``KCNDiemThuy20170228145700.txt``. The stamp is always the last 14
digits before ``.txt``; everything before it (without the separating underscores) is the
*prefix*, the station's key in the province's system. How the prefix splits into province,
facility and station is a convention, not a rule: station codes with two parts exist
(``LSOS_KHIKHO``), so the parts are informational and the prefix is what identifies.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePath
from typing import Literal

from broker_bridge.tt10.local_time import StampError, stamp_to_utc_ns, utc_ns_to_stamp
from vocabulary.stations import STATION_ID_PATTERN

NameForm = Literal["tinh_coso_tram", "doubled_underscore", "no_separator"]
NAME_FORMS: tuple[str, ...] = ("tinh_coso_tram", "doubled_underscore", "no_separator")
_SEPARATOR: dict[str, str] = {"tinh_coso_tram": "_", "doubled_underscore": "__", "no_separator": ""}
_NAME = re.compile(r"^(?P<prefix>.*?)(?P<sep>_*)(?P<stamp>\d{14})\.(?P<ext>txt)$", re.IGNORECASE)


class FileNameError(ValueError):
    """A name that is not a TT10 file name; the message says what is wrong and what was expected."""


@dataclass(frozen=True, slots=True)
class FileName:
    prefix: str  # e.g. "HN_BKHN_KHIKXQ": the station as the province knows it
    stamp: str  # yyyyMMddHHmmss, Vietnam local time, as written in the name
    ts_ns: int  # the same moment in UTC nanoseconds
    form: NameForm

    @property
    def parts(self) -> tuple[str, ...]:
        return tuple(self.prefix.split("_"))

    @property
    def province(self) -> str | None:
        return self.parts[0] if len(self.parts) >= 3 else None

    @property
    def facility(self) -> str | None:
        return self.parts[1] if len(self.parts) >= 3 else None

    @property
    def station(self) -> str | None:
        return "_".join(self.parts[2:]) if len(self.parts) >= 3 else None

    def __str__(self) -> str:
        return f"{self.prefix}{_SEPARATOR[self.form]}{self.stamp}.txt"


def parse_file_name(name: str) -> FileName:
    """Read a file name (a path is allowed; only its last part counts)."""
    base = PurePath(name.replace("\\", "/")).name
    match = _NAME.match(base)
    if not match:
        raise FileNameError(
            f"file name {base!r} is not <Tinh>_<CoSo>_<Tram>_<yyyyMMddHHmmss>.txt "
            "(nor <StationName><yyyyMMddHHmmss>.txt): it must end in 14 digits and .txt"
        )
    prefix, sep, stamp = match.group("prefix"), match.group("sep"), match.group("stamp")
    if len(sep) > 2:
        raise FileNameError(f"file name {base!r}: {len(sep)} underscores before the time; at most two are known")
    if not prefix:
        raise FileNameError(f"file name {base!r} has a time but no station before it")
    if not STATION_ID_PATTERN.match(prefix):
        raise FileNameError(
            f"file name {base!r}: station part {prefix!r} may hold only letters, digits, '_', '.' and '-' "
            "(no spaces or accents), at most 64 characters"
        )
    try:
        ts_ns = stamp_to_utc_ns(stamp)
    except StampError as exc:
        raise FileNameError(f"file name {base!r}: {exc}") from exc
    form: NameForm = "no_separator" if not sep else ("tinh_coso_tram" if sep == "_" else "doubled_underscore")
    return FileName(prefix=prefix, stamp=stamp, ts_ns=ts_ns, form=form)


def format_file_name(prefix: str, ts_ns: int, form: NameForm = "tinh_coso_tram") -> str:
    """The name of the file a station sends for the cycle at ``ts_ns`` (UTC).

    E.g. ``HN_BKHN_KHIKXQ_20260325000500.txt``.
    """
    if form not in _SEPARATOR:
        raise FileNameError(f"name form {form!r} is not one of {NAME_FORMS}")
    if not STATION_ID_PATTERN.match(prefix) or prefix.endswith("_"):
        raise FileNameError(f"station prefix {prefix!r} must be letters, digits, '_', '.', '-' and not end in '_'")
    return str(FileName(prefix=prefix, stamp=utc_ns_to_stamp(ts_ns), ts_ns=ts_ns, form=form))
