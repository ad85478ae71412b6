"""Station metadata in the registry: name, province code, facility, coordinates, logging intervals.
Bad values fail at load with FILE:LINE and a fix; `quantrac station add|set` edit them and round-trip."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from broker_bridge.keys import public_key_b64, write_new_key
from cli.main import app
from collector.registry import RegistryFileError, StationRegistry, parse_registry

GOOD = """stations:
  HN_AIR_001:
    name: "Trạm quan trắc Nguyễn Văn Cừ"
    province_code: HN
    province: province-HN
    facility: BKHN
    latitude: 21.0285
    longitude: 105.8542
    parameters:
      PM10: {{interval_s: 60}}
      "PM2,5": {{interval_s: 300}}
    keys:
    - public_key: {key}
"""


@pytest.fixture
def key_b64(tmp_path: Path) -> str:
    return public_key_b64(write_new_key(tmp_path / "a.key").public_key)


def load_error(tmp_path: Path, text: str) -> str:
    path = tmp_path / "registry.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(RegistryFileError) as caught:
        StationRegistry(path)
    return str(caught.value)


def test_the_metadata_loads_and_the_province_code_is_not_the_relay_user(key_b64: str) -> None:
    entry = parse_registry(GOOD.format(key=key_b64), "registry.yaml")["HN_AIR_001"]
    assert entry.name == "Trạm quan trắc Nguyễn Văn Cừ"
    assert (entry.province_code, entry.province, entry.facility) == ("HN", "province-HN", "BKHN")
    assert (entry.latitude, entry.longitude) == (21.0285, 105.8542)
    assert dict(entry.intervals) == {"PM10": 60.0, "PM2,5": 300.0}
    bare = parse_registry(f"stations:\n  S1:\n    keys:\n    - public_key: {key_b64}\n", "r.yaml")["S1"]
    assert (bare.name, bare.province_code, bare.latitude, dict(bare.intervals)) == (None, None, None, {})


@pytest.mark.parametrize(
    ("old", "new", "line", "expected"),
    [
        # swapped axes: the fix gives both values in their places
        ("latitude: 21.0285\n    longitude: 105.8542", "latitude: 105.8542\n    longitude: 21.0285", 7,
         "latitude 105.8542 is not in -90..90 (fix: latitude and longitude are swapped: write latitude: 21.0285"),
        ("latitude: 21.0285", "latitude: -21.0285", 7, "is not in Vietnam"),
        ("latitude: 21.0285", "latitude: -21.0285", 7, "north and east: write latitude: 21.0285, longitude: 105.8542"),
        ("longitude: 105.8542", "longitude: 1058542", 8, "fix: write decimal degrees with the decimal point"),
        ("latitude: 21.0285", "latitude: 48.85", 7, "(48.85, 105.8542) is not in Vietnam"),
        ("latitude: 21.0285", "latitude: \"21°01'42\\\"N\"", 7, "degrees, minutes and seconds"),
        ("    latitude: 21.0285\n", "", 2, "latitude is missing (fix: give both latitude and longitude, or neither)"),
        ("province_code: HN", "province_code: province-HN", 4, "the broker user of a province relay goes in province:"),
        ("province_code: HN", "province_code: hn", 4, "fix: write it in capitals: province_code: HN"),
        ('"PM2,5": {interval_s: 300}', "PM2.5: {interval_s: 300}", 11, "unknown parameter 'PM2.5' (fix: write 'PM2,5'"),
        ("PM10: {interval_s: 60}", "PM10: {interval_s: 0}", 10, "interval_s: 0: input should be greater than 0"),
        ("PM10: {interval_s: 60}", "PM10: {every: 60}", 10, "unknown key 'every'"),
        ('name: "Trạm quan trắc Nguyễn Văn Cừ"', 'name: "  "', 3, "the text is empty"),
        ("facility: BKHN", "facility: 12", 6, "expected text, got 12"),
    ],
)  # fmt: skip
def test_a_bad_metadata_value_names_its_line_and_the_fix(
    tmp_path: Path, key_b64: str, old: str, new: str, line: int, expected: str
) -> None:
    text = GOOD.format(key=key_b64)
    assert old in text
    error = load_error(tmp_path, text.replace(old, new))
    assert f"registry.yaml:{line}:" in error and expected in error, error


def run(*args: str):
    result = CliRunner().invoke(app, ["station", *args])
    return result


def test_station_add_and_set_edit_the_metadata_and_round_trip(tmp_path: Path) -> None:
    reg = tmp_path / "registry.yaml"
    write_new_key(tmp_path / "s1.key")
    added = run(
        "add", "S1", str(tmp_path / "s1.pub"), "--registry", str(reg), "--kind", "ambient_air",
        "--name", "Trạm Hoàn Kiếm", "--province-code", "HN", "--lat", "21.03", "--lon", "105.85",
        "--interval", "PM10=60",
    )  # fmt: skip
    assert added.exit_code == 0, added.output
    entry = StationRegistry(reg).get("S1")
    assert (entry.kind, entry.name, entry.province_code, entry.latitude, entry.longitude) == (
        "ambient_air", "Trạm Hoàn Kiếm", "HN", 21.03, 105.85,
    )  # fmt: skip
    assert dict(entry.intervals) == {"PM10": 60.0}
    assert "Trạm Hoàn Kiếm" in reg.read_text(encoding="utf-8")  # readable, not \u escapes

    changed = run(
        "set", "S1", "--registry", str(reg), "--name", "Trạm Hàng Đậu", "--facility", "Nhà máy Nước",
        "--lat", "21.0422", "--lon", "105.8468", "--interval", "PM2,5=300", "--interval", "PM10=none",
    )  # fmt: skip
    assert changed.exit_code == 0, changed.output
    entry = StationRegistry(reg).get("S1")
    assert (entry.name, entry.facility, entry.province_code) == ("Trạm Hàng Đậu", "Nhà máy Nước", "HN")
    assert (entry.latitude, entry.longitude, dict(entry.intervals)) == (21.0422, 105.8468, {"PM2,5": 300.0})
    listed = run("list", "--registry", str(reg))
    assert "\tHN\tTrạm Hàng Đậu" in listed.output, listed.output

    cleared = run("set", "S1", "--registry", str(reg), "--clear", "coordinates", "--clear", "province-code")
    assert cleared.exit_code == 0, cleared.output
    entry = StationRegistry(reg).get("S1")
    assert (entry.latitude, entry.longitude, entry.province_code, entry.name) == (None, None, None, "Trạm Hàng Đậu")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--lat", "105.85", "--lon", "21.03"], "latitude and longitude are swapped"),
        (["--lat", "-21.03", "--lon", "105.85"], "Vietnam is north and east"),
        (["--lat", "21.03"], "longitude is missing"),
        (["--interval", "PM2.5=60"], "unknown parameter 'PM2.5' (fix: write 'PM2,5'"),
        (["--interval", "PM10=often"], "'often' is not a number of seconds"),
        (["--province-code", "province-HN"], "goes in province:"),
        (["--kind", "river"], "not a station kind"),
        (["--clear", "keys"], "cannot clear keys"),
    ],
)
def test_a_refused_edit_says_why_and_leaves_the_file_as_it_was(tmp_path: Path, args: list[str], expected: str) -> None:
    reg = tmp_path / "registry.yaml"
    write_new_key(tmp_path / "s1.key")
    assert run("add", "S1", str(tmp_path / "s1.pub"), "--registry", str(reg), "--name", "Trạm 1").exit_code == 0
    before = reg.read_bytes()
    refused = run("set", "S1", "--registry", str(reg), *args)
    assert refused.exit_code == 2 and expected in refused.output, refused.output
    assert reg.read_bytes() == before
    unknown = run("set", "S9", "--registry", str(reg), "--name", "x")
    assert unknown.exit_code == 2 and "S9 is not registered" in unknown.output
