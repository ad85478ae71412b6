"""The public page in a real browser (Debian's chromium, Playwright) against the real API server and QuestDB.

The data: stations' descriptions, hourly VN_AQI and hourly means written into QuestDB through store's ILP
writer (the aggregator's own tables, as it writes them), so every category of Bảng 1 is present with a
known AQI; the page must show each station in the regulation's colour, chart one station's last 48
hours with one point per published hour, switch language, and fetch nothing from outside the server."""

from __future__ import annotations

import datetime as dt
import json
import time

import httpx
import pytest

from analysis.aggregator import Aggregator
from analysis.settings import Settings, SettingsFile
from api.public_page.page import BundleMissing, bundle
from broker_bridge.envelope import Reading
from store.ilp_writer import WarehouseWriter, ilp_row
from store.schema import AQI_HOURLY, HOURLY_MEANS, STATION_METADATA
from tests.api.conftest import H, M
from tests.api.page_rig import NO_AQI_RGB, browse, keep_screenshot, parse_colour, regulation_rgb
from tests.helpers import sql, unique_station, wait_for_count

# (AQI of the newest hour or None: no row / a null AQI, GSO province code, latitude, longitude)
PLACES = {
    "good": (30, "01", 21.03, 105.85),  # Hà Nội
    "moderate": (75, "31", 20.86, 106.68),  # Hải Phòng
    "poor": (120, "48", 16.05, 108.20),  # Đà Nẵng
    "bad": (180, "79", 10.78, 106.70),  # TP Hồ Chí Minh
    "very_bad": (250, "92", 10.03, 105.78),  # Cần Thơ
    "hazardous": (400, "22", 20.95, 107.08),  # Quảng Ninh
    "no_row": (None, "56", 12.24, 109.19),  # Khánh Hòa: described, never an AQI
    "null_aqi": (None, "10", 22.49, 103.97),  # Lào Cai: the newest hour has no PM, so no AQI
}
CYCLE = (30, 75, 120, 180, 250, 400)
NULL_HOURS = {5, 17}  # hours (back from the newest) of the charted station without an AQI


def vn_local(ns: int) -> str:
    zone = dt.timezone(dt.timedelta(hours=7))
    return dt.datetime.fromtimestamp(ns / 1e9, zone).strftime("%Y-%m-%d %H:%M")


def write_world(warehouse) -> tuple[dict[str, str], int]:
    """The stations of PLACES and their rows; returns {place: station id} and the newest hour's end."""
    ids = {place: unique_station("PAGE") for place in PLACES}
    now = time.time_ns()
    newest = now // H * H
    meta, aqi, means = [], [], []
    for place, (value, province, lat, lon) in PLACES.items():
        sid = ids[place]
        meta.append(
            ilp_row(
                STATION_METADATA,
                now,
                station=sid,
                name=f"Trạm {place}",
                province_code=province,
                facility="",
                kind="ambient_air",
                latitude=lat,
                longitude=lon,
                enabled=True,
                parameters=json.dumps({"PM10": 60}),
            )  # fmt: skip
        )
        if place == "no_row":
            continue
        if place != "good":  # (the charted station has 60 hours below)
            aqi.append(aqi_row(sid, newest - 2 * H, 90, now))  # an older hour: only the newest counts
        aqi.append(aqi_row(sid, newest, value, now))
    chart = ids["good"]
    for k in range(60):  # 60 hours: the page must show the 48 of its window, no more
        ts = newest - k * H
        if k > 0:
            aqi.append(aqi_row(chart, ts, None if k in NULL_HOURS else CYCLE[k % 6], now))
        for parameter, base, unit in (("PM10", 40.0, "ug/m3"), ("PM2,5", 20.0, "ug/m3"), ("NO2", 60.0, "ug/m3")):
            if parameter == "NO2" and k >= 30:
                continue  # NO2 began 30 hours ago
            valid = not (parameter == "PM10" and k in (3, 4, 20))  # calibration hours: not published
            means.append(
                ilp_row(
                    HOURLY_MEANS,
                    ts,
                    station=chart,
                    device="aqms1",
                    parameter=parameter,
                    unit=unit,
                    mean=base + k % 7,
                    min=base,
                    max=base + 7,
                    n_valid=55 if valid else 30,
                    n_expected=60,
                    coverage=(55 if valid else 30) / 60,
                    valid=valid,
                    worst_flag=1,
                    rule=">=75% of 60 expected",
                    computed_at=now,
                    n_readings=60,
                    n_calibrating=0 if valid else 30,
                    n_device_error=0,
                    n_qc_fail=0,
                    n_suspect=0,
                )  # fmt: skip
            )
    writer = WarehouseWriter(warehouse.ilp_conf)
    try:
        writer.write_rows(STATION_METADATA, meta)
        writer.write_rows(AQI_HOURLY, aqi)
        writer.write_rows(HOURLY_MEANS, means)
    finally:
        writer.close()
    in_ids = "station IN (" + ",".join(f"'{s}'" for s in ids.values()) + ")"
    wait_for_count(warehouse.pg_conninfo, f"SELECT count() FROM station_metadata WHERE {in_ids}", len(meta))
    wait_for_count(warehouse.pg_conninfo, f"SELECT count() FROM aqi_hourly WHERE {in_ids}", len(aqi))
    wait_for_count(warehouse.pg_conninfo, f"SELECT count() FROM hourly_means WHERE {in_ids}", len(means))
    return ids, newest


