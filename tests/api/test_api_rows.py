"""The answers' rows are built as plain dicts in one step (api/app.py: ``_readings``, ``_means``, instants
memoised per answer): every page, over rows with every blank and edge the warehouse can give, is exactly
what its declared pydantic model makes of it (same fields, same order, same values), and equals the rows."""

from __future__ import annotations

import json

import pytest

from api.models import LatestReadings, Mean, Page, Reading
from store.ilp_writer import WarehouseWriter, ilp_row
from store.schema import DAILY_MEANS, EIGHT_HOUR_MEANS, HOURLY_MEANS, READINGS
from tests.api.conftest import H, M, check_moment, iso
from tests.helpers import unique_station, wait_for_count

T0 = 1_790_000_000 * 1_000_000_000  # 2026-09-21T14:13:20Z, a whole second
PARAMETERS = ("PM10", "PM2,5", "NO2")


def as_model(model, page: dict) -> str:
    """The page as the model renders it, then both spelt alike: equal strings = same keys in the same order."""
    return json.dumps(model.model_validate(page).model_dump(mode="json"))


def write(conninfo_ilp: str, table, rows: list) -> None:
    writer = WarehouseWriter(conninfo_ilp)
    try:
        writer.write_rows(table, rows)
    finally:
        writer.close()


@pytest.fixture
def station(api, warehouse):
    """A station with readings (every optional column both set and blank, instants with and without a
    fraction, each instant repeated across parameters) and hourly, 8-hour and daily means (valid and not)."""
    sid = unique_station("ROWS")
    readings = []
    for k in range(40):
        ts = T0 + k * M + (123_456_789 if k % 5 == 0 else 0)  # some with nanoseconds
        for i, p in enumerate(PARAMETERS):
            odd = (k + i) % 3 == 0
            readings.append(
                ilp_row(READINGS, ts, station=sid, device="aqms1", parameter=p,
                        value=None if k == 7 else 10.0 + k / 4, unit="ug/m3" if not odd else None,
                        status=("00", "01", "02")[k % 3], cause="zero check" if k % 3 == 1 else None,
                        seq=k if odd else None, historical=k % 4 == 0, qc_flag=None if odd else (1, 3, 4)[k % 3],
                        qc_check="range" if k % 3 == 2 else None, qc_cause="above 1000" if k % 3 == 2 else None,
                        qc_checks="range,spike" if k % 6 == 2 else None, source="tt10" if k % 4 == 1 else None,
                        received_at=None if odd else ts + 3 * M + 5)
            )  # fmt: skip
    write(warehouse.ilp_conf, READINGS, readings)
    means = {HOURLY_MEANS: [], EIGHT_HOUR_MEANS: [], DAILY_MEANS: []}
    for k in range(1, 31):
        for p in PARAMETERS:
            valid = k % 4 != 0
            common = dict(station=sid, device="aqms1", parameter=p, unit="ug/m3" if k % 7 else None,
                          mean=20.0 + k / 3, min=10.0 + k, max=30.5 + k, n_valid=45 if valid else 12, n_expected=60,
                          coverage=None if k == 5 else (0.75 if valid else 0.2), valid=valid,
                          worst_flag=None if k == 9 else 2, rule=">=75% of 60 expected" if k % 5 else None,
                          computed_at=None if k == 3 else T0 + k * H + 7)  # fmt: skip
            means[HOURLY_MEANS].append(
                ilp_row(HOURLY_MEANS, T0 + k * H, **common, n_readings=60, n_calibrating=k % 3,
                        n_device_error=None if k == 2 else 1, n_qc_fail=0, n_suspect=k % 2)
            )  # fmt: skip
            means[EIGHT_HOUR_MEANS].append(ilp_row(EIGHT_HOUR_MEANS, T0 + k * 8 * H, **common))
            means[DAILY_MEANS].append(
                ilp_row(DAILY_MEANS, T0 + k * 24 * H, **common, local_day=f"2026-10-{k:02d}",
                        max_hourly=None if k == 4 else 41.5 + k)
            )  # fmt: skip
    for table, rows in means.items():
        write(warehouse.ilp_conf, table, rows)
    wait_for_count(warehouse.pg_conninfo, "SELECT count() FROM readings WHERE station = %s", 120, params=(sid,))
    for table in means:
        wait_for_count(warehouse.pg_conninfo, f"SELECT count() FROM {table.name} WHERE station = %s", 90,
                       params=(sid,))  # fmt: skip
    return sid


