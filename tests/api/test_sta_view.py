"""The SensorThings view's query options over HTTP (httpx), each answer against SQL on the same rows:
$filter (time ranges, comparisons, and/or/not), $orderby, $count, $top (capped), $skip and @iot.nextLink
(keyset), $select, $expand, navigation links; and a 4xx JSON error for every bad query."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import httpx

from broker_bridge.envelope import Reading
from tests.api.conftest import H, M, iso, utc_ns
from tests.api.sta_data import PM_DEVICE, PM_PROFILE, load_station, pm10
from tests.helpers import sql

STA = "/sta/v1.1"


def get(api, path: str, key: bool = True, **params) -> dict:
    r = httpx.get(api.base + STA + path, params=params, headers={"X-API-Key": api.key} if key else {}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def follow(api, first: dict) -> list[dict]:
    """Every entity of a collection, through @iot.nextLink as given."""
    values, doc = list(first["value"]), first
    while "@iot.nextLink" in doc:
        r = httpx.get(doc["@iot.nextLink"], headers={"X-API-Key": api.key}, timeout=30)
        assert r.status_code == 200, r.text
        doc = r.json()
        values += doc["value"]
    return values


def ts_values(observations: list[dict]) -> list[tuple[int, float | None]]:
    return [(utc_ns(o["phenomenonTime"]), o["result"]) for o in observations]


def test_filter_orderby_count_top_select_expand_answer_what_sql_gives(api, feed):
    start, end = load_station(feed, hours=12)
    db, sid = feed.warehouse.pg_conninfo, feed.sid
    ds = f"{sid}:{PM_DEVICE}:PM10"
    where = "station = %s AND device = %s AND parameter = 'PM10'"
    scope = (sid, PM_DEVICE)

    # -- a time range, with $count ----------------------------------------------------------------------------
    low, high = start + H, start + 2 * H + 30 * M
    doc = get(
        api,
        f"/Datastreams('{ds}')/Observations",
        **{
            "$filter": f"phenomenonTime ge {iso(low)} and phenomenonTime lt {iso(high)}",
            "$count": "true",
            "$top": "1000",
        },
    )
    rows = sql(
        db,
        f"SELECT ts::long, value FROM readings WHERE {where} AND ts >= cast(%s AS TIMESTAMP_NS)"
        " AND ts < cast(%s AS TIMESTAMP_NS) ORDER BY ts",
        (*scope, low, high),
    )
    assert ts_values(doc["value"]) == [tuple(r) for r in rows] and len(rows) == 90
    assert doc["@iot.count"] == 90 and "@iot.nextLink" not in doc

    # -- comparisons on result and resultQuality, and/or/not ----------------------------------------------------
    calibrating = get(api, f"/Datastreams('{ds}')/Observations", **{"$filter": "resultQuality/status eq '01'"})
    ((n01,),) = sql(db, f"SELECT count() FROM readings WHERE {where} AND status = '01'", scope)
    assert n01 == 10 and len(calibrating["value"]) == 10
    assert all(
        o["resultQuality"]["status"] == "01" and o["resultQuality"]["cause"] == "span" for o in calibrating["value"]
    )
    band = follow(
        api, get(api, f"/Datastreams('{ds}')/Observations", **{"$filter": "result gt 50 and not (result gt 55)"})
    )
    rows = sql(
        db, f"SELECT ts::long, value FROM readings WHERE {where} AND value > 50 AND value <= 55 ORDER BY ts", scope
    )
    assert ts_values(band) == [tuple(r) for r in rows] and rows
    either = follow(
        api, get(api, f"/Datastreams('{ds}')/Observations", **{"$filter": "result eq 40 or 58.0 eq result"})
    )
    rows = sql(
        db, f"SELECT ts::long, value FROM readings WHERE {where} AND (value = 40 OR value = 58) ORDER BY ts", scope
    )
    assert ts_values(either) == [tuple(r) for r in rows] and rows

    # -- $orderby: by result (offset pages), and newest first (keyset pages) ------------------------------------
    top = get(
        api, f"/Datastreams('{ds}')/Observations", **{"$orderby": "result desc, phenomenonTime asc", "$top": "25"}
    )
    rows = sql(db, f"SELECT ts::long, value FROM readings WHERE {where} ORDER BY value DESC, ts ASC LIMIT 25", scope)
    assert ts_values(top["value"]) == [tuple(r) for r in rows]
    newest = get(api, f"/Datastreams('{ds}')/Observations", **{"$orderby": "phenomenonTime desc", "$top": "100"})
    assert "$skiptoken" in parse_qs(urlsplit(newest["@iot.nextLink"]).query)
    rows = sql(db, f"SELECT ts::long, value FROM readings WHERE {where} ORDER BY ts DESC", scope)
    assert ts_values(follow(api, newest)) == [tuple(r) for r in rows] and len(rows) == 720

    # -- the whole readings table: Datastream/id, $count, $top capped at 1000 ---------------------------------
    mine = get(api, "/Observations", **{"$filter": f"Datastream/id eq '{ds}' and phenomenonTime lt {iso(low)}"})
    assert ts_values(mine["value"]) == [(t, pm10(t)) for t in range(start, low, M)]
    assert get(api, "/Observations", **{"$filter": "id eq 'nope' or Datastream/id eq 'no:such:series'"})["value"] == []
    capped = get(api, "/Observations", **{"$top": "5000", "$count": "true"})
    ((total,),) = sql(db, "SELECT count() FROM readings")
    assert capped["@iot.count"] == total and total > 1000
    assert len(capped["value"]) == 1000 and parse_qs(urlsplit(capped["@iot.nextLink"]).query)["$top"] == ["1000"]
    window = get(
        api,
        "/Observations",
        **{"$filter": f"phenomenonTime ge {iso(low)} and phenomenonTime lt {iso(high)}", "$count": "true", "$top": "1"},
    )
    ((in_window,),) = sql(
        db,
        "SELECT count() FROM readings WHERE ts >= cast(%s AS TIMESTAMP_NS) AND ts < cast(%s AS TIMESTAMP_NS)",
        (low, high),
    )
    assert window["@iot.count"] == in_window >= 90 + 45

    # -- $select ------------------------------------------------------------------------------------------------
    slim = get(api, f"/Datastreams('{ds}')/Observations", **{"$select": "id,result", "$top": "3"})
    assert all(set(o) == {"@iot.id", "@iot.selfLink", "result"} for o in slim["value"])
    names = get(api, "/Things", **{"$select": "name", "$filter": f"id eq '{sid}'"})
    assert names["value"] == [{"name": "Trạm thử STA"}]

    # -- $expand, one level, nested options ---------------------------------------------------------------------
    thing = get(api, f"/Things('{sid}')", **{"$expand": "Datastreams,Locations"})
    assert sorted(d["@iot.id"] for d in thing["Datastreams"]) == sorted([ds, f"{sid}:o3a:O3"])
    assert [loc["@iot.id"] for loc in thing["Locations"]] == [sid]
    stream = get(
        api, f"/Datastreams('{ds}')", **{"$expand": "Observations($top=3;$orderby=phenomenonTime desc),Thing,Sensor"}
    )
    rows = sql(db, f"SELECT ts::long, value FROM readings WHERE {where} ORDER BY ts DESC LIMIT 3", scope)
    assert ts_values(stream["Observations"]) == [tuple(r) for r in rows]
    assert "Observations@iot.nextLink" in stream
    assert stream["Thing"]["@iot.id"] == sid and stream["Sensor"]["@iot.id"] == PM_PROFILE
    assert stream["Sensor"]["description"] == "Met One Instruments BAM-1020 (standard Query output)"
    assert stream["unitOfMeasurement"]["symbol"] == "ug/m3"

    # -- filters on the small sets, navigation and self links ---------------------------------------------------
    provinces = get(api, "/Things", **{"$filter": "properties/province_code eq 'S11'"})["value"]
    described = sql(db, "SELECT station, province_code FROM station_metadata LATEST ON ts PARTITION BY station")
    assert sorted(t["@iot.id"] for t in provinces) == sorted(s for s, p in described if p == "S11")
    ppb = get(
        api, "/Datastreams", **{"$filter": f"unitOfMeasurement/symbol eq 'ppb' and properties/station eq '{sid}'"}
    )
    assert [d["@iot.id"] for d in ppb["value"]] == [f"{sid}:o3a:O3"]
    one = get(api, f"/Things('{sid}')")
    assert httpx.get(one["@iot.selfLink"]).json() == one
    linked = httpx.get(one["Datastreams@iot.navigationLink"]).json()["value"]
    assert sorted(d["@iot.id"] for d in linked) == sorted(d["@iot.id"] for d in thing["Datastreams"])
    obs_id = f"{ds}:{start}"
    observation = get(api, f"/Observations('{obs_id}')")
    assert (observation["@iot.id"], observation["result"]) == (obs_id, pm10(start))
    back = httpx.get(observation["Datastream@iot.navigationLink"], headers={"X-API-Key": api.key}).json()
    assert back["@iot.id"] == ds
    feature = get(api, f"/Observations('{obs_id}')/FeatureOfInterest")
    assert (feature["@iot.id"], feature["feature"]["coordinates"]) == (sid, [105.8542, 21.0285])
    at_station = get(api, f"/FeaturesOfInterest('{sid}')/Observations", **{"$count": "true", "$top": "1"})
    ((n_station,),) = sql(db, "SELECT count() FROM readings WHERE station = %s", (sid,))
    assert at_station["@iot.count"] == n_station == 720 + 360
    ((described_at,),) = sql(db, "SELECT max(ts)::long FROM station_metadata WHERE station = %s", (sid,))
    history = get(api, f"/Things('{sid}')/HistoricalLocations", **{"$expand": "Locations"})["value"]
    assert [(utc_ns(h["time"]), [loc["@iot.id"] for loc in h["Locations"]]) for h in history] == [(described_at, [sid])]
    recent = get(api, "/HistoricalLocations", **{"$filter": f"time ge {iso(described_at - 10_000)} and id eq '{sid}'"})
    assert [h["@iot.id"] for h in recent["value"]] == [sid]
    assert (
        get(api, "/HistoricalLocations", **{"$filter": f"time gt {iso(described_at + 10_000)} and id eq '{sid}'"})[
            "value"
        ]
        == []
    )
    mine_expanded = get(
        api,
        "/Datastreams",
        **{"$filter": f"properties/station eq '{sid}'", "$expand": "Observations($top=1000)"},
    )["value"]
    assert sorted(d["@iot.id"] for d in mine_expanded) == sorted([ds, f"{sid}:o3a:O3"])
    assert all(len(d["Observations"]) == 100 and "Observations@iot.nextLink" in d for d in mine_expanded)
    props = get(api, "/ObservedProperties", **{"$count": "true", "$filter": "id eq 'PM2,5' or id eq 'PM10'"})
    assert props["@iot.count"] == 2 and [p["name"] for p in props["value"]] == ["PM10", "PM2,5"]


def test_skip_and_next_links_walk_every_observation_once_while_rows_arrive(api, feed):
    start, end = load_station(feed, hours=3)
    db, sid = feed.warehouse.pg_conninfo, feed.sid
    ds = f"{sid}:{PM_DEVICE}:PM10"
    first = get(api, f"/Datastreams('{ds}')/Observations", **{"$top": "50"})
    late = [Reading(end + i * M, PM_DEVICE, "PM10", 77.0 + i, "ug/m3", "00", "") for i in range(30)]
    feed.send(late)  # arrives after the first page: the walk's tail, never a repeat
    walked = follow(api, first)
    ids = [o["@iot.id"] for o in walked]
    rows = sql(
        db,
        "SELECT ts::long, value FROM readings WHERE station = %s AND device = %s AND parameter = 'PM10' ORDER BY ts",
        (sid, PM_DEVICE),
    )
    assert len(ids) == len(set(ids)) == 180 + 30
    assert ts_values(walked) == [tuple(r) for r in rows]
    # A client's own $skip (no token: an offset) gives the same rows as the walk's positions.
    jumped = get(api, f"/Datastreams('{ds}')/Observations", **{"$skip": "120", "$top": "40"})
    assert [o["@iot.id"] for o in jumped["value"]] == ids[120:160]
    assert parse_qs(urlsplit(jumped["@iot.nextLink"]).query)["$skip"] == ["160"]


def test_bad_queries_get_a_4xx_json_error(api):
    def refused(path: str, status: int, code: str, key: bool = True, **params) -> str:
        r = httpx.get(api.base + STA + path, params=params, headers={"X-API-Key": api.key} if key else {}, timeout=30)
        assert r.status_code == status, (path, params, r.status_code, r.text)
        body = r.json()
        assert set(body) == {"code", "message"} and body["code"] == code, body
        assert "Traceback" not in body["message"]
        return body["message"]

    assert "parse" in refused("/Things", 400, "bad_query", **{"$filter": "name eq 'x' and"}).lower()
    assert "phenomenonTime" in refused("/Observations", 400, "bad_query", **{"$filter": "colour eq 'red'"})
    assert "time" in refused("/Observations", 400, "bad_query", **{"$filter": "phenomenonTime ge 5"})
    assert "number" in refused("/Observations", 400, "bad_query", **{"$filter": "result gt 'high'"})
    assert "substringof" in refused("/Things", 400, "bad_query", **{"$filter": "substringof('a', name)"})
    refused("/Things", 400, "bad_query", **{"$top": "-1"})
    refused("/Things", 400, "bad_query", **{"$skip": "many"})
    refused("/Things", 400, "bad_query", **{"$count": "maybe"})
    assert "$foo" in refused("/Things", 400, "bad_query", **{"$foo": "1"})
    refused("/Things", 400, "bad_query", **{"$orderby": "name sideways"})
    assert "properties" in refused("/Things", 400, "bad_query", **{"$filter": "colour eq 'red'"})
    refused("/Datastreams", 400, "bad_query", **{"$orderby": "colour desc"})
    refused("/Observations", 400, "bad_query", **{"$orderby": "name"})
    assert "one level" in refused("/Things", 400, "bad_query", **{"$expand": "Datastreams/Observations"})
    refused("/Things", 400, "bad_query", **{"$expand": "Nope"})
    refused("/Observations", 400, "bad_query", **{"$skiptoken": "not-a-token"})
    assert "Observations" in refused("/Observations", 401, "key_required", key=False)
    refused("/Datastreams", 401, "key_required", key=False, **{"$expand": "Thing,Observations"})
    refused("/Things('NO_SUCH_STATION')", 404, "not_found")
    refused("/Nope", 404, "not_found")
    refused("/Things('NO_SUCH_STATION')/Observations", 404, "not_found")
    refused("/Observations('nothing:here:at:1')", 404, "not_found")
    refused("/Datastreams('NO_SUCH:d:PM10')/Observations", 404, "not_found")
    refused("/Datastreams('NO_SUCH:d:PM10')", 404, "not_found")