def aqi_row(station: str, ts: int, value: int | None, now: int):
    fields = dict(station=station, category="", colour="", dominant="PM2,5", sub_indices="{}", computed_at=now)
    if value is None:
        fields.update(missing=json.dumps({"PM10": "no valid hour", "PM2,5": "no valid hour"}), reason="no PM")
    else:
        fields.update(aqi=value, missing="{}", reason="")
    return ilp_row(AQI_HOURLY, ts, **fields)


def fill_of(page, selector: str) -> tuple[int, int, int]:
    return parse_colour(page.get_attribute(selector, "fill"))


def test_public_page_colours_charts_and_languages(api, warehouse, tmp_path):
    ids, newest = write_world(warehouse)
    chart = ids["good"]
    with browse(api.base, tmp_path) as seen:
        page = seen.page
        page.goto(api.base + "/", wait_until="load")  # the root sends the public to the page
        assert page.url == api.base + "/page/"
        page.wait_for_selector("body[data-ready='true']", timeout=30_000)

        # -- every station's marker and list row carry its category's colour (grey without an AQI) --------
        for place, (value, province, _lat, _lon) in PLACES.items():
            sid = ids[place]
            want = NO_AQI_RGB if value is None else regulation_rgb(value)
            assert fill_of(page, f"circle.station[data-station='{sid}']") == want, place
            row = f"tr[data-station='{sid}']"
            swatch = page.eval_on_selector(f"{row} td.category .swatch", "e => getComputedStyle(e).backgroundColor")
            assert parse_colour(swatch) == want, place
            assert page.locator(f"text.province[data-province='{province}']").count() == 1, province
        assert page.inner_text(f"tr[data-station='{ids['good']}'] td.category").strip() == "Tốt"
        assert page.inner_text(f"tr[data-station='{ids['hazardous']}'] td.category").strip() == "Nguy hại"
        assert page.inner_text(f"tr[data-station='{ids['no_row']}'] td.category").strip() == "Chưa có AQI"
        # the newest hour in Vietnam time, though the browser's zone is Europe/Paris
        assert page.inner_text(f"tr[data-station='{chart}'] td:nth-child(5)").strip() == vn_local(newest)

        # -- one station's last 48 hours ---------------------------------------------------------------
        hours, published = check_station_chart(page, warehouse.pg_conninfo, chart)
        assert len(hours) in (45, 46), hours  # 48 hours less the two without an AQI (45: the hour turned meanwhile)
        assert set(published) == {"PM10", "PM2,5", "NO2"} and published["PM10"] < published["PM2,5"], published
        keep_screenshot(page, tmp_path, "public_page_vi")

        # -- the language switch -----------------------------------------------------------------------
        assert page.inner_text("#heading") == "Chất lượng không khí (VN_AQI)"
        page.click("#lang-en")
        assert page.get_attribute("html", "lang") == "en"
        assert page.inner_text("#heading") == "Air quality (VN_AQI)"
        assert page.inner_text(f"tr[data-station='{ids['good']}'] td.category").strip() == "Good"
        assert page.inner_text(f"tr[data-station='{ids['very_bad']}'] td.category").strip() == "Very bad"
        assert page.inner_text(f"tr[data-station='{ids['no_row']}'] td.category").strip() == "No AQI yet"
        assert "Vietnam time" in page.text_content("#aqi-chart .g-xtitle")
        assert page.locator(f"#detail[data-station='{chart}'] #aqi-chart .trace.bars .point").count() == len(hours)
        page.click("#lang-vi")
        assert page.inner_text("#heading") == "Chất lượng không khí (VN_AQI)"
        assert "Giờ Việt Nam" in page.text_content("#aqi-chart .g-xtitle")
        page.click("#lang-en")
        keep_screenshot(page, tmp_path, "public_page_en")

        assert seen.errors == []
        assert seen.outside() == [], "the page fetched something from outside our server"
        assert any("/page/vendor/plotly-" in u for u in seen.requests)


