"""What the API's speed work must not change, and what it adds: /latest/raw has every field of a reading;
the latest-of-all answer is shared (as_of says when it was read) and gzipped once; every answer still
matches its declared model; stations' online state and data availability equal SQL on the same rows;
wrong keys are rate-limited per client address."""

from __future__ import annotations

import time

import httpx

from analysis.aggregator import Aggregator
from analysis.settings import Settings, SettingsFile
from api import keys
from api.app import GZIP_MIN_BYTES
from api.models import LatestReadings, LatestValues, Page, Reading, Station
from broker_bridge.envelope import Reading as Sent
from store.ilp_writer import WarehouseWriter, ilp_row
from store.schema import STATION_EVENTS
from tests.api.conftest import H, M, check_moment, iso, start_api
from tests.helpers import sql, unique_station, wait_for_count


def test_latest_raw_is_a_whole_reading_and_the_latest_is_shared_and_gzipped(api, feed):
    t0 = (time.time_ns() // M - 20) * M
    feed.send([Sent(t0 + i * M, "aqms1", p, 10.0 + i, "ug/m3", "00") for i in range(5) for p in ("PM10", "NO2")])
    raw = api.get("/v1/latest/raw", api.key, station=feed.sid).json()
    assert LatestReadings.model_validate(raw).model_dump(mode="json") == raw, "the answer is its declared model"
    newest = sql(
        feed.warehouse.pg_conninfo,
        "SELECT parameter, seq, historical, source, qc_checks, received_at::long FROM readings WHERE station = %s"
        " LATEST ON ts PARTITION BY station, device, parameter",
        (feed.sid,),
    )
    got = {
        r["parameter"]: (r["seq"], r["historical"], r["source"], r["qc_checks"], check_moment(r["received_at"]))
        for r in raw["data"]
    }
    assert got == {p: (seq, hist, src or "agent", checks or "", rec) for p, seq, hist, src, checks, rec in newest}
    assert all(seq is not None for seq, *_ in got.values()), "seq was not selected"
    # The same reading through /readings: one model, the same fields and values.
    walked = api.get(f"/v1/stations/{feed.sid}/readings", api.key, start=iso(t0)).json()
    assert Page[Reading].model_validate(walked).model_dump(mode="json") == walked
    last = {r["parameter"]: r for r in walked["data"]}
    assert [{k: v for k, v in r.items() if k != "station"} for r in raw["data"]] == [
        last[r["parameter"]] for r in raw["data"]
    ]

    first = api.get("/v1/latest").json()
    again = api.get("/v1/latest").json()
    assert LatestValues.model_validate(first).model_dump(mode="json") == first
    assert again["as_of"] == first["as_of"], "a second call within the second reads the shared answer"
    filtered = api.get("/v1/latest", station=feed.sid).json()
    assert filtered["data"] == [r for r in first["data"] if r["station"] == feed.sid] and filtered["data"]
    zipped = httpx.get(api.base + "/v1/latest", headers={"Accept-Encoding": "gzip"}, timeout=30)
    plain = httpx.get(api.base + "/v1/latest", headers={"Accept-Encoding": "identity"}, timeout=30)
    assert zipped.headers["content-encoding"] == "gzip" and "content-encoding" not in plain.headers
    assert zipped.json()["data"] and set(zipped.json()) == set(plain.json()) == {"as_of", "data"}
    # Other large answers are gzipped on the way out too, and say the same.
    url = f"{api.base}/v1/stations/{feed.sid}/readings?start={iso(t0)}"
    keyed = {"X-API-Key": api.key}
    zipped_walk = httpx.get(url, headers={**keyed, "Accept-Encoding": "gzip"}, timeout=30)
    plain_walk = httpx.get(url, headers={**keyed, "Accept-Encoding": "identity"}, timeout=30)
    assert len(plain_walk.content) > GZIP_MIN_BYTES, "the walk is big enough to be gzipped"
    assert zipped_walk.headers["content-encoding"] == "gzip" and "content-encoding" not in plain_walk.headers
    assert int(zipped_walk.headers["content-length"]) < len(plain_walk.content) / 2
    assert zipped_walk.json() == plain_walk.json() == walked

    # A new reading shows within about a second; its as_of moves on and is never after the answer was read.
    feed.send([Sent(t0 + 10 * M, "aqms1", "PM10", 77.0, "ug/m3", "00")])
    deadline = time.monotonic() + 10
    while True:
        asked = time.time_ns()
        now = api.get("/v1/latest", station=feed.sid).json()
        values = {r["parameter"]: r["value"] for r in now["data"]}
        if values.get("PM10") == 77.0:
            break
        assert time.monotonic() < deadline, "the shared answer never caught up"
        time.sleep(0.2)
    assert check_moment(first["as_of"]) < check_moment(now["as_of"]) <= asked


def test_stations_online_state_and_data_availability_equal_sql(warehouse, api, feed, tmp_path):
    db = warehouse.pg_conninfo
    now = time.time_ns()
    end = (now // M - 30) * M  # the newest reading is 30 minutes old
    start = end - 3 * H
    readings = []
    for t in range(start, end, M):
        status = "01" if (t - start) // H == 1 and (t - start) % H < 10 * M else "00"  # 10 minutes calibrating
        status = "02" if (t - start) // H == 2 and (t - start) % H < 5 * M else status  # 5 of device error
        readings.append(Sent(t, "aqms1", "PM10", 30.0 + (t // M) % 5, "ug/m3", status))
    feed.send(readings)
    feed.describe("T02", parameters={"PM10": 60})
    silent = unique_station("API_SILENT")
    feed.describe("T02", parameters={"PM10": 60}, station=silent)
    aggregator = Aggregator(db, warehouse.ilp_conf, Settings(SettingsFile()), lambda: {feed.sid: "ambient_air"},
                            name=f"agg-{feed.sid}")  # fmt: skip
    aggregator.start()
    aggregator.poll_once()
    wait_for_count(db, "SELECT count() FROM hourly_means WHERE station = %s", 3, timeout=60, params=(feed.sid,))
    # The connection state the station announced: session 2's birth, then a late will of session 1.
    writer = WarehouseWriter(warehouse.ilp_conf)
    try:
        event = dict(station=feed.sid, planned=False, payload="")
        writer.write_rows(STATION_EVENTS, [
            ilp_row(STATION_EVENTS, now - 2 * M, state="online", session=2, **event),
            ilp_row(STATION_EVENTS, now - M, state="offline", session=1, **event),
        ])  # fmt: skip
    finally:
        writer.close()
    wait_for_count(db, "SELECT count() FROM station_events WHERE station = %s", 2, params=(feed.sid,))

    body = api.get("/v1/stations", province="T02").json()
    assert Page[Station].model_validate(body).model_dump(mode="json") == body
    by_id = {s["id"]: s for s in body["data"]}
    mine, never = by_id[feed.sid], by_id[silent]
    assert (never["state"], never["connection"], never["last_reading"]) == ("never", "unknown", None)
    assert mine["connection"] == "online", "a late will of an older session overrode a newer birth"
    # 30 minutes without a reading: past 60 s + the default 15 minutes' grace, within an hour's.
    assert mine["state"] == "offline"
    lenient, stop = start_api(db, api.keys_path, offline_grace_s=3600)
    try:
        assert httpx.get(f"{lenient}/v1/stations/{feed.sid}", timeout=30).json()["state"] == "online"
    finally:
        stop()

    ((through,),) = sql(db, "SELECT max(ts)::long FROM hourly_means")
    ((hour_valid,),) = sql(
        db, "SELECT coalesce(sum(n_valid), 0) FROM hourly_means WHERE station = %s AND ts = cast(%s AS TIMESTAMP_NS)",
        (feed.sid, through),
    )  # fmt: skip
    ((day_valid, calibrating, device_error, qc_fail),) = sql(
        db,
        "SELECT sum(n_valid), sum(n_calibrating), sum(n_device_error), sum(n_qc_fail) FROM hourly_means"
        " WHERE station = %s AND ts > cast(%s AS TIMESTAMP_NS) AND ts <= cast(%s AS TIMESTAMP_NS)",
        (feed.sid, through - 24 * H, through),
    )
    a = mine["availability"]
    assert check_moment(a["through"]) == through
    assert a["last_hour"]["expected"] == 60 and a["last_day"]["expected"] == 24 * 60, "from the declared interval"
    assert (a["last_hour"]["observed"], a["last_day"]["observed"]) == (hour_valid, day_valid)
    assert a["last_day"]["percent"] == round(100 * day_valid / 1440, 2)
    assert (a["calibrating"], a["device_error"], a["qc_fail"]) == (calibrating, device_error, qc_fail)
    assert (calibrating, device_error) == (10, 5), "the test's own statuses reached the hourly means"
    assert never["availability"]["last_day"] == {"expected": 1440, "observed": 0, "percent": 0.0}
    assert api.get(f"/v1/stations/{feed.sid}").json() == mine


def test_wrong_keys_are_rate_limited_per_client_address(warehouse, tmp_path):
    path = tmp_path / "keys.json"
    entry, right = keys.add(path, "an agency", 600)
    wrong = f"qk_{entry.id}_not-the-secret"  # a known id: each guess costs a scrypt
    base, stop = start_api(warehouse.pg_conninfo, path, failed_keys_per_minute=3)
    here = httpx.Client(base_url=base, timeout=30)
    elsewhere = httpx.Client(base_url=base, timeout=30, transport=httpx.HTTPTransport(local_address="127.0.0.2"))
    try:
        guesses = [here.get("/v1/latest/raw", headers={"X-API-Key": wrong}) for _ in range(3)]
        assert [g.status_code for g in guesses] == [401] * 3
        limited = here.get("/v1/latest/raw", headers={"X-API-Key": wrong})
        assert limited.status_code == 429 and limited.json()["code"] == "rate_limited"
        assert 1 <= int(limited.headers["Retry-After"]) <= 20  # 3 a minute: a token every 20 s
        blocked = here.get("/v1/latest/raw", headers={"X-API-Key": right})
        assert blocked.status_code == 429, "a blocked address learns nothing about any key, a right one included"
        assert here.get("/v1/stations").status_code == 200, "the address's keyless requests are not blocked"
        assert elsewhere.get("/v1/latest/raw", headers={"X-API-Key": right}).status_code == 200
        assert elsewhere.get("/v1/latest/raw", headers={"X-API-Key": wrong}).status_code == 401, "its own bucket"
    finally:
        here.close()
        elsewhere.close()
        stop()
