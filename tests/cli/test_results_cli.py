"""``quantrac averages | aqi | exceedances | alerts`` on the real QuestDB: what they print equals SQL on the
same rows, in every format, across page boundaries; times in UTC and Vietnam local time."""

from __future__ import annotations

import csv
import io
import json
import time
from datetime import UTC, datetime

import pytest
from typer.testing import CliRunner

import cli.results
from cli.main import app
from store.analysis_queries import wait_applied
from store.ilp_writer import WarehouseWriter, ilp_row
from store.schema import ALERTS, AQI_HOURLY, EXCEEDANCE_EPISODES, HOURLY_MEANS
from tests.helpers import sql, unique_station

H = 3_600_000_000_000


@pytest.fixture
def computed(warehouse):
    """A station with 40 hours of two parameters' means, their AQI, two episodes and an alert."""
    sid = unique_station("RES")
    writer = WarehouseWriter(warehouse.ilp_conf)
    first = (time.time_ns() // H - 40) * H
    now = time.time_ns()
    means = [
        ilp_row(HOURLY_MEANS, first + k * H, station=sid, device="d1", parameter=p, unit="ug/m3",
                mean=10.0 + k + (0.5 if p == "PM10" else 0.25), n_valid=50 - k % 20, n_expected=60,
                coverage=(50 - k % 20) / 60, valid=(50 - k % 20) >= 45, worst_flag=1, rule="r", computed_at=now)
        for k in range(40) for p in ("PM10", "PM2,5")
    ]  # fmt: skip
    aqi = [
        ilp_row(AQI_HOURLY, first + k * H, station=sid, aqi=None if k < 2 else 40 + k, category="good",
                colour="#00e400", dominant="PM2,5", sub_indices="{}", missing="{}", reason="", computed_at=now)
        for k in range(40)
    ]  # fmt: skip
    episodes = [
        ilp_row(EXCEEDANCE_EPISODES, first + k * H, station=sid, device="d1", parameter="PM10", limit_id="L",
                period="1h", limit_value=30.0, unit="ug/m3", state=state, periods=3, peak=44.5, last_mean=31.0,
                decided_at=now, version=1, closed_at=(first + (k + 3) * H) if state == "closed" else None)
        for k, state in ((5, "closed"), (30, "open"))
    ]  # fmt: skip
    alert = ilp_row(ALERTS, now, alert_id=f"a-{sid}", station=sid, kind="open", audience="regulator",
                    payload='{"x": 1}', webhook_state="delivered", webhook_attempts=1, mqtt_state="none",
                    mqtt_attempts=0)  # fmt: skip
    for table, rows in ((HOURLY_MEANS, means), (AQI_HOURLY, aqi), (EXCEEDANCE_EPISODES, episodes), (ALERTS, [alert])):
        writer.write_rows(table, rows)
    wait_applied(warehouse.pg_conninfo, [HOURLY_MEANS.name, AQI_HOURLY.name, EXCEEDANCE_EPISODES.name, ALERTS.name])
    return sid, f"{warehouse.host}:{warehouse.pg_port}"


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_averages_in_every_format_equal_sql_across_pages(computed, warehouse, monkeypatch):
    sid, pg = computed
    monkeypatch.setattr(cli.results, "PAGE", 7)  # 80 rows: 12 pages, the last one short
    expected = sql(
        warehouse.pg_conninfo,
        "SELECT ts::long, parameter, mean, valid FROM hourly_means WHERE station = %s ORDER BY ts, device, parameter",
        (sid,),
    )
    assert len(expected) == 80
    code, out, _ = run("averages", "--station", sid, "--from", "3d", "--format", "json", "--questdb-pg", pg)
    assert code == 0, out
    rows = [json.loads(line) for line in out.splitlines()]
    got = [
        (int(datetime.fromisoformat(r["ts_utc"]).timestamp()) * 1_000_000_000, r["parameter"], r["mean"], r["valid"])
        for r in rows
    ]
    assert got == expected
    first = rows[0]
    assert datetime.fromisoformat(first["ts_local"]) == datetime.fromisoformat(first["ts_utc"])
    assert first["ts_local"].endswith("+07:00") and first["ts_utc"].endswith("+00:00")
    assert {"n_expected", "coverage", "n_calibrating", "computed_at_local"} <= set(first)

    code, out, _ = run("averages", "--station", sid, "--from", "3d", "--parameter", "PM2,5", "--format", "csv",
                       "--questdb-pg", pg)  # fmt: skip
    assert code == 0
    table = list(csv.DictReader(io.StringIO(out)))
    assert [float(r["mean"]) for r in table] == [m for _, p, m, _ in expected if p == "PM2,5"]

    code, out, err = run("averages", "--station", sid, "--from", "3d", "--questdb-pg", pg)
    assert code == 0 and "80 rows" in err
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["ts_local", "parameter", "mean"] and len(lines) == 81


def test_aqi_exceedances_and_alerts_equal_sql(computed, warehouse):
    sid, pg = computed
    code, out, _ = run("aqi", "--station", sid, "--from", "3d", "--format", "json", "--questdb-pg", pg)
    assert code == 0
    got = [json.loads(line)["aqi"] for line in out.splitlines()]
    assert got == [r[0] for r in sql(warehouse.pg_conninfo, "SELECT aqi FROM aqi_hourly WHERE station = %s "
                                     "ORDER BY ts", (sid,))]  # fmt: skip
    assert got[:2] == [None, None] and got[2] == 42

    code, out, _ = run("exceedances", "--station", sid, "--format", "json", "--questdb-pg", pg)
    assert code == 0
    episodes = [json.loads(line) for line in out.splitlines()]
    assert [(e["state"], e["peak"]) for e in episodes] == [("closed", 44.5), ("open", 44.5)]
    assert episodes[0]["closed_at_utc"] and episodes[1]["closed_at_utc"] == ""
    code, out, _ = run("exceedances", "--station", sid, "--state", "open", "--format", "json", "--questdb-pg", pg)
    assert [json.loads(line)["state"] for line in out.splitlines()] == ["open"]

    code, out, _ = run("alerts", "--station", sid, "--format", "json", "--questdb-pg", pg)
    assert code == 0
    (alert,) = [json.loads(line) for line in out.splitlines()]
    assert alert["alert_id"] == f"a-{sid}" and alert["webhook_state"] == "delivered"
    assert datetime.fromisoformat(alert["ts_utc"]).tzinfo == UTC


def test_bad_options_are_one_line_and_exit_2(computed):
    sid, pg = computed
    code, _, err = run("averages", "--station", sid, "--period", "weekly", "--questdb-pg", pg)
    assert code == 2 and "--period must be one of hourly, 8h, daily" in err
    code, _, err = run("aqi", "--station", sid, "--format", "xml", "--questdb-pg", pg)
    assert code == 2 and "--format must be one of table, json, csv" in err
    code, _, err = run("aqi", "--station", sid, "--from", "yesterday", "--questdb-pg", pg)
    assert code == 2 and "neither an ISO 8601 time" in err
    code, _, err = run("aqi", "--station", sid, "--from", "1d", "--to", "2d", "--questdb-pg", pg)
    assert code == 2 and "must be before" in err
    code, _, err = run("alerts", "--questdb-pg", "127.0.0.1:1")
    assert code == 2 and "not reachable" in err and "Traceback" not in err