def check_station_chart(page, db: str, sid: str) -> tuple[list[tuple], dict[str, int]]:
    """Opens ``sid`` from the list; its AQI bars (count and colours) and each parameter's points equal SQL
    over the page's own window. Returns the AQI rows and the published means' counts per parameter."""
    page.click(f"tr[data-station='{sid}']")
    page.wait_for_selector(f"#detail[data-station='{sid}'] .means-chart path.point")
    page.wait_for_function("() => document.querySelector('#aqi-chart').dataset.points !== undefined")
    window = (_ns(page.get_attribute("#detail", "data-start")), _ns(page.get_attribute("#detail", "data-end")))
    assert window[1] - window[0] == 48 * H
    between = "station = %s AND ts >= cast(%s AS TIMESTAMP_NS) AND ts < cast(%s AS TIMESTAMP_NS)"
    hours = sql(db, f"SELECT aqi FROM aqi_hourly WHERE {between} AND aqi != null ORDER BY ts", (sid, *window))
    bars = page.eval_on_selector_all("#aqi-chart .trace.bars .point path", "ps => ps.map(p => p.style.fill)")
    assert [parse_colour(b) for b in bars] == [regulation_rgb(a) for (a,) in hours]
    published = dict(
        sql(
            db,
            f"SELECT parameter, count() FROM hourly_means WHERE {between} AND valid GROUP BY parameter",
            (sid, *window),
        )
    )
    present = [p for (p,) in sql(db, f"SELECT DISTINCT parameter FROM hourly_means WHERE {between}", (sid, *window))]
    charts = page.eval_on_selector_all(".means-chart", "cs => cs.map(c => c.dataset.parameter)")
    assert sorted(charts) == sorted(present), (charts, present)  # one device here: one chart per parameter
    for parameter in present:
        drawn = page.locator(f".means-chart[data-parameter='{parameter}'] .scatterlayer path.point").count()
        assert drawn == published.get(parameter, 0), (parameter, drawn, published)
    return hours, published


def _ns(text: str) -> int:
    """The page's window bound (``Date.toISOString``: milliseconds, ``Z``) in ns."""
    return int(dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000) * 1_000_000


