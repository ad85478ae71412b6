"""station_profiles: shipped files load; bad files give FILE:LINE: path: message (fix: ...)."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from station_profiles.loader import (
    PROFILES_DIR,
    STATIONS_DIR,
    ConfigError,
    list_profiles,
    load_profile,
    load_station,
)
from station_profiles.profile_model import AnalyzerProfile, SemanticErrors

REPO = Path(__file__).resolve().parents[1]
SAMPLE_STATIONS = [REPO / "edge_agent" / "sources" / "modbus_tcp" / "sample.yaml"]


# --------------------------------------------------------------------------- #
# Shipped files
# --------------------------------------------------------------------------- #


def test_every_shipped_profile_loads() -> None:
    names = list_profiles()
    assert {"demo-ambient-air", "demo-wastewater", "demo-stack-cems"} <= set(names)
    for name in names:
        p = load_profile(name)
        assert p.profile == name
        assert p.values
        for v in p.values:
            assert v.wire_address >= 0
            assert v.range is None or v.range[0] < v.range[1]


@pytest.mark.parametrize("path", sorted(STATIONS_DIR.glob("*.yaml")) + SAMPLE_STATIONS, ids=lambda p: p.name)
def test_every_shipped_station_file_loads(path: Path) -> None:
    station = load_station(path)
    for d in station.devices:
        assert station.profile_for(d.id).profile == d.profile


def test_demo_stations() -> None:
    expected = {
        "demo_air_01.yaml": ("DEMO_AIR_01", "aqms1", 15020, "demo-ambient-air", ["PM2,5", "PM10", "SO2", "NO2", "CO", "O3"]),
        "demo_ww_01.yaml": ("DEMO_WW_01", "wq1", 15021, "demo-wastewater", ["pH", "COD", "TSS", "NH4", "Temp", "Flow"]),
        "demo_stack_01.yaml": ("DEMO_STACK_01", "cems1", 15022, "demo-stack-cems", ["PM", "SO2", "NOx", "CO", "O2", "Temp", "Flow"]),
    }
    for fname, (sid, dev, port, profile, params) in expected.items():
        st = load_station(STATIONS_DIR / fname)
        assert st.id == sid
        (d,) = st.devices
        assert (d.id, d.port, d.profile, d.transport, d.host) == (dev, port, profile, "modbus_tcp", "127.0.0.1")
        p = st.profile_for(dev)
        assert p.parameters == params
        assert all(v.type == "float32" and v.signal is not None for v in p.values)
    stack = load_profile("demo-stack-cems")
    assert {v.word_order for v in stack.values} == {"ABCD", "CDAB"}
    assert load_profile("demo-ambient-air").status is not None
    assert load_profile("demo-wastewater").value("pH").unit == "-"


def test_with_port_overrides_keeps_profiles() -> None:
    st = load_station(STATIONS_DIR / "demo_air_01.yaml")
    moved = st.with_port_overrides({"aqms1": 40123})
    assert moved.device("aqms1").port == 40123
    assert st.device("aqms1").port == 15020  # the original is untouched
    assert moved.profile_for("aqms1") is st.profile_for("aqms1")
    assert moved.profile_for("aqms1").values[1].wire_address == 2
    with pytest.raises(KeyError):
        st.with_port_overrides({"nope": 1})


# --------------------------------------------------------------------------- #
# Address conversion
# --------------------------------------------------------------------------- #


def _profile(address_base: object, *values: tuple[str, object], status: dict | None = None) -> AnalyzerProfile:
    data = {
        "profile": "t",
        "manufacturer": "m",
        "model": "m",
        "source": "test",
        "address_base": address_base,
        "values": [{"parameter": f"P{i}", "table": t, "address": a, "type": "bool" if t in ("coil", "discrete_input") else "uint16", "unit": "-"} for i, (t, a) in enumerate(values)],
    }
    if status:
        data["status"] = status
    return AnalyzerProfile.model_validate(data)


@pytest.mark.parametrize(
    ("base", "table", "address", "wire"),
    [
        (0, "holding_register", 0, 0),
        (0, "input_register", 65535, 65535),
        (1, "holding_register", 1, 0),
        (1, "input_register", 65536, 65535),
        ("4xxxx", "holding_register", 40001, 0),
        ("4xxxx", "holding_register", 49999, 9998),
        ("4xxxx", "input_register", 30001, 0),
        ("4xxxx", "input_register", 30101, 100),
        ("4xxxx", "discrete_input", 10001, 0),
        ("4xxxx", "coil", 1, 0),
        ("4xxxx", "coil", "00017", 16),
        ("4xxxx", "holding_register", 400001, 0),
        ("4xxxx", "holding_register", 465536, 65535),
        ("4xxxx", "input_register", "300010", 9),
        ("4xxxx", "coil", "010001", 10000),
    ],
)
def test_address_conversion(base: object, table: str, address: object, wire: int) -> None:
    assert _profile(base, (table, address)).values[0].wire_address == wire


@pytest.mark.parametrize(
    ("base", "table", "address", "needle"),
    [
        ("4xxxx", "holding_register", 30001, "address 30001 is an input_register number (3xxxx) but table is holding_register"),
        ("4xxxx", "input_register", 40001, "is a holding_register number (4xxxx) but table is input_register"),
        ("4xxxx", "coil", 10001, "is a discrete_input number (1xxxx) but table is coil"),
        ("4xxxx", "holding_register", 40000, "outside 40001..49999"),
        ("4xxxx", "holding_register", 20001, "not a valid Modicon reference (prefix 2)"),
        (1, "holding_register", 0, "outside 1..65536"),
        (0, "holding_register", 65536, "outside 0..65535"),
    ],
)
def test_bad_addresses(base: object, table: str, address: object, needle: str) -> None:
    with pytest.raises(SemanticErrors) as exc:
        _profile(base, (table, address))
    assert needle in str(exc.value)
    assert "fix:" in str(exc.value)


def test_status_address_is_converted_and_checked_for_overlap() -> None:
    p = _profile("4xxxx", ("input_register", 30001), status={"table": "input_register", "address": 30101, "codes": {0: ["00", ""]}})
    assert p.status is not None and p.status.wire_address == 100
    with pytest.raises(SemanticErrors, match=r"values\[0\] \(P0\) at input_register 0 overlaps status"):
        _profile("4xxxx", ("input_register", 30001), status={"table": "input_register", "address": 30001, "codes": {0: ["00", ""]}})


# --------------------------------------------------------------------------- #
# Bad files: FILE:LINE, the path, and a fix
# --------------------------------------------------------------------------- #

GOOD_PROFILE = """\
profile: {name}
manufacturer: test
model: test analyzer
source: test
address_base: 0
values:
  - parameter: "PM2,5"
    table: input_register
    address: 0
    type: float32
    word_order: ABCD
    unit: ug/m3
    range: [0, 1000]
  - parameter: PM10
    table: input_register
    address: 2
    type: float32
    unit: ug/m3
