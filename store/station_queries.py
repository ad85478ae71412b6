"""The registry's description of each station in the warehouse (``station_metadata``): written by the
collector whenever it loads the registry, read by whoever needs a station's name, place or intervals
(the REST API, exports) without reading the registry file.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import psycopg

from store.ilp_writer import WarehouseWriter
from store.queries import connect
from store.schema import STATION_METADATA


@dataclass(frozen=True)
class StationMetadata:
    """One station as the registry described it at ``loaded_ns`` (UTC ns; 0 for a row not yet written)."""

    station: str
    enabled: bool
    kind: str | None = None
    name: str | None = None
    province_code: str | None = None  # the administrative province (TT10's <Tinh>), not a relay's broker user
    facility: str | None = None
    latitude: float | None = None  # WGS 84 decimal degrees
    longitude: float | None = None
    intervals: Mapping[str, float] = field(default_factory=dict)  # parameter symbol -> logging interval (s)
    loaded_ns: int = 0


def write_station_metadata(writer: WarehouseWriter, loaded_ns: int, stations: Sequence[StationMetadata]) -> int:
    """One row per station, all at ``loaded_ns`` (one transaction); returns the rows written."""
    if not stations:
        return 0
    columns = {
        "ts": [loaded_ns] * len(stations),
        "station": [s.station for s in stations],
        "name": [s.name for s in stations],
        "province_code": [s.province_code for s in stations],
        "facility": [s.facility for s in stations],
        "kind": [s.kind for s in stations],
        "latitude": [s.latitude for s in stations],
        "longitude": [s.longitude for s in stations],
        "enabled": [s.enabled for s in stations],
        # Sorted keys: the same registry gives the same text, whatever order the file listed them in.
        "parameters": [json.dumps(dict(s.intervals), sort_keys=True, ensure_ascii=False) for s in stations],
    }
    return writer.write_columns(STATION_METADATA, columns)


def station_descriptions(conn: psycopg.Connection, station: str | None = None) -> dict[str, StationMetadata]:
    """Station id -> its newest row (every station ever described, or just ``station``), on an open
    connection. A station taken out of the registry keeps the last row written for it."""
    query = (
        "SELECT station, enabled, kind, name, province_code, facility, latitude, longitude, parameters, ts::long "
        "FROM station_metadata"
    )
    params: tuple = ()
    if station is not None:
        query += " WHERE station = %s"
        params = (station,)
    query += " LATEST ON ts PARTITION BY station"
    rows = conn.execute(query, params).fetchall()
    out = {}
    for sid, enabled, kind, name, province, facility, lat, lon, parameters, ts in rows:
        intervals = {str(k): float(v) for k, v in json.loads(parameters or "{}").items()}
        out[sid] = StationMetadata(sid, bool(enabled), kind, name, province, facility, lat, lon, intervals, ts)
    return dict(sorted(out.items()))


def latest_station_metadata(conninfo: str, station: str | None = None) -> dict[str, StationMetadata]:
    """``station_descriptions`` on a connection of its own."""
    with connect(conninfo) as conn:
        return station_descriptions(conn, station)