def test_the_chart_bundle_comes_from_the_installed_package_and_its_absence_names_the_set_up_step(api):
    path, version = bundle()
    assert path.is_file() and path.stat().st_size > 1_000_000 and version
    html = httpx.get(api.base + "/page/", timeout=30).text
    url = f"/page/vendor/plotly-{version}.min.js"
    assert f'src="{url}"' in html and "://" not in html  # nothing from elsewhere
    plain = httpx.get(api.base + url, headers={"Accept-Encoding": "identity"}, timeout=30)
    assert plain.status_code == 200 and "content-encoding" not in plain.headers
    assert plain.content == path.read_bytes()
    packed = httpx.get(api.base + url, headers={"Accept-Encoding": "gzip"}, timeout=30)  # httpx decodes it
    assert packed.headers["content-encoding"] == "gzip" and packed.content == path.read_bytes()
    assert int(packed.headers["content-length"]) < path.stat().st_size / 2
    with pytest.raises(BundleMissing, match=r"absent\.min\.js is missing .*bash scripts/bootstrap\.sh"):
        bundle(file="plotly/package_data/absent.min.js")
    with pytest.raises(BundleMissing, match=r"`no-such-dist` package, which is not installed.*scripts/bootstrap\.sh"):
        bundle(dist_name="no-such-dist")


def pm_level(hours_back: int) -> float:
    """PM2,5 in µg/m³ for the hour ``hours_back`` hours before the newest: a new level every 8 hours,
    from good air to very bad, so NowCast walks through several categories."""
    return (12.0, 38.0, 65.0, 110.0, 190.0, 60.0, 20.0)[(hours_back // 8) % 7]


@pytest.mark.slow  # 50 hours of minute readings through the collector, then the aggregator: ~20 s
def test_public_page_over_readings_through_the_collector_and_the_aggregator(api, feed, tmp_path):
    """The same page over what the real path made: signed batches -> Mosquitto -> collector -> QuestDB,
    then the aggregator's hourly means and VN_AQI; the marker's colour is the regulation's for the newest
    AQI in SQL, and the chart has a point for every published hour."""
    newest = time.time_ns() // H * H
    first = newest - 50 * H
    readings = []
    for t in range(first, newest, M):
        back = (newest - t) // H  # the hour ending at newest - back*H holds t
        for parameter, value in (("PM2,5", pm_level(back)), ("PM10", pm_level(back) * 1.6), ("CO", 900.0)):
            status, cause = "00", ""
            if parameter == "PM10" and back in (6, 7) and (t - first) % H < 25 * M:
                status, cause = "01", "zero calibration"  # 35 of 60 valid: the hour is not published
            readings.append(
                Reading(t, "aqms1", parameter, round(value + (t // M % 5) * 0.2, 3), "ug/m3", status, cause)
            )
    feed.send(readings, per_batch=1000)
    feed.describe("01", parameters={"PM2,5": 60, "PM10": 60, "CO": 60})
    aggregator = Aggregator(
        feed.warehouse.pg_conninfo, feed.warehouse.ilp_conf, Settings(SettingsFile()),
        lambda: {feed.sid: "ambient_air"}, name=f"agg-{feed.sid}",
    )  # fmt: skip
    aggregator.start()
    aggregator.poll_once()
    db = feed.warehouse.pg_conninfo
    wait_for_count(db, "SELECT count() FROM aqi_hourly WHERE station = %s AND aqi != null", 40, params=(feed.sid,))
    ((latest,),) = sql(
        db, "SELECT aqi FROM aqi_hourly WHERE station = %s LATEST ON ts PARTITION BY station", (feed.sid,)
    )
    assert latest is not None

    with browse(api.base, tmp_path) as seen:
        page = seen.page
        page.goto(api.base + "/page/?lang=en", wait_until="load")
        page.wait_for_selector("body[data-ready='true']", timeout=30_000)
        assert page.get_attribute("html", "lang") == "en"
        assert fill_of(page, f"circle.station[data-station='{feed.sid}']") == regulation_rgb(latest)
        hours, published = check_station_chart(page, db, feed.sid)
        assert len({regulation_rgb(a) for (a,) in hours}) >= 3, hours  # the levels crossed categories
        assert set(published) == {"PM2,5", "PM10", "CO"} and published["PM10"] == published["PM2,5"] - 2, published
        keep_screenshot(page, tmp_path, "public_page_collector")
        assert seen.errors == [] and seen.outside() == []
