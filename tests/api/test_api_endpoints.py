"""Every endpoint's answer equals SQL on the same rows: readings through the collector, then the real
aggregator (means, VN_AQI, episodes), then the API over HTTP."""

from __future__ import annotations

import datetime as dt
import json
import math

import pytest

from analysis.aggregator import Aggregator
from analysis.settings import Settings, SettingsFile
from broker_bridge.envelope import Reading
from store import vn_aqi
from tests.api.conftest import H, M, check_moment, iso
from tests.helpers import sql


def local_midnight_ns(day: dt.date) -> int:
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=vn_aqi.LOCAL_ZONE).timestamp()) * 1_000_000_000


def value(parameter: str, t: int) -> float:
    wave = 15 * math.sin(t / (7 * H) * 2 * math.pi) + (t // M % 7) * 0.3
    if parameter == "NO2":  # above QCVN 05's 200 µg/m³ 1-hour limit from 10:00 to 13:00 of the first day
        return round(260.0 + wave, 3) if 10 * H <= t % (24 * H) < 13 * H else round(60 + wave, 3)
    return round({"PM10": 45.0, "PM2,5": 25.0, "CO": 1500.0}[parameter] + wave, 3)


def load(feed) -> tuple[int, int]:
    """A local day of minute readings of four parameters, with calibration, a device error and a
    calibrating newest reading; then the aggregator. Returns the period [start, end)."""
    start = local_midnight_ns(dt.date.today() - dt.timedelta(days=3))
    end = start + 24 * H
    readings = []
    for t in range(start, end, M):
        hour = (t - start) // H
        for p in ("PM10", "PM2,5", "NO2", "CO"):
            status, cause = "00", ""
            if hour == 5 and (t - start) % H < 25 * M:
                status, cause = "01", "zero calibration"  # 35 of 60: the hour is not valid
            if hour == 20 and p == "CO":
                status, cause = "02", "analyzer fault"
            readings.append(Reading(t, "aqms1", p, value(p, t), "ug/m3", status, cause))
    readings.append(Reading(end, "aqms1", "PM10", 999.0, "ug/m3", "01", "span check"))  # newest: calibrating
    feed.send(readings)
    settings = Settings(SettingsFile())
    aggregator = Aggregator(
        feed.warehouse.pg_conninfo, feed.warehouse.ilp_conf, settings, lambda: {feed.sid: "ambient_air"},
        name=f"agg-{feed.sid}",
    )  # fmt: skip
    aggregator.start()
    aggregator.poll_once()
    return start, end + M


@pytest.mark.slow  # a day through the collector, then the aggregator: ~16 s
def test_every_endpoint_equals_sql_on_the_same_rows(api, feed):
    start, end = load(feed)
    feed.describe("T01", parameters={"PM10": 60, "NO2": 60})
    db = feed.warehouse.pg_conninfo
    sid = feed.sid
    period = {"start": iso(start), "end": iso(end)}

    # -- stations -------------------------------------------------------------------------------------
    stations = api.get("/v1/stations", province="T01", kind="ambient_air").json()["data"]
    mine = [s for s in stations if s["id"] == sid]
    ((name, province, lat, params, described),) = sql(
        db,
        "SELECT name, province_code, latitude, parameters, ts::long FROM station_metadata WHERE station = %s"
        " LATEST ON ts PARTITION BY station",
        (sid,),
    )
    ((last,),) = sql(db, "SELECT max(ts)::long FROM readings WHERE station = %s", (sid,))
    assert len(mine) == 1
    s = mine[0]
    assert (s["name"], s["province_code"], s["latitude"], s["parameters"]) == (name, province, lat, json.loads(params))
    assert (check_moment(s["described_at"]), check_moment(s["last_reading"])) == (described, last)
    assert all(x["province_code"] == "T01" for x in stations)
    assert api.get("/v1/stations", province="T99-none").json()["data"] == []

    # -- latest (public: the newest valid reading; with a key: the newest of any status) --------------
    rows = sql(
        db, "SELECT device, parameter, ts::long, value, status, qc_flag FROM readings WHERE station = %s", (sid,)
    )
    newest, newest_valid = {}, {}
    for d, p, ts, v, status, flag in rows:
        if ts > newest.get((d, p), (0,))[0]:
            newest[d, p] = (ts, v, status)
        if status == "00" and v is not None and flag in (None, 1, 2) and ts > newest_valid.get((d, p), (0,))[0]:
            newest_valid[d, p] = (ts, v)
    public = api.get("/v1/latest", station=sid).json()["data"]
    assert {(r["device"], r["parameter"]): (check_moment(r["ts"]), r["value"]) for r in public} == newest_valid
    assert "status" not in public[0] and "qc_flag" not in public[0]
    raw = api.get("/v1/latest/raw", api.key, station=sid).json()["data"]
    assert {(r["device"], r["parameter"]): (check_moment(r["ts"]), r["value"], r["status"]) for r in raw} == newest
    assert newest["aqms1", "PM10"][2] == "01" and newest_valid["aqms1", "PM10"][1] != 999.0  # the two really differ
    by_province = api.get("/v1/latest", province="T01").json()["data"]
    assert {r["station"] for r in by_province} >= {sid}

    # -- raw readings ---------------------------------------------------------------------------------
    walked, _ = api.walk(f"/v1/stations/{sid}/readings", api.key, limit=5000, **period)
    expected = sql(
        db,
        "SELECT ts::long, device, parameter, value, status, cause, qc_flag, qc_check, seq FROM readings"
        " WHERE station = %s ORDER BY ts, device, parameter",
        (sid,),
    )
    got = [
        (check_moment(r["ts"]), r["device"], r["parameter"], r["value"], r["status"], r["cause"], r["qc_flag"],
         r["qc_check"], r["seq"])
        for r in walked
    ]  # fmt: skip
    assert got == [(*e[:5], e[5] or "", e[6], e[7] or "", e[8]) for e in expected]

    # -- means with their coverage --------------------------------------------------------------------
    for period_name, table in (("hourly", "hourly_means"), ("8h", "eight_hour_means"), ("daily", "daily_means")):
        expected = sql(
            db,
            f"SELECT ts::long, device, parameter, mean, n_valid, n_expected, coverage, valid FROM {table}"
            " WHERE station = %s ORDER BY ts, device, parameter",
            (sid,),
        )
        assert expected, f"the aggregator wrote no {table}"
        window = {"start": iso(start), "end": iso(end + 24 * H)}
        keyed, _ = api.walk(f"/v1/stations/{sid}/means/{period_name}", api.key, limit=50, **window)
        public_rows, _ = api.walk(f"/v1/stations/{sid}/means/{period_name}", limit=50, **window)
        for rows_, with_key in ((keyed, True), (public_rows, False)):
            got = []
            for r in rows_:
                c = r["coverage"]
                mean = r["mean"] if r["mean"] is not None or not with_key else r["detail"]["mean_if_invalid"]
                got.append(
                    (check_moment(r["end"]), r["device"], r["parameter"], mean, c["observed"], c["expected"],
                     c["percent"], c["valid"])
                )  # fmt: skip
                assert (r["detail"] is not None) == with_key
            want = [
                (ts, d, p, m if (v or with_key) else None, n, e, round(cov * 100, 2), v)
                for ts, d, p, m, n, e, cov, v in expected
            ]
            assert got == want, period_name
        assert any(not v for *_, v in expected) and any(v for *_, v in expected), "valid and invalid periods both"

    # -- VN_AQI ---------------------------------------------------------------------------------------
    for period_name, table in (("hourly", "aqi_hourly"), ("daily", "aqi_daily")):
        expected = sql(
            db, f"SELECT ts::long, aqi, category, colour, dominant, sub_indices FROM {table} WHERE station = %s"
            " ORDER BY ts", (sid,),
        )  # fmt: skip
        assert expected
        rows_, _ = api.walk(f"/v1/stations/{sid}/aqi/{period_name}", limit=20, start=iso(start), end=iso(end + 24 * H))
        got = [
            (check_moment(r["end"]), r["aqi"], r["category"] and r["category"]["name_vi"],
             r["category"] and r["category"]["hex"], r["dominant"],
             {p: x["value"] for p, x in r["sub_indices"].items()})
            for r in rows_
        ]  # fmt: skip
        want = [
            (ts, a, c, col, dom, {p: x["value"] for p, x in json.loads(subs or "{}").items()})
            for ts, a, c, col, dom, subs in expected
        ]
        assert got == want, period_name
        if period_name == "daily":
            assert all(r["local_day"] == str(vn_aqi.local_day_of(check_moment(r["end"]))) for r in rows_)
    latest_aqi = [r for r in api.get("/v1/aqi/latest").json() if r["station"] == sid]
    assert [check_moment(r["end"]) for r in latest_aqi] == [
        sql(db, "SELECT max(ts)::long FROM aqi_hourly WHERE station = %s", (sid,))[0][0]
    ]

    # -- exceedance episodes --------------------------------------------------------------------------
    expected = sql(
        db,
        "SELECT ts::long, parameter, limit_id, state, peak FROM exceedance_episodes WHERE station = %s"
        " ORDER BY ts, station, device, parameter, limit_id",
        (sid,),
    )
    assert any(p == "NO2" for _, p, *_ in expected), "the NO2 hours above 200 opened no episode"
    rows_, _ = api.walk("/v1/episodes", station=sid, limit=2, start=iso(start), end=iso(end))
    got = [(check_moment(r["opened"]), r["parameter"], r["limit_id"], r["state"], r["peak"]) for r in rows_]
    assert got == [tuple(e) for e in expected]
