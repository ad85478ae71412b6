"""The small entity sets of the view, read once per request: Things and Locations (station_metadata),
Sensors (analyzer profiles, as births name them), ObservedProperties (parameter symbols), Datastreams
(every station x device x parameter with a reading); and Observations' JSON from reading rows.

Ids are what the data already names, so they are stable and the same on every server: a Thing's and
its Location's id is the station id, a Sensor's the profile name (``unknown`` where no birth named
one), an ObservedProperty's the parameter symbol, a Datastream's ``station:device:parameter`` and an
Observation's ``station:device:parameter:ts`` (UTC ns): its reading key.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from typing import Any

from api.times import moment
from station_profiles.loader import load_profile, profile_path
from store import sta_queries
from store.station_queries import StationMetadata, station_descriptions
from vocabulary.parameters import REGULATION_SYMBOLS
from vocabulary.qc_flags import FLAG_NAMES
from vocabulary.status import STATUS_MEANING

UNKNOWN_SENSOR = "unknown"
OM_MEASUREMENT = "http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_Measurement"


@functools.lru_cache(maxsize=256)
def _profile_text(name: str) -> tuple[str, str] | None:
    """(manufacturer model, file) of a profile shipped in station_profiles/, None for one we do not ship."""
    if not profile_path(name).is_file():
        return None
    profile = load_profile(name)
    return f"{profile.manufacturer} {profile.model}".strip(), f"station_profiles/profiles/{name}.yaml"


def _devices(birth: str) -> dict[str, str]:
    """device id -> profile from a birth's JSON body (a birth without a description names none)."""
    try:
        doc = json.loads(birth)
    except ValueError:
        return {}
    devices = doc.get("devices") if isinstance(doc, dict) else None
    out = {}
    for d in devices if isinstance(devices, list) else []:
        if isinstance(d, dict) and isinstance(d.get("id"), str) and isinstance(d.get("profile"), str):
            out[d["id"]] = d["profile"]
    return out


def utc_text(ns: int) -> str:
    return moment(ns).utc


def station_of(entity_id: str) -> str:
    """The station a Thing, Location, Datastream or Observation id belongs to (station ids have no colon)."""
    return entity_id.split(":", 1)[0]


