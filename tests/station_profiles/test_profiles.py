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

REPO = Path(__file__).resolve().parents[2]
SAMPLE_STATIONS = [
    REPO / "edge_agent" / "sources" / t / "sample.yaml" for t in ("modbus_tcp", "modbus_rtu", "serial_ascii")
]


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
            assert p.protocol == "serial_ascii" or v.wire_address >= 0  # ASCII values name a field, not an address
            assert v.range is None or v.range[0] < v.range[1]


@pytest.mark.parametrize("path", sorted(STATIONS_DIR.glob("*.yaml")) + SAMPLE_STATIONS, ids=lambda p: p.name)
def test_every_shipped_station_file_loads(path: Path) -> None:
    station = load_station(path)
    for d in station.devices:
        assert station.profile_for(d.id).profile == d.profile


def test_demo_stations() -> None:
    expected = {
        "demo_air_01.yaml": (
            "DEMO_AIR_01",
            "aqms1",
            15020,
            "demo-ambient-air",
            ["PM2,5", "PM10", "SO2", "NO2", "CO", "O3"],
        ),
        "demo_ww_01.yaml": ("DEMO_WW_01", "wq1", 15021, "demo-wastewater", ["pH", "COD", "TSS", "NH4", "Temp", "Flow"]),
        "demo_stack_01.yaml": (
            "DEMO_STACK_01",
            "cems1",
            15022,
            "demo-stack-cems",
            ["PM", "SO2", "NOx", "CO", "O2", "Temp", "Flow"],
        ),
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
        "values": [
            {
                "parameter": f"P{i}",
                "table": t,
                "address": a,
                "type": "bool" if t in ("coil", "discrete_input") else "uint16",
                "unit": "-",
            }
            for i, (t, a) in enumerate(values)
        ],
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
        (
            "4xxxx",
            "holding_register",
            30001,
            "address 30001 is an input_register number (3xxxx) but table is holding_register",
        ),
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
    p = _profile(
        "4xxxx",
        ("input_register", 30001),
        status={"table": "input_register", "address": 30101, "codes": {0: ["00", ""]}},
    )
    assert p.status is not None and p.status.wire_address == 100
    with pytest.raises(SemanticErrors, match=r"values\[0\] \(P0\) at input_register 0 overlaps status"):
        _profile(
            "4xxxx",
            ("input_register", 30001),
            status={"table": "input_register", "address": 30001, "codes": {0: ["00", ""]}},
        )


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
    _assert_issue(
        err,
        "profiles/p.yaml",
        11,
        "values[0].word_order",
        "'ABDC' is not one of ABCD, CDAB, BADC, DCBA",
        "use one of ABCD, CDAB, BADC, DCBA",
    )


def test_unknown_key_suggests_the_right_one(tmp_path: Path) -> None:
    err = _profile_error(tmp_path, GOOD_PROFILE.format(name="p").replace("word_order: ABCD", "wordorder: ABCD"))
    _assert_issue(
        err, "profiles/p.yaml", 11, "values[0].wordorder", "unknown key 'wordorder'", "did you mean 'word_order'?"
    )


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
    _assert_issue(
        err,
        "profiles/p.yaml",
        16,
        "values[1].address",
        "overlaps values[0] (PM2,5) (registers 0..1)",
        "leaves 2 as the next free address",
    )


def test_range_low_must_be_below_high(tmp_path: Path) -> None:
    err = _profile_error(tmp_path, GOOD_PROFILE.format(name="p").replace("range: [0, 1000]", "range: [1000, 0]"))
    _assert_issue(err, "profiles/p.yaml", 13, "values[0].range", "must have low < high", "range: [0.0, 1000.0]")


def test_modicon_prefix_must_match_table(tmp_path: Path) -> None:
    text = (
        GOOD_PROFILE.format(name="p")
        .replace("address_base: 0", 'address_base: "4xxxx"')
        .replace("address: 0", "address: 40001")
        .replace("address: 2", "address: 30003")
    )
    err = _profile_error(tmp_path, text)
    _assert_issue(
        err,
        "profiles/p.yaml",
        9,
        "values[0].address",
        "40001 is a holding_register number (4xxxx) but table is input_register",
        "use 3xxxx numbers",
    )


def test_unquoted_no_is_explained(tmp_path: Path) -> None:
    err = _profile_error(tmp_path, GOOD_PROFILE.format(name="p").replace("parameter: PM10", "parameter: NO"))
    _assert_issue(
        err, "profiles/p.yaml", 14, "values[1].parameter", "as the boolean False", 'quotes, e.g. parameter: "NO"'
    )


def test_bare_dash_unit_is_explained(tmp_path: Path) -> None:
    err = _profile_error(
        tmp_path, GOOD_PROFILE.format(name="p").replace("    unit: ug/m3\n    range", "    unit: -\n    range")
    )
    (issue,) = err.issues
    assert issue.line == 12 and "not valid YAML" in issue.message and 'unit: "-"' in issue.fix


def test_yaml_syntax_error_has_a_line(tmp_path: Path) -> None:
    err = _profile_error(
        tmp_path,
        GOOD_PROFILE.format(name="p").replace(
            "    type: float32\n    word_order", "    type: [float32\n    word_order"
        ),
    )
    (issue,) = err.issues
    assert issue.line > 0 and "not valid YAML" in str(issue) and "(fix:" in str(issue)


def test_duplicate_yaml_key(tmp_path: Path) -> None:
    err = _station_error(tmp_path, GOOD_STATION.format(profile="p") + "    port: 15021\n")
    _assert_issue(err, "stations/s.yaml", 10, "devices[0]", "duplicate key 'port'")


def test_bad_port_and_unknown_transport(tmp_path: Path) -> None:
    # (before issue 3 this used modbus_rtu, which is a transport now)
    text = (
        GOOD_STATION.format(profile="p").replace("port: 15020", "port: 70000")
        + "  - id: a2\n    profile: p\n    transport: modbus_rtv\n    host: x\n"
    )
    err = _station_error(tmp_path, text)
    _assert_issue(err, "stations/s.yaml", 8, "devices[0].port", "70000", "less than or equal to 65535")
    _assert_issue(
        err,
        "stations/s.yaml",
        12,
        "devices[1].transport",
        "transport 'modbus_rtv' is not supported",
        "did you mean modbus_rtu?",
        "modbus_tcp, modbus_rtu, serial_ascii",
    )


def test_missing_transport(tmp_path: Path) -> None:
    err = _station_error(tmp_path, GOOD_STATION.format(profile="p").replace("    transport: modbus_tcp\n", ""))
    _assert_issue(err, "stations/s.yaml", 4, "devices[0]", "'transport' is missing", "transport: modbus_tcp")


def test_duplicate_device_ids(tmp_path: Path) -> None:
    text = (
        GOOD_STATION.format(profile="p")
        + "  - id: a1\n    profile: p\n    transport: modbus_tcp\n    host: 127.0.0.1\n    port: 15021\n"
    )
    err = _station_error(tmp_path, text)
    _assert_issue(err, "stations/s.yaml", 10, "devices[1].id", "'a1' is already used by devices[0]")


def test_unknown_profile_suggests_a_name(tmp_path: Path) -> None:
    err = _station_error(tmp_path, GOOD_STATION.format(profile="q"))
    # the folders searched, then every name found there (the built-in ones too), never the station file itself
    _assert_issue(
        err, "stations/s.yaml", 5, "devices[0].profile", "no analyzer profile 'q' in ", "/stations, ", "/profiles, ",
        "station_profiles/profiles (fix: available: advantech-adam-4017p", ", p, sick-marsic300",
    )  # fmt: skip
    assert ", s, " not in str(err)


def test_errors_in_a_used_profile_point_at_the_profile(tmp_path: Path) -> None:
    bad = GOOD_PROFILE.format(name="p").replace("type: float32\n    word_order", "type: float33\n    word_order")
    err = _station_error(tmp_path, GOOD_STATION.format(profile="p"), profile_text=bad)
    _assert_issue(err, "profiles/p.yaml", 10, "values[0].type", "'float33' is not one of", "did you mean float32?")


def test_several_problems_are_reported_together(tmp_path: Path) -> None:
    text = (
        GOOD_PROFILE.format(name="p")
        .replace("word_order: ABCD", "word_order: ABDC")
        .replace("table: input_register\n    address: 2", "table: input_registers\n    address: 2")
    )
    err = _profile_error(tmp_path, text)
    assert len(err.issues) == 2
    assert [i.line for i in err.issues] == [11, 15]


def test_default_directories_exist() -> None:
    assert PROFILES_DIR.is_dir() and STATIONS_DIR.is_dir()


# --------------------------------------------------------------------------- #
# Issue 3: serial transports, status bits, 4-20 mA loops, serial ASCII profiles
# --------------------------------------------------------------------------- #

RTU_STATION = """\
station: {{id: F_01, kind: ambient_air}}
devices:
  - id: a1
    profile: {profile}
    transport: modbus_rtu
    port: /dev/serial/by-id/usb-FTDI_FT232R-if00-port0
    baud: 9600
    parity: E
    unit_id: 1
"""


def test_rtu_devices_on_one_port_must_agree_on_line_settings(tmp_path: Path) -> None:
    text = (
        RTU_STATION.format(profile="p")
        + "  - {id: a2, profile: p, transport: modbus_rtu, port: /dev/serial/by-id/usb-FTDI_FT232R-if00-port0,"
        " baud: 19200, parity: E, unit_id: 1}\n"
    )
    err = _station_error(tmp_path, text)
    _assert_issue(
        err,
        "stations/s.yaml",
        10,
        "devices[1].baud",
        "baud 19200 differs from devices[0] (a1) on the same port",
        "set baud: 9600",
    )
    _assert_issue(
        err,
        "stations/s.yaml",
        10,
        "devices[1].unit_id",
        "devices[0] already is unit 1 on /dev/serial/by-id/",
        "different unit ids",
    )


def test_a_serial_ascii_device_needs_its_own_port(tmp_path: Path) -> None:
    _write(
        tmp_path / "profiles" / "bam.yaml",
        (PROFILES_DIR / "metone-bam-1020.yaml").read_text().replace("profile: metone-bam-1020", "profile: bam"),
    )
    text = (
        RTU_STATION.format(profile="p")
        + "  - {id: b1, profile: bam, transport: serial_ascii, port: /dev/serial/by-id/usb-FTDI_FT232R-if00-port0,"
        " baud: 9600, parity: E}\n"
    )
    err = _station_error(tmp_path, text)
    _assert_issue(
        err,
        "stations/s.yaml",
        10,
        "devices[1].port",
        "already uses /dev/serial/by-id/usb-FTDI_FT232R-if00-port0",
        "needs a port of its own",
    )


def test_profile_protocol_must_fit_the_transport(tmp_path: Path) -> None:
    _write(
        tmp_path / "profiles" / "bam.yaml",
        (PROFILES_DIR / "metone-bam-1020.yaml").read_text().replace("profile: metone-bam-1020", "profile: bam"),
    )
    err = _station_error(tmp_path, RTU_STATION.format(profile="bam"))
    _assert_issue(
        err,
        "stations/s.yaml",
        4,
        "devices[0].profile",
        "profile 'bam' speaks serial_ascii but transport modbus_rtu needs a modbus profile",
        "transport: serial_ascii",
    )


@pytest.mark.parametrize(
    ("old", "new", "line", "path", "needle"),
    [
        (
            "port: /dev/serial/by-id/usb-FTDI_FT232R-if00-port0",
            "port: ttyUSB0",
            6,
            "devices[0].port",
            "is not a device path",
        ),
        ("parity: E", "parity: X", 8, "devices[0].parity", "'X' is not one of N, E, O"),
        ("unit_id: 1", "unit_id: 0", 9, "devices[0].unit_id", "greater than or equal to 1"),
        ("    baud: 9600\n", "", 3, "devices[0].baud", "required key 'baud' is missing"),
    ],
)
def test_rtu_device_fields(tmp_path: Path, old: str, new: str, line: int, path: str, needle: str) -> None:
    err = _station_error(tmp_path, RTU_STATION.format(profile="p").replace(old, new))
    _assert_issue(err, "stations/s.yaml", line, path, needle)


def test_clock_sntp_needs_a_server(tmp_path: Path) -> None:
    err = _station_error(tmp_path, RTU_STATION.format(profile="p") + "clock: {source: sntp, max_offset_s: 2}\n")
    _assert_issue(err, "stations/s.yaml", 10, "clock.server", "needs a server", "server: pool.ntp.org")
    st = load_station(
        _write(
            tmp_path / "stations" / "ok.yaml", RTU_STATION.format(profile="p") + "clock: {server: 127.0.0.1:12300}\n"
        ),
        tmp_path / "profiles",
    )
    assert st.clock is not None and st.clock.max_offset_s == 2.0
    with pytest.raises(ValueError, match="port overrides move TCP devices only"):
        st.with_port_overrides({"a1": 1502})


STATUS_BITS_PROFILE = (
    GOOD_PROFILE.format(name="p")
    + """\
status:
  bits:
    - {table: discrete_input, address: 16, status: "01", cause: zero calibration}
    - {table: holding_register, address: 20, bit: 3, status: "02", cause: lamp fault}
    - {table: holding_register, address: 20, bit: 4, status: "00", cause: filter change due}
    - {table: discrete_input, address: 19, active: 0, status: "02", cause: system not OK}
"""
)


def test_status_bits_load_and_combine() -> None:
    p = _profile(
        0,
        ("input_register", 0),
        status={
            "bits": [
                {"table": "discrete_input", "address": 16, "status": "01", "cause": "zero calibration"},
                {"table": "holding_register", "address": 20, "bit": 3, "status": "02", "cause": "lamp fault"},
                {"table": "holding_register", "address": 20, "bit": 4, "status": "00", "cause": "filter change due"},
                {"table": "discrete_input", "address": 19, "active": 0, "status": "02", "cause": "system not OK"},
            ]
        },
    )
    st = p.status
    assert st is not None and not st.has_register and st.normal_bits == (0, 0, 0, 1)
    assert st.evaluate(None, (0, 0, 0, 1)) == ("00", "")
    assert st.evaluate(None, (1, 0, 1, 1)) == ("01", "zero calibration; filter change due")
    assert st.evaluate(None, (1, 1, 0, 0)) == (
        "02",
        "zero calibration; lamp fault; system not OK",
    )  # worst wins, causes kept
    both = _profile(
        0,
        ("input_register", 0),
        status={
            "table": "input_register",
            "address": 100,
            "codes": {0: ["00", ""], 1: ["01", "span"]},
            "bits": [{"table": "coil", "address": 5, "status": "02", "cause": "fault"}],
        },
    )
    assert both.status.evaluate(1, (1,)) == ("02", "span; fault")


def test_status_bit_mistakes(tmp_path: Path) -> None:
    text = STATUS_BITS_PROFILE.replace("address: 20, bit: 3,", "address: 20,").replace(
        "address: 16, status", "address: 16, bit: 2, status"
    )
    err = _profile_error(tmp_path, text)
    _assert_issue(err, "profiles/p.yaml", 21, "status.bits[0].bit", "applies to registers", "remove bit:")
    _assert_issue(err, "profiles/p.yaml", 22, "status.bits[1].bit", "which bit of holding_register 20?", "add bit: N")
    err = _profile_error(tmp_path, STATUS_BITS_PROFILE.replace("address: 19, active: 0", "address: 16, active: 0"))
    _assert_issue(err, "profiles/p.yaml", 24, "status.bits[3].address", "status.bits[0] already reads this bit")
    err = _profile_error(
        tmp_path,
        STATUS_BITS_PROFILE.replace(
            "{table: holding_register, address: 20, bit: 3", "{table: input_register, address: 1, bit: 3"
        ),
    )
    _assert_issue(
        err,
        "profiles/p.yaml",
        22,
        "status.bits[1].address",
        "status.bits[1] at input_register 1 overlaps values[0] (PM2,5)",
    )


def test_loop_scaling_and_its_mistakes(tmp_path: Path) -> None:
    p = load_profile("advantech-adam-4017p")
    flow = p.value("Flow")
    assert flow.loop is not None
    at_4ma = 65535 * 4 / 20
    assert flow.eng_offset + at_4ma * flow.eng_scale == pytest.approx(0.0, abs=1e-9)
    assert flow.eng_offset + 65535 * flow.eng_scale == pytest.approx(500 * 20 / 16 - 500 * 4 / 16)
    assert flow.loop.fault(65535 * 3.7 / 20).startswith("loop current 3.70 mA < 3.8 mA")
    assert flow.loop.fault(65535 * 12 / 20) == ""
    loop = "    loop: {raw: [0, 65535], ma: [0, 20], span: [0, 100]}\n"
    text = GOOD_PROFILE.format(name="p").replace(
        "    range: [0, 1000]\n", "    range: [0, 1000]\n    scale: 2.0\n" + loop
    )
    err = _profile_error(tmp_path, text)
    _assert_issue(err, "profiles/p.yaml", 15, "values[0].loop", "would apply it twice", "remove scale: and offset:")


ASCII_PROFILE = r"""profile: {name}
manufacturer: t
model: t
source: test
protocol: serial_ascii
poll_command: "Q\r"
parse:
  regex: '^(?P<a>[0-9.]+),(?P<b>[0-9.]+)$'
values:
  - {{parameter: PM10, field: a, unit: ug/m3}}
  - {{parameter: "PM2,5", field: b, unit: ug/m3}}
"""


def test_serial_ascii_profile_checks(tmp_path: Path) -> None:
    assert load_profile(_write(tmp_path / "profiles" / "ok.yaml", ASCII_PROFILE.format(name="ok"))).parameters == [
        "PM10",
        "PM2,5",
    ]
    err = _profile_error(tmp_path, ASCII_PROFILE.format(name="p").replace("field: b", "field: c"))
    _assert_issue(err, "profiles/p.yaml", 11, "values[1].field", "no field 'c' in the parsed line", "use one of a, b")
    err = _profile_error(tmp_path, ASCII_PROFILE.format(name="p").replace("[0-9.]+),(?P<b>", "[0-9.]+,(?P<b>"))
    _assert_issue(err, "profiles/p.yaml", 8, "parse.regex", "not a valid regular expression")
    err = _profile_error(tmp_path, ASCII_PROFILE.format(name="p").replace("parse:\n", 'parse:\n  delimiter: ","\n'))
    _assert_issue(err, "profiles/p.yaml", 7, "parse", "give either regex: (named groups) or delimiter: with fields:")
    err = _profile_error(
        tmp_path, ASCII_PROFILE.format(name="p").replace("protocol: serial_ascii", "protocol: serial-ascii")
    )
    _assert_issue(
        err,
        "profiles/p.yaml",
        5,
        "protocol",
        "'serial-ascii' is not one of modbus, serial_ascii",
        "did you mean serial_ascii?",
    )


def test_every_builtin_profile_cites_its_source_and_says_what_is_unverified() -> None:
    for name in list_profiles():
        p = load_profile(name)
        if name.startswith("demo-"):
            continue
        assert len(p.source) > 20, name
        if name != "generic-modbus-float":
            assert "NOT verified" in p.notes or "not verified" in p.notes.lower(), name


# --------------------------------------------------------------------------- #
# live_batch_s: seconds of live polls sealed into one message
# --------------------------------------------------------------------------- #


def test_live_batch_s_defaults_to_one_poll_a_message_and_takes_0_to_300(tmp_path: Path) -> None:
    _write(tmp_path / "profiles" / "p.yaml", GOOD_PROFILE.format(name="p"))
    path = _write(tmp_path / "stations" / "s.yaml", GOOD_STATION.format(profile="p"))
    assert load_station(path, tmp_path / "profiles").live_batch_s == 0
    for seconds in ("0", "5", "0.5", "300"):
        text = GOOD_STATION.format(profile="p").replace(
            "poll_interval_s: 2.0\n", f"poll_interval_s: 2.0\nlive_batch_s: {seconds}\n"
        )
        path = _write(tmp_path / "stations" / "s.yaml", text)
        station = load_station(path, tmp_path / "profiles")
        assert station.live_batch_s == float(seconds)
        assert station.with_port_overrides({"a1": 15999}).live_batch_s == float(seconds)  # the copies keep it


@pytest.mark.parametrize(
    "value, needles",
    [
        ("301", ("301 is outside 0..300 seconds", "write 0 (the default: one message per poll)", "at most 300")),
        ("-1", ("-1 is outside 0..300 seconds", "at most 300")),
        (".nan", ("nan is outside 0..300 seconds",)),
        (".inf", ("inf is outside 0..300 seconds",)),
        ("five", ("expected a number, got 'five'", "write a plain number")),
    ],
)
def test_a_bad_live_batch_s_names_the_file_the_line_and_the_fix(tmp_path: Path, value: str, needles) -> None:
    text = GOOD_STATION.format(profile="p").replace(
        "poll_interval_s: 2.0\n", f"poll_interval_s: 2.0\nlive_batch_s: {value}\n"
    )
    _assert_issue(_station_error(tmp_path, text), "stations/s.yaml", 3, "live_batch_s", *needles)


def test_the_agent_refuses_to_start_with_a_bad_live_batch_s(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from broker_bridge.keys import write_new_key
    from cli.main import app

    _write(tmp_path / "profiles" / "p.yaml", GOOD_PROFILE.format(name="p"))
    text = GOOD_STATION.format(profile="p").replace(
        "poll_interval_s: 2.0\n", "poll_interval_s: 2.0\nlive_batch_s: 600\n"
    )
    station = _write(tmp_path / "stations" / "s.yaml", text)
    write_new_key(tmp_path / "k.key")
    result = CliRunner().invoke(
        app,
        ["agent", "run", str(station), "--key", str(tmp_path / "k.key"), "--broker", "127.0.0.1:1",
         "--outbox", str(tmp_path / "o.sqlite"), "--profiles-dir", str(tmp_path / "profiles")],
    )  # fmt: skip
    assert result.exit_code != 0
    assert "stations/s.yaml:3: live_batch_s: 600 is outside 0..300 seconds (fix: " in result.output
    assert not (tmp_path / "o.sqlite").exists()  # refused before anything was opened
