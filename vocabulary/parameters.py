"""Parameter symbols as the regulation writes them (TT 10/2021 Phụ lục 15, Bảng 34).

The list is as transcribed by public implementations (see
shared/reference/vn-regulations.md §3.4); a symbol outside it is kept as it
is, never rewritten. Note ``PM2,5`` with a comma.
"""

from __future__ import annotations

#: One token, no white space: a symbol is a TT10 column and a SensorThings name.
PARAMETER_RE = r"^[^\s]{1,64}$"

REGULATION_SYMBOLS: tuple[str, ...] = (
    "Flow",
    "Temp",
    "Color",
    "pH",
    "TSS",
    "COD",
    "NH4",
    "TP",
    "TN",
    "TOC",
    "Cl",
    "RH",
    "P",
    "NO",
    "NO2",
    "CO",
    "SO2",
    "O2",
    "H2S",
    "NH3",
    "VHg",
    "PM",
    "O3",
    "PM10",
    "PM2,5",
)


def _lookalike(symbol: str) -> str:
    return symbol.strip().upper().replace(".", ",").replace("0", "O").replace(" ", "")


_LOOKALIKES = {_lookalike(s): s for s in REGULATION_SYMBOLS}


def misspelt_parameter(symbol: str) -> str | None:
    """The regulation's symbol a configuration key was most likely meant to be (``PM2,5`` for
    ``PM2.5``, ``SO2`` for ``S02``, ``PM10`` for ``pm10``), else None. Other symbols are a station's
    own and pass: a symbol outside the list is kept as it is, and so do the readings."""
    if symbol in REGULATION_SYMBOLS:
        return None
    return _LOOKALIKES.get(_lookalike(symbol))
