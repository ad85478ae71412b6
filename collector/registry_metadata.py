"""What the registry says about a station beyond trust: its name, province, facility, place and logging
intervals. The field checks of ``collector/registry.py``'s station record, each failing with a fix.

``province_code`` is the administrative province (the TT10 file name's ``<Tinh>``, e.g. ``HN``); the
record's ``province:`` is something else, the broker user of the province relay that forwards the
station (``province-HN``). The two are told apart here, so a value put in the wrong one is refused.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from configuration.errors import DocumentProblem, config_error
from vocabulary.parameters import PARAMETER_RE, misspelt_parameter

NAME_MAX = 200
PROVINCE_CODE_PATTERN = re.compile(r"^[A-Z0-9]{1,16}$")
_PARAMETER_PATTERN = re.compile(PARAMETER_RE)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: Where Vietnam's stations can be (WGS 84 degrees): the mainland (8.2-23.4 N, 102.1-109.5 E) and the
#: islands out to Trường Sa (to 6.5 N, 117.8 E), with a margin. A point outside is a typing mistake.
VIETNAM_LATITUDE = (6.0, 24.0)
VIETNAM_LONGITUDE = (102.0, 118.0)
_BOX = (
    f"latitude {VIETNAM_LATITUDE[0]:g}..{VIETNAM_LATITUDE[1]:g} N, "
    f"longitude {VIETNAM_LONGITUDE[0]:g}..{VIETNAM_LONGITUDE[1]:g} E"
)
LONGEST_INTERVAL_S = 86_400.0  # a day: TT10 stations log every 5 minutes at most, the slowest samplers daily


def free_text(value: Any) -> str:
    """A name or facility as people write it: Vietnamese allowed (kept NFC), one line, not empty."""
    if not isinstance(value, str):
        raise config_error(f"expected text, got {value!r}", 'put it in quotes, e.g. name: "Trạm Nguyễn Văn Cừ"')
    text = unicodedata.normalize("NFC", value.strip())
    if not text:
        raise config_error("the text is empty", "write the name, or remove the line")
    if _CONTROL.search(text):
        raise config_error("the text holds a line break or a control character", "write it on one line")
    if len(text) > NAME_MAX:
        raise config_error(f"the text is {len(text)} characters long", f"shorten it to at most {NAME_MAX}")
    return text


def province_code(value: Any) -> str:
    text = str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else None
    if text is not None and PROVINCE_CODE_PATTERN.match(text):
        return text
    if text is not None and text.startswith("province-"):
        fix = (
            f"write the administrative province's code (e.g. {text.removeprefix('province-').upper() or 'HN'}); "
            "the broker user of a province relay goes in province:"
        )
    elif text is not None and PROVINCE_CODE_PATTERN.match(text.strip().upper()):
        fix = f"write it in capitals: province_code: {text.strip().upper()}"
    else:
        fix = "write the province's code as in the TT10 file name's <Tinh>: 1-16 capitals or digits, e.g. HN"
    raise config_error(f"{value!r} is not a province code", fix)


def degrees(value: Any) -> float:
    """A coordinate in decimal degrees; the range of its axis is checked by the record."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise config_error(f"expected decimal degrees, got {value!r}", "write a plain number, e.g. 21.0285")
    if isinstance(value, str):
        if any(mark in value for mark in "°'\"NSEW"):
            raise config_error(
                f"{value!r} is degrees, minutes and seconds",
                "write decimal degrees, north and east positive: 21°01'42\"N is 21.0283",
            )
        try:
            value = float(value)
        except ValueError:
            raise config_error(f"{value!r} is not a number", "write decimal degrees, e.g. 21.0285") from None
    number = float(value)
    if number != number or number in (float("inf"), float("-inf")):
        raise config_error(f"{value!r} is not a number", "write decimal degrees, e.g. 21.0285")
    return number


def parameter_symbol(value: Any) -> str:
    text = str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else None
    if text is None or not _PARAMETER_PATTERN.match(text):
        raise config_error(f"{value!r} is not a parameter symbol", "write the symbol as TT10 does, e.g. PM10, COD")
    meant = misspelt_parameter(text)
    if meant is not None:
        raise config_error(
            f"unknown parameter {text!r}", f"write {meant!r}, as TT10 spells it (vocabulary/parameters.py)"
        )
    return text


class RegistryParameterRecord(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    interval_s: float = Field(gt=0, le=LONGEST_INTERVAL_S)  # the logger's interval: an hour expects 3600 / it


Degrees = Annotated[float, BeforeValidator(degrees)]
FreeText = Annotated[str, BeforeValidator(free_text)]
ProvinceCode = Annotated[str, BeforeValidator(province_code)]
ParameterSymbol = Annotated[str, BeforeValidator(parameter_symbol)]


def _inside(value: float, bounds: tuple[float, float]) -> bool:
    return bounds[0] <= value <= bounds[1]


def coordinate_problems(station: str, latitude: float | None, longitude: float | None) -> list[DocumentProblem]:
    """Coordinates given together, on the globe and inside Vietnam, else a problem with the likely fix."""
    where = ("stations", station)
    if latitude is None and longitude is None:
        return []
    if latitude is None or longitude is None:
        missing = "latitude" if latitude is None else "longitude"
        return [DocumentProblem(where, f"{missing} is missing", "give both latitude and longitude, or neither")]
    problems = []
    if not -90 <= latitude <= 90:
        problems.append(
            DocumentProblem((*where, "latitude"), f"latitude {latitude} is not in -90..90", _hint(latitude, longitude))
        )
    if not -180 <= longitude <= 180:
        problems.append(
            DocumentProblem(
                (*where, "longitude"), f"longitude {longitude} is not in -180..180", _hint(latitude, longitude)
            )
        )
    if problems:
        return problems
    if not (_inside(latitude, VIETNAM_LATITUDE) and _inside(longitude, VIETNAM_LONGITUDE)):
        axis = "latitude" if not _inside(latitude, VIETNAM_LATITUDE) else "longitude"
        problems.append(
            DocumentProblem(
                (*where, axis),
                f"({latitude}, {longitude}) is not in Vietnam ({_BOX}, the islands included)",
                _hint(latitude, longitude),
            )
        )
    return problems


def _hint(latitude: float, longitude: float) -> str:
    """The mistake that would put the point in Vietnam: swapped axes, a lost sign, a lost decimal point."""

    def fits(lat: float, lon: float) -> bool:
        return _inside(lat, VIETNAM_LATITUDE) and _inside(lon, VIETNAM_LONGITUDE)

    if fits(longitude, latitude):
        return f"latitude and longitude are swapped: write latitude: {longitude!r}, longitude: {latitude!r}"
    if fits(abs(latitude), abs(longitude)):
        return f"Vietnam is north and east: write latitude: {abs(latitude)!r}, longitude: {abs(longitude)!r}"
    for power in range(1, 8):  # only a value no axis can hold (beyond 180) lost its decimal point for sure
        lat = latitude / 10**power if abs(latitude) > 180 else latitude
        lon = longitude / 10**power if abs(longitude) > 180 else longitude
        if (lat, lon) != (latitude, longitude) and fits(lat, lon):
            return "write decimal degrees with the decimal point, e.g. latitude: 21.0285, longitude: 105.8542"
    return "write WGS 84 decimal degrees, north and east positive, e.g. Hà Nội: latitude: 21.0285, longitude: 105.8542"
