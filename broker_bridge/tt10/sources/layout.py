"""The drop-folder layouts a province's FTP server writes, below one folder per station:

    <station>/*.txt                      flat
    <station>/yyyyMMdd/*.txt             day folders
    <station>/yyyy/MM/dd/*.txt           nested
    <station>/yyyy/ThangMM/yyyyMMdd/*.txt  ("Tháng" = month, seen in one receiver)

Anything else below a station folder (``TXT_mov/``, ``backup/``) is not read.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from vocabulary.stations import STATION_ID_PATTERN

_LEVELS = (
    (),
    (r"\d{8}",),
    (r"\d{4}", r"\d{2}", r"\d{2}"),
    (r"\d{4}", r"[Tt]hang\d{2}", r"\d{8}"),
)
_PATTERNS = tuple(tuple(re.compile(p) for p in levels) for levels in _LEVELS)


def is_day_folder(parts: tuple[str, ...]) -> bool:
    """Whether the folders below a station folder are a layout whose files are read."""
    return any(len(parts) == len(p) and all(r.fullmatch(x) for r, x in zip(p, parts)) for p in _PATTERNS)


def may_descend(parts: tuple[str, ...]) -> bool:
    """Whether a folder below a station folder can lead to a day folder."""
    return any(len(parts) <= len(p) and all(r.fullmatch(x) for r, x in zip(p, parts)) for p in _PATTERNS)


def is_tt10_name(name: str) -> bool:
    return name.lower().endswith(".txt") and not name.startswith(".")


def station_of(folder: str, mapping: Mapping[str, str]) -> str | None:
    """The station id of a station folder: the mapping's, else the folder name if it is an id."""
    station = mapping.get(folder, folder)
    return station if STATION_ID_PATTERN.match(station) else None