"""

GOOD_STATION = """\
station: {{id: T_01, name: "t", kind: ambient_air}}
poll_interval_s: 2.0
devices:
  - id: a1
    profile: {profile}
    transport: modbus_tcp
    host: 127.0.0.1
    port: 15020
    unit_id: 1
"""


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def _profile_error(tmp_path: Path, text: str, name: str = "p") -> ConfigError:
    path = _write(tmp_path / "profiles" / f"{name}.yaml", text)
    with pytest.raises(ConfigError) as exc:
        load_profile(path)
    return exc.value


def _station_error(tmp_path: Path, text: str, profile_text: str | None = None) -> ConfigError:
    _write(tmp_path / "profiles" / "p.yaml", profile_text or GOOD_PROFILE.format(name="p"))
    path = _write(tmp_path / "stations" / "s.yaml", text)
    with pytest.raises(ConfigError) as exc:
        load_station(path, tmp_path / "profiles")
    return exc.value


def _assert_issue(err: ConfigError, file_suffix: str, line: int, path: str, *needles: str) -> None:
    for issue in err.issues:
        if issue.file.endswith(file_suffix) and issue.line == line and issue.path == path:
            text = str(issue)
            assert re.match(rf"^.*{re.escape(file_suffix)}:{line}: {re.escape(path)}: .+ \(fix: .+\)$", text), text
            for n in needles:
                assert n in text, text
            return
    raise AssertionError(f"no issue at {file_suffix}:{line} {path}; got:\n{err}")


def test_good_test_files_load(tmp_path: Path) -> None:
    _write(tmp_path / "profiles" / "p.yaml", GOOD_PROFILE.format(name="p"))
    path = _write(tmp_path / "stations" / "s.yaml", GOOD_STATION.format(profile="p"))
    st = load_station(path, tmp_path / "profiles")
    assert st.profile_for("a1").parameters == ["PM2,5", "PM10"]


def test_word_order_typo(tmp_path: Path) -> None:
    err = _profile_error(tmp_path, GOOD_PROFILE.format(name="p").replace("word_order: ABCD", "word_order: ABDC"))
    _assert_issue(err, "profiles/p.yaml", 11, "values[0].word_order", "'ABDC' is not one of ABCD, CDAB, BADC, DCBA", "use one of ABCD, CDAB, BADC, DCBA")


def test_unknown_key_suggests_the_right_one(tmp_path: Path) -> None:
    err = _profile_error(tmp_path, GOOD_PROFILE.format(name="p").replace("word_order: ABCD", "wordorder: ABCD"))
    _assert_issue(err, "profiles/p.yaml", 11, "values[0].wordorder", "unknown key 'wordorder'", "did you mean 'word_order'?")


def test_missing_key(tmp_path: Path) -> None:
    err = _profile_error(tmp_path, GOOD_PROFILE.format(name="p").replace("    unit: ug/m3\n    range", "    range"))
    _assert_issue(err, "profiles/p.yaml", 7, "values[0].unit", "required key 'unit' is missing", "add `unit: ...`")


def test_profile_name_must_match_file_stem(tmp_path: Path) -> None:
    err = _profile_error(tmp_path, GOOD_PROFILE.format(name="other"), name="p")
    _assert_issue(err, "profiles/p.yaml", 1, "profile", "does not match the file name 'p.yaml'")


def test_duplicate_parameter(tmp_path: Path) -> None:
    err = _profile_error(tmp_path, GOOD_PROFILE.format(name="p").replace("parameter: PM10", 'parameter: "PM2,5"'))
    _assert_issue(err, "profiles/p.yaml", 14, "values[1].parameter", "'PM2,5' is already defined by values[0]")


def test_overlapping_addresses(tmp_path: Path) -> None:
    err = _profile_error(tmp_path, GOOD_PROFILE.format(name="p").replace("address: 2", "address: 1"))
    _assert_issue(err, "profiles/p.yaml", 16, "values[1].address", "overlaps values[0] (PM2,5) (registers 0..1)", "leaves 2 as the next free address")


def test_range_low_must_be_below_high(tmp_path: Path) -> None:
    err = _profile_error(tmp_path, GOOD_PROFILE.format(name="p").replace("range: [0, 1000]", "range: [1000, 0]"))
    _assert_issue(err, "profiles/p.yaml", 13, "values[0].range", "must have low < high", "range: [0.0, 1000.0]")


def test_modicon_prefix_must_match_table(tmp_path: Path) -> None:
    text = GOOD_PROFILE.format(name="p").replace("address_base: 0", 'address_base: "4xxxx"').replace("address: 0", "address: 40001").replace("address: 2", "address: 30003")
    err = _profile_error(tmp_path, text)
    _assert_issue(err, "profiles/p.yaml", 9, "values[0].address", "40001 is a holding_register number (4xxxx) but table is input_register", "use 3xxxx numbers")


def test_unquoted_no_is_explained(tmp_path: Path) -> None:
    err = _profile_error(tmp_path, GOOD_PROFILE.format(name="p").replace("parameter: PM10", "parameter: NO"))
    _assert_issue(err, "profiles/p.yaml", 14, "values[1].parameter", "as the boolean False", 'quotes, e.g. parameter: "NO"')


def test_bare_dash_unit_is_explained(tmp_path: Path) -> None:
    err = _profile_error(tmp_path, GOOD_PROFILE.format(name="p").replace("    unit: ug/m3\n    range", "    unit: -\n    range"))
    (issue,) = err.issues
    assert issue.line == 12 and "not valid YAML" in issue.message and 'unit: "-"' in issue.fix


def test_yaml_syntax_error_has_a_line(tmp_path: Path) -> None:
    err = _profile_error(tmp_path, GOOD_PROFILE.format(name="p").replace("    type: float32\n    word_order", "    type: [float32\n    word_order"))
    (issue,) = err.issues
    assert issue.line > 0 and "not valid YAML" in str(issue) and "(fix:" in str(issue)


def test_duplicate_yaml_key(tmp_path: Path) -> None:
    err = _station_error(tmp_path, GOOD_STATION.format(profile="p") + "    port: 15021\n")
    _assert_issue(err, "stations/s.yaml", 10, "devices[0]", "duplicate key 'port'")


def test_bad_port_and_unknown_transport(tmp_path: Path) -> None:
    text = GOOD_STATION.format(profile="p").replace("port: 15020", "port: 70000") + "  - id: a2\n    profile: p\n    transport: modbus_rtu\n    host: x\n"
    err = _station_error(tmp_path, text)
    _assert_issue(err, "stations/s.yaml", 8, "devices[0].port", "70000", "less than or equal to 65535")
    _assert_issue(err, "stations/s.yaml", 12, "devices[1].transport", "transport 'modbus_rtu' is not supported", "modbus_tcp")


def test_missing_transport(tmp_path: Path) -> None:
    err = _station_error(tmp_path, GOOD_STATION.format(profile="p").replace("    transport: modbus_tcp\n", ""))
    _assert_issue(err, "stations/s.yaml", 4, "devices[0]", "'transport' is missing", "transport: modbus_tcp")


def test_duplicate_device_ids(tmp_path: Path) -> None:
    text = GOOD_STATION.format(profile="p") + "  - id: a1\n    profile: p\n    transport: modbus_tcp\n    host: 127.0.0.1\n    port: 15021\n"
    err = _station_error(tmp_path, text)
    _assert_issue(err, "stations/s.yaml", 10, "devices[1].id", "'a1' is already used by devices[0]")


def test_unknown_profile_suggests_a_name(tmp_path: Path) -> None:
    err = _station_error(tmp_path, GOOD_STATION.format(profile="q"))
    _assert_issue(err, "stations/s.yaml", 5, "devices[0].profile", "no analyzer profile 'q'", "available: p")


def test_errors_in_a_used_profile_point_at_the_profile(tmp_path: Path) -> None:
    bad = GOOD_PROFILE.format(name="p").replace("type: float32\n    word_order", "type: float33\n    word_order")
    err = _station_error(tmp_path, GOOD_STATION.format(profile="p"), profile_text=bad)
    _assert_issue(err, "profiles/p.yaml", 10, "values[0].type", "'float33' is not one of", "did you mean float32?")


def test_several_problems_are_reported_together(tmp_path: Path) -> None:
    text = GOOD_PROFILE.format(name="p").replace("word_order: ABCD", "word_order: ABDC").replace("table: input_register\n    address: 2", "table: input_registers\n    address: 2")
    err = _profile_error(tmp_path, text)
    assert len(err.issues) == 2
    assert [i.line for i in err.issues] == [11, 15]


def test_default_directories_exist() -> None:
    assert PROFILES_DIR.is_dir() and STATIONS_DIR.is_dir()