def test_raw_readings_pages_are_their_model_exactly(api, station):
    path = f"/v1/stations/{station}/readings"
    rows, pages = [], 0
    cursor = None
    while True:
        asked = (
            {"start": iso(T0), "end": iso(T0 + H), "limit": 50} if cursor is None else {"cursor": cursor, "limit": 50}
        )
        answer = api.get(path, api.key, **asked)
        assert answer.status_code == 200, answer.text
        page = json.loads(answer.content)
        assert json.dumps(page) == as_model(Page[Reading], page)
        rows += page["data"]
        pages, cursor = pages + 1, page["next_cursor"]
        if cursor is None:
            break
    assert (len(rows), pages) == (120, 3)
    assert list(rows[0]) == list(Reading.model_fields), "the model's fields, in its order"
    # The memoised instants: one row's time is every parameter's of that minute, fractions kept.
    assert {check_moment(r["ts"]) for r in rows} == {T0 + k * M + (123_456_789 if k % 5 == 0 else 0) for k in range(40)}
    assert rows[0]["ts"] == rows[1]["ts"] == {"utc": "2026-09-21T14:13:20.123456789Z",
                                              "local": "2026-09-21T21:13:20.123456789+07:00"}  # fmt: skip
    blanks = {(r["unit"], r["cause"], r["qc_check"], r["qc_cause"], r["qc_checks"], r["source"]) for r in rows}
    assert ("", "", "", "", "", "agent") in blanks and any(r["received_at"] is None for r in rows)
    assert any(r["received_at"] is not None for r in rows) and any(r["value"] is None for r in rows)

    latest = json.loads(api.get("/v1/latest/raw", api.key, station=station).content)
    assert json.dumps(latest) == as_model(LatestReadings, latest) and len(latest["data"]) == len(PARAMETERS)


@pytest.mark.parametrize("period", ["hourly", "8h", "daily"])
def test_means_pages_are_their_model_exactly_public_and_keyed(api, station, period):
    span = {"hourly": H, "8h": 8 * H, "daily": 24 * H}[period]
    path = f"/v1/stations/{station}/means/{period}"
    for key in (None, api.key):
        answer = api.get(path, key, start=iso(T0), end=iso(T0 + 31 * span), limit=10000)
        assert answer.status_code == 200, answer.text
        page = json.loads(answer.content)
        assert json.dumps(page) == as_model(Page[Mean], page)
        rows = page["data"]
        assert len(rows) == 30 * len(PARAMETERS) and list(rows[0]) == list(Mean.model_fields)
        for r in rows:
            end = check_moment(r["end"])
            assert check_moment(r["start"]) == end - span
            k = (end - T0) // span
            valid = k % 4 != 0
            assert r["coverage"] == {
                "expected": 60,
                "observed": 45 if valid else 12,
                "percent": None if k == 5 else (75.0 if valid else 20.0),
                "valid": valid,
                "rule": ">=75% of 60 expected" if k % 5 else "",
            }
            assert (r["mean"], r["unit"]) == (20.0 + k / 3 if valid else None, "ug/m3" if k % 7 else "")
            assert r["computed_at"] is None if k == 3 else check_moment(r["computed_at"]) == T0 + k * H + 7
            assert (r["local_day"], r["max_hourly"]) == (
                (f"2026-10-{k:02d}", None if k == 4 else 41.5 + k) if period == "daily" else (None, None)
            )
            if key is None:
                assert r["detail"] is None
            else:
                counts = (60, k % 3, None if k == 2 else 1, 0, k % 2) if period == "hourly" else (None,) * 5
                assert r["detail"] == {
                    "mean_if_invalid": None if valid else 20.0 + k / 3,
                    "worst_flag": 0 if k == 9 else 2,  # a BYTE column has no NULL: QuestDB stores 0
                    **dict(zip(("n_readings", "n_calibrating", "n_device_error", "n_qc_fail", "n_suspect"), counts)),
                }
