"""`quantrac tt10 check`, run as the real command a clerk or technician types."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.broker_bridge.tt10.tt10_fixtures.make_fixtures import HERE, NAME

QUANTRAC = Path(sys.executable).parent / "quantrac"


def run(*args: str | Path) -> subprocess.CompletedProcess:
    if not QUANTRAC.exists():
        pytest.fail(f"{QUANTRAC} is missing: run scripts/bootstrap.sh (it installs the quantrac command into .venv)")
    return subprocess.run([str(QUANTRAC), "tt10", "check", *map(str, args)], capture_output=True, text=True, timeout=60)


def fixture(variation: str) -> Path:
    (path,) = (HERE / variation).glob("*.txt")
    return path


def test_clean_file_exits_0_and_shows_vietnam_and_utc_times():
    done = run(fixture("canonical"))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "station HN_BKHN_KHIKXQ (tỉnh HN, cơ sở BKHN, trạm KHIKXQ)" in out
    # the CLI's exact output line, kept whole so that it reads as the user sees it
    assert (
        "line 1  read     PM2,5 = 23.4 ug/m3 | 25/03/2026 00:05:00 giờ VN = 2026-03-24 17:05:00 UTC | 00 Đang đo (measuring)"  # noqa: E501
        in out
    )
    assert "line 4  read     CO = no value (missing) mg/m3" in out and "02 Báo lỗi thiết bị (device error)" in out
    assert "RESULT: 4 readings read, 0 lines refused; file complete" in out


def test_refused_lines_exit_1_with_raw_text_and_reason():
    done = run(fixture("status_03"), fixture("canonical"))
    assert done.returncode == 1
    out = done.stdout
    assert 'line 1  REFUSED  "PM2,5\\t23.4\\tug/m3\\t20260325000500\\t03"' in out
    assert "why: status '03' is not a TT10 status code" in out
    assert "RESULT: 1 reading read, 2 lines refused; file complete" in out
    assert out.count("== ") == 2  # both files reported


def test_truncated_file_said_cut_off_and_incomplete():
    done = run(fixture("truncated_last_line"))
    assert done.returncode == 1
    assert 'line 3  CUT OFF  "NO2\\t18"' in done.stdout
    assert "file INCOMPLETE (hold it until it is sent again): line 3 is cut off" in done.stdout


def test_json_one_object_per_line():
    done = run("--json", fixture("empty_value_00"), fixture("name_time_mismatch"))
    assert done.returncode == 1
    objects = [json.loads(line) for line in done.stdout.splitlines()]
    readings = [o for o in objects if o["kind"] == "reading"]
    assert readings[0] == {
        "kind": "reading",
        "file": str(fixture("empty_value_00")),
        "line": 2,
        "station": "HN_BKHN_KHIKXQ",
        "parameter": "NO2",
        "value": 18.2,
        "unit": "ug/m3",
        "status": "00",
        "ts": "2026-03-24T17:05:00Z",
        "local_time": "2026-03-25T00:05:00+07:00",
        "sent_as": "NO2",
        "notes": [],
    }
    (refused,) = [o for o in objects if o["kind"] == "refused"]
    assert (
        refused["line"] == 1
        and refused["raw"] == "SO2\t\tug/m3\t20260325000500\t00"
        and "status is 00" in refused["reason"]
    )
    mismatch = [o for o in objects if o["kind"] == "finding" and o["code"] == "name_time_mismatch"]
    assert len(mismatch) == 1 and mismatch[0]["file"] == str(fixture("name_time_mismatch"))
    files = {o["file"]: o for o in objects if o["kind"] == "file"}
    assert files[str(fixture("empty_value_00"))]["refused"] == 1 and files[str(fixture("empty_value_00"))]["complete"]
    assert (
        files[str(fixture("name_time_mismatch"))]["complete"] is False
        and files[str(fixture("name_time_mismatch"))]["clean"]
    )


def test_missing_value_is_json_null():
    done = run("--json", fixture("missing_value_02"))
    assert done.returncode == 0
    values = [json.loads(line)["value"] for line in done.stdout.splitlines() if '"kind": "reading"' in line]
    assert values == [None, None]


def test_map_file(tmp_path):
    mapping = tmp_path / "map.yaml"
    mapping.write_text("PM25: 'PM2,5'\n'Vinyl chloride': Vinyl_chloride\n", encoding="utf-8")
    done = run("--json", "--map", mapping, fixture("unlisted_parameters"))
    assert done.returncode == 0, done.stdout
    params = [
        (o["sent_as"], o["parameter"]) for o in map(json.loads, done.stdout.splitlines()) if o["kind"] == "reading"
    ]
    assert params == [
        ("Nhiệtđộ", "Nhiệtđộ"),
        ("PM25", "PM2,5"),
        ("m,p-Xylene", "m,p-Xylene"),
        ("Vinyl chloride", "Vinyl_chloride"),
    ]
    assert (
        run("--json", fixture("unlisted_parameters")).returncode == 1
    )  # without the mapping the spaced name is refused


def test_bad_map_file_fails_with_file_and_line(tmp_path):
    mapping = tmp_path / "map.yaml"
    mapping.write_text("PM25: 'PM2,5'\nFlowin: Flow in\n", encoding="utf-8")
    done = run("--map", mapping, fixture("canonical"))
    assert done.returncode == 2 and f"{mapping}, line 2: 'Flowin' maps to 'Flow in'" in done.stderr


def test_unreadable_and_badly_named_files(tmp_path):
    bad_name = tmp_path / "readings.txt"
    bad_name.write_bytes((HERE / "canonical" / NAME).read_bytes())
    done = run(tmp_path / "missing.txt", bad_name)
    assert done.returncode == 1
    assert "CANNOT READ: No such file or directory" in done.stdout
    assert "error: file name 'readings.txt' is not <Tinh>_<CoSo>_<Tram>_<yyyyMMddHHmmss>.txt" in done.stdout
