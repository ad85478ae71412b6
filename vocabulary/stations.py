"""Station identifiers and the kinds of station the regulation knows."""

from __future__ import annotations

import re
from typing import Literal

#: A station id is one MQTT topic level and one TT10 file-name part: no
#: separators, no wildcards, no spaces, at most 64 characters.
STATION_ID_RE = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
STATION_ID_PATTERN = re.compile(STATION_ID_RE)

#: Names of devices, profiles and other ids chosen by people: the same shape.
NAME_RE = STATION_ID_RE

StationKind = Literal["ambient_air", "wastewater", "stack_emission", "surface_water", "groundwater"]
STATION_KINDS: tuple[str, ...] = ("ambient_air", "wastewater", "stack_emission", "surface_water", "groundwater")
