"""Keyset pages walk a station's readings with no row missed or repeated while new rows arrive."""

from __future__ import annotations

import time

import pytest

from broker_bridge.envelope import Reading
from tests.api.conftest import M, check_moment, iso
from tests.helpers import sql, wait_for_count

PARAMETERS = ("PM10", "PM2,5", "NO2", "SO2", "CO")


def minute_readings(start: int, minutes: int, device: str = "aqms1", step: int = 1) -> list[Reading]:
    return [
        Reading(start + m * M, device, p, round(10 + (m % 97) * 0.5 + i, 3), "ug/m3", "00")
        for m in range(0, minutes, step)
        for i, p in enumerate(PARAMETERS)
    ]


def key(row: dict) -> tuple[int, str, str]:
    return check_moment(row["ts"]), row["device"], row["parameter"]


def walk_while_rows_arrive(api, feed, n_readings: int, limit: int) -> None:
    minutes = n_readings // len(PARAMETERS)
    start = (time.time_ns() // M - minutes - 600) * M  # ends 10 minutes before now: live data comes after it
    feed.send(minute_readings(start, minutes))
    period = {"start": iso(start), "end": iso(start + (minutes + 1200) * M)}
    arrived: list[Reading] = []
    cursor_key: list[tuple] = []

    def arrive(page_no: int, page: dict) -> None:
        if page_no != 3:
            return
        # Between pages 3 and 4: a second analyzer's readings over the whole period (ahead of and behind
        # the walk's position), and live minutes after the last stored one.
        cursor_key.append(key(page["data"][-1]))
        late = minute_readings(start, minutes, device="aqms2", step=7)
        live = minute_readings(start + minutes * M, 100)
        feed.send(late + live)
        arrived.extend(late + live)

    rows, pages = api.walk(f"/v1/stations/{feed.sid}/readings", api.key, between_pages=arrive, limit=limit, **period)
    walked = [key(r) for r in rows]
    assert len(walked) == len(set(walked)), "a row came twice"
    assert walked == sorted(walked), "pages are not in key order"
    initial = {(r.ts_ns, r.device, r.parameter) for r in minute_readings(start, minutes)}
    after_cursor = {(r.ts_ns, r.device, r.parameter) for r in arrived}
    expected = initial | {k for k in after_cursor if k > cursor_key[0]}
    assert set(walked) == expected, f"missed {len(expected - set(walked))}, unexpected {len(set(walked) - expected)}"
    assert len(initial) == n_readings and pages >= n_readings // limit
    # The rows behind the cursor when they arrived are stored; a new walk (what a client does next) has them.
    stored = sql(feed.warehouse.pg_conninfo, "SELECT count() FROM readings WHERE station = %s", (feed.sid,))[0][0]
    assert stored == len(initial | after_cursor)
    assert stored > len(expected), "no arrival landed behind the cursor: the test did not test that case"


def test_a_walk_of_20000_readings_misses_and_repeats_nothing_while_rows_arrive(api, feed):
    walk_while_rows_arrive(api, feed, 20_000, limit=1000)


@pytest.mark.slow  # 100,000 readings through the collector, then 20 pages of 5,000: ~40 s
def test_a_walk_of_100000_readings_misses_and_repeats_nothing_while_rows_arrive(api, feed):
    walk_while_rows_arrive(api, feed, 100_000, limit=5000)


def test_a_page_is_capped_and_the_cursor_keeps_its_query(api, feed):
    start = (time.time_ns() // M - 100) * M
    feed.send(minute_readings(start, 30))
    path = f"/v1/stations/{feed.sid}/readings"
    too_big = api.get(path, api.key, limit=10_001)
    assert too_big.status_code == 400 and too_big.json()["code"] == "bad_parameter"
    first = api.get(path, api.key, start=iso(start), limit=40).json()
    assert len(first["data"]) == 40 and first["next_cursor"]
    other = api.get(path, api.key, cursor=first["next_cursor"], parameter="NO2")
    assert other.status_code == 400 and other.json()["code"] == "bad_cursor"
    elsewhere = api.get(f"/v1/stations/{feed.sid}/means/hourly", cursor=first["next_cursor"])
    assert elsewhere.status_code == 400 and elsewhere.json()["code"] == "bad_cursor"
    rest = api.get(path, api.key, cursor=first["next_cursor"], limit=1000).json()
    assert len(rest["data"]) == 150 - 40 and rest["next_cursor"] is None
    wait_for_count(
        feed.warehouse.pg_conninfo, "SELECT count() FROM readings WHERE station = %s", 150, params=(feed.sid,)
    )
