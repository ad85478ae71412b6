"""A SensorThings client nobody here wrote (Fraunhofer's ``frost-sta-client``) reads the view over HTTP
and gets what SQL on the same rows and the REST API's /v1 endpoints give."""

from __future__ import annotations

import frost_sta_client as fsc
import requests
from frost_sta_client.service.auth_handler import AuthHandler

from tests.api.conftest import iso, utc_ns
from tests.api.sta_data import O3_DEVICE, O3_PROFILE, PM_DEVICE, PM_PROFILE, load_station
from tests.helpers import sql


class _KeyHeader(requests.auth.AuthBase):
    def __init__(self, key: str) -> None:
        self.key = key

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["X-API-Key"] = self.key
        return request


class ApiKeyAuth(AuthHandler):
    """The client's own extension point: it asks its auth handler for a requests ``auth``."""

    def __init__(self, key: str) -> None:
        super().__init__()
        self.key = key

    def add_auth_header(self) -> requests.auth.AuthBase:
        return _KeyHeader(self.key)


def test_frost_client_reads_things_datastreams_and_observations_as_sql_and_v1_give(api, feed):
    start, end = load_station(feed)
    db, sid = feed.warehouse.pg_conninfo, feed.sid
    service = fsc.SensorThingsService(f"{api.base}/sta/v1.1", auth_handler=ApiKeyAuth(api.key))

    # -- the Thing: the station as station_metadata and /v1/stations describe it -----------------------------
    things = list(service.things().query().filter(f"id eq '{sid}'").list())
    assert [t.id for t in things] == [sid]
    thing = service.things().find(sid)
    v1 = api.get(f"/v1/stations/{sid}").json()
    ((name, province, lat, lon),) = sql(
        db,
        "SELECT name, province_code, latitude, longitude FROM station_metadata WHERE station = %s"
        " LATEST ON ts PARTITION BY station",
        (sid,),
    )
    assert thing.name == name == v1["name"]
    assert thing.properties["province_code"] == province == v1["province_code"]
    location = api.get(f"/sta/v1.1/Things('{sid}')/Locations").json()["value"]
    points = [loc["location"]["coordinates"] for loc in location]
    assert points == [[lon, lat]] == [[v1["longitude"], v1["latitude"]]]

    # -- the Datastreams: one per (device, parameter) with readings, the newest unit, the birth's profile -----
    streams = list(thing.get_datastreams().query().list())
    expected = sql(
        db,
        "SELECT device, parameter, unit FROM readings WHERE station = %s"
        " LATEST ON ts PARTITION BY station, device, parameter ORDER BY device, parameter",
        (sid,),
    )
    described = sorted(
        (s.properties["device"], s.properties["parameter"], s.unit_of_measurement.symbol) for s in streams
    )
    assert described == [tuple(r) for r in expected]
    assert {s.id for s in streams} == {f"{sid}:{d}:{p}" for d, p, _ in expected}
    sensors = {s.id: api.get(f"/sta/v1.1/Datastreams('{s.id}')/Sensor").json()["@iot.id"] for s in streams}
    assert sensors == {f"{sid}:{PM_DEVICE}:PM10": PM_PROFILE, f"{sid}:{O3_DEVICE}:O3": O3_PROFILE}

    # -- the Observations of each Datastream, walked through @iot.nextLink by the client ----------------------
    rows_v1, _ = api.walk(f"/v1/stations/{sid}/readings", key=api.key, start=iso(start), end=iso(end), limit=500)
    for stream in streams:
        device, parameter = stream.properties["device"], stream.properties["parameter"]
        observations = list(stream.get_observations().query().top(40).list())
        got = [
            (utc_ns(o.phenomenon_time), o.result, o.result_quality["status"], o.result_quality["qc_flag"])
            for o in observations
        ]
        rows = sql(
            db,
            "SELECT ts::long, value, status, qc_flag FROM readings"
            " WHERE station = %s AND device = %s AND parameter = %s ORDER BY ts",
            (sid, device, parameter),
        )
        assert got == [tuple(r) for r in rows]
        assert len(got) > 40  # more than one page: the client followed nextLink
        from_v1 = [
            (utc_ns(r["ts"]["utc"]), r["value"], r["status"], r["qc_flag"])
            for r in rows_v1
            if (r["device"], r["parameter"]) == (device, parameter)
        ]
        assert got == from_v1
        assert {o.id for o in observations} == {f"{sid}:{device}:{parameter}:{r[0]}" for r in rows}