@dataclass
class Catalog:
    """The small sets, filled on demand on one connection: a whole set for a listing (``load_all``), one
    station's entities for a path or filter that names one (``load_station``: its own few rows, not the
    warehouse's 12,000 Datastreams)."""

    conn: Any
    things: dict[str, dict] = field(default_factory=dict)
    locations: dict[str, dict] = field(default_factory=dict)
    sensors: dict[str, dict] = field(default_factory=dict)
    properties: dict[str, dict] = field(default_factory=dict)
    datastreams: dict[str, dict] = field(default_factory=dict)
    historical: dict[str, dict] = field(default_factory=dict)
    features: dict[str, dict] = field(default_factory=dict)
    stream_key: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # id -> (station, device, parameter)
    stream_sensor: dict[str, str] = field(default_factory=dict)
    _all: bool = False
    _stations: set[str] = field(default_factory=set)

    def load_all(self) -> Catalog:
        if not self._all:
            self._fill(
                station_descriptions(self.conn),
                sta_queries.datastreams(self.conn),
                sta_queries.newest_births(self.conn),
            )
            self._all = True
        return self

    def load_station(self, station: str) -> Catalog:
        if not self._all and station not in self._stations:
            self._fill(
                station_descriptions(self.conn, station),
                sta_queries.datastreams(self.conn, station),
                sta_queries.newest_births(self.conn, station),
            )
            self._stations.add(station)
        return self

    def by_set(self, name: str) -> dict[str, dict]:
        return {
            "Things": self.things,
            "Locations": self.locations,
            "Sensors": self.sensors,
            "ObservedProperties": self.properties,
            "Datastreams": self.datastreams,
            "HistoricalLocations": self.historical,
            "FeaturesOfInterest": self.features,
        }[name]

    def find(self, set_name: str, entity_id: str) -> dict | None:
        if set_name in ("Sensors", "ObservedProperties"):
            self.load_all()
        else:
            self.load_station(station_of(entity_id))
        return self.by_set(set_name).get(entity_id)

    def related(self, set_name: str, entity_id: str, nav: str) -> list[str]:
        """Ids of ``nav`` of one entity (not for Observations, which the store pages)."""
        if set_name in ("Sensors", "ObservedProperties"):
            self.load_all()
        else:
            self.load_station(station_of(entity_id))
        streams = self.stream_key
        if set_name == "Things":
            if nav == "Locations":
                return [entity_id] if entity_id in self.locations else []
            if nav == "HistoricalLocations":
                return [entity_id] if entity_id in self.historical else []
            return [d for d, k in streams.items() if k[0] == entity_id]
        if set_name == "Locations":
            pool = self.historical if nav == "HistoricalLocations" else self.things
            return [entity_id] if entity_id in pool else []
        if set_name == "HistoricalLocations":
            pool = self.things if nav == "Thing" else self.locations
            return [entity_id] if entity_id in pool else []
        if set_name == "Sensors":
            return [d for d, s in self.stream_sensor.items() if s == entity_id]
        if set_name == "ObservedProperties":
            return [d for d, k in streams.items() if k[2] == entity_id]
        if set_name == "Datastreams":
            station, _device, parameter = streams[entity_id]
            return {"Thing": [station], "Sensor": [self.stream_sensor[entity_id]], "ObservedProperty": [parameter]}[nav]
        raise KeyError(f"{set_name}/{nav}")

    def stream(self, datastream_id: str) -> tuple[str, str, str] | None:
        """(station, device, parameter) of a Datastream id. An id with exactly two colons is read as it
        is (no query: it may name a series without readings, which then has no Observations); only
        a device or parameter with a colon of its own needs the station's Datastreams to tell."""
        parts = datastream_id.split(":")
        if len(parts) == 3 and all(parts):
            return parts[0], parts[1], parts[2]
        self.load_station(station_of(datastream_id))
        return self.stream_key.get(datastream_id)

    def observation_key(self, observation_id: str) -> tuple[str, str, str, int] | None:
        """(station, device, parameter, ts ns) of an Observation id, None if it names no Datastream."""
        stream, _, ts = observation_id.rpartition(":")
        key = self.stream(stream)
        if key is None or not ts.isdigit():
            return None
        return (*key, int(ts))

    def _fill(self, described: dict, streams: list[tuple], births_json: dict[str, str]) -> None:
        births = {s: _devices(p) for s, p in births_json.items()}
        for sid in sorted(set(described) | {r[0] for r in streams}):
            self._thing(sid, described.get(sid))
        if not self.properties:
            for symbol in REGULATION_SYMBOLS:
                self.properties[symbol] = _observed_property(symbol)
        for station, device, parameter, unit, last_ns in streams:
            sid = f"{station}:{device}:{parameter}"
            profile = births.get(station, {}).get(device, UNKNOWN_SENSOR)
            self.stream_key[sid] = (station, device, parameter)
            self.stream_sensor[sid] = profile
            self.datastreams[sid] = {
                "@iot.id": sid,
                "name": f"{parameter} at {station} ({device})",
                "description": f"{parameter} measured by device {device} of station {station}",
                "observationType": OM_MEASUREMENT,
                "unitOfMeasurement": {
                    "name": unit or "",
                    "symbol": unit or "",
                    "definition": f"urn:quantrac:unit:{unit}",
                },
                "properties": {
                    "station": station,
                    "device": device,
                    "parameter": parameter,
                    "last_reading": utc_text(last_ns),
                },
            }
            if profile not in self.sensors:
                self.sensors[profile] = _sensor(profile)
            if parameter not in self.properties:
                self.properties[parameter] = _observed_property(parameter)

    def _thing(self, sid: str, meta: StationMetadata | None) -> None:
        name = (meta.name if meta else None) or sid
        props: dict[str, object] = {"station": sid}
        if meta is not None:
            props.update(
                kind=meta.kind or "",
                province_code=meta.province_code or "",
                facility=meta.facility or "",
                enabled=meta.enabled,
                intervals_s=dict(meta.intervals),
                described_at=utc_text(meta.loaded_ns),
            )
        where = ", ".join(x for x in (meta.facility if meta else "", meta.province_code if meta else "") if x)
        kind = (meta.kind if meta else "") or "monitoring"
        self.things[sid] = {
            "@iot.id": sid,
            "name": name,
            "description": f"{kind} station {sid}" + (f" ({where})" if where else ""),
            "properties": props,
        }
        point = None
        if meta is not None and meta.latitude is not None and meta.longitude is not None:
            point = {"type": "Point", "coordinates": [meta.longitude, meta.latitude]}
            self.locations[sid] = {
                "@iot.id": sid,
                "name": name,
                "description": f"where station {sid} stands (WGS 84)",
                "encodingType": "application/geo+json",
                "location": point,
            }
            # The registry's newest description only: an earlier position is not kept as its own entry.
            self.historical[sid] = {"@iot.id": sid, "time": utc_text(meta.loaded_ns)}
        # What a station's readings are about: the air or water at the station (its point, where known).
        self.features[sid] = {
            "@iot.id": sid,
            "name": name,
            "description": f"the medium station {sid} samples, at the station",
            "encodingType": "application/geo+json",
            "feature": point,
        }


def _observed_property(symbol: str) -> dict:
    listed = symbol in REGULATION_SYMBOLS
    return {
        "@iot.id": symbol,
        "name": symbol,
        "definition": f"urn:quantrac:parameter:{symbol}",
        "description": "TT 10/2021 Phụ lục 15, Bảng 34 parameter symbol"
        if listed
        else "a station's own parameter symbol (not in TT 10/2021's list)",
    }


def _sensor(profile: str) -> dict:
    if profile == UNKNOWN_SENSOR:
        return {
            "@iot.id": UNKNOWN_SENSOR,
            "name": "analyzer model not known",
            "description": "no birth of the station's agent names this device's analyzer profile (TT10 sends none)",
            "encodingType": "text/plain",
            "metadata": "",
        }
    known = _profile_text(profile)
    return {
        "@iot.id": profile,
        "name": profile,
        "description": known[0] if known else f"analyzer profile {profile} (not one shipped with quantrac)",
        "encodingType": "text/plain",
        "metadata": known[1] if known else "",
    }


def observation(row: tuple) -> dict:
    """An Observation from an ``OBSERVATION_SELECT`` row."""
    ts, station, device, parameter, value, unit, status, cause, flag, check, qc_cause, checks = row[:12]
    received, seq, historical, source = row[12:]
    when = moment(ts)
    return {
        "@iot.id": f"{station}:{device}:{parameter}:{ts}",
        "phenomenonTime": when.utc,
        "resultTime": when.utc,
        "result": value,
        "resultQuality": {
            "status": status or "",
            "status_meaning": STATUS_MEANING.get(status or "", ("", ""))[1],
            "cause": cause or "",
            "qc_flag": flag,
            "qc_flag_name": FLAG_NAMES.get(flag, "") if flag is not None else "",
            "qc_check": check or "",
            "qc_cause": qc_cause or "",
            "qc_checks": checks or "",
        },
        "parameters": {
            "local_time": when.local,
            "unit": unit or "",
            "received_at": utc_text(received) if received is not None else None,
            "seq": seq,
            "historical": bool(historical),
            "source": source or "agent",
        },
    }
