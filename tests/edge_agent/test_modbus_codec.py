"""edge_agent.codec: register decoding per type x word order, scaling, sentinels, read planning."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pymodbus.client import ModbusTcpClient

from edge_agent.codec import (
    CodecError,
    Point,
    decode_raw,
    decode_value,
    encode_raw,
    exception_cause,
    plan_reads,
)

ORDERS = ("ABCD", "CDAB", "BADC", "DCBA")
TYPES = ("int16", "uint16", "int32", "uint32", "float32", "float64")

# Hand-computed vectors: (type, raw, {word order: registers})
VECTORS = [
    (
        "float32",
        1.0,
        {"ABCD": [0x3F80, 0x0000], "CDAB": [0x0000, 0x3F80], "BADC": [0x803F, 0x0000], "DCBA": [0x0000, 0x803F]},
    ),
    # 0.1251 = 0x3E001ADB (qc-and-analyzers.md B.0 worked example)
    (
        "float32",
        struct.unpack(">f", bytes.fromhex("3E001ADB"))[0],
        {"ABCD": [0x3E00, 0x1ADB], "CDAB": [0x1ADB, 0x3E00], "BADC": [0x003E, 0xDB1A], "DCBA": [0xDB1A, 0x003E]},
    ),
    (
        "float32",
        -9999.0,
        {"ABCD": [0xC61C, 0x3C00], "CDAB": [0x3C00, 0xC61C], "BADC": [0x1CC6, 0x003C], "DCBA": [0x003C, 0x1CC6]},
    ),
    (
        "int32",
        0x12345678,
        {"ABCD": [0x1234, 0x5678], "CDAB": [0x5678, 0x1234], "BADC": [0x3412, 0x7856], "DCBA": [0x7856, 0x3412]},
    ),
    (
        "int32",
        -2,
        {"ABCD": [0xFFFF, 0xFFFE], "CDAB": [0xFFFE, 0xFFFF], "BADC": [0xFFFF, 0xFEFF], "DCBA": [0xFEFF, 0xFFFF]},
    ),
    (
        "uint32",
        0xDEADBEEF,
        {"ABCD": [0xDEAD, 0xBEEF], "CDAB": [0xBEEF, 0xDEAD], "BADC": [0xADDE, 0xEFBE], "DCBA": [0xEFBE, 0xADDE]},
    ),
    ("int16", -2, {"ABCD": [0xFFFE], "CDAB": [0xFFFE], "BADC": [0xFEFF], "DCBA": [0xFEFF]}),
    ("uint16", 0x1234, {"ABCD": [0x1234], "CDAB": [0x1234], "BADC": [0x3412], "DCBA": [0x3412]}),
    (
        "float64",
        1.0,
        {"ABCD": [0x3FF0, 0, 0, 0], "CDAB": [0, 0, 0, 0x3FF0], "BADC": [0xF03F, 0, 0, 0], "DCBA": [0, 0, 0, 0xF03F]},
    ),
    (
        "float64",
        -2.5,
        {"ABCD": [0xC004, 0, 0, 0], "CDAB": [0, 0, 0, 0xC004], "BADC": [0x04C0, 0, 0, 0], "DCBA": [0, 0, 0, 0x04C0]},
    ),
]


@pytest.mark.parametrize(("vtype", "raw", "by_order"), VECTORS, ids=[f"{v[0]}={v[1]!r}" for v in VECTORS])
@pytest.mark.parametrize("order", ORDERS)
def test_hand_vectors(vtype: str, raw: float, by_order: dict[str, list[int]], order: str) -> None:
    assert encode_raw(raw, vtype, order) == by_order[order]
    assert decode_raw(by_order[order], vtype, order) == raw


SAMPLES = {
    "int16": [-32768, -1, 0, 1, 1234, 32767],
    "uint16": [0, 1, 40000, 65535],
    "int32": [-(1 << 31), -123456, 0, 123456789, (1 << 31) - 1],
    "uint32": [0, 70000, (1 << 32) - 1],
    "float32": [0.0, -0.5, 1.5, 3.140625, 85000.0, 2.0**-66, -(2.0**127), struct.unpack(">f", b"\x00\x00\x00\x01")[0]],
    "float64": [0.0, 0.1, -123.456, 1e300, 85000.123456789],
}


@pytest.mark.parametrize("vtype", TYPES)
@pytest.mark.parametrize("order", ORDERS)
def test_round_trip_every_type_and_order(vtype: str, order: str) -> None:
    for raw in SAMPLES[vtype]:
        regs = encode_raw(raw, vtype, order)
        assert all(0 <= r <= 0xFFFF for r in regs)
        assert decode_raw(regs, vtype, order) == raw


@pytest.mark.parametrize("vtype", TYPES)
def test_agrees_with_pymodbus_converter(vtype: str) -> None:
    """pymodbus's word_order="big" is ABCD and "little" is CDAB (all words reversed)."""
    dt = getattr(ModbusTcpClient.DATATYPE, vtype.upper())
    for raw in SAMPLES[vtype]:
        assert encode_raw(raw, vtype, "ABCD") == ModbusTcpClient.convert_to_registers(raw, dt, word_order="big")
        assert encode_raw(raw, vtype, "CDAB") == ModbusTcpClient.convert_to_registers(raw, dt, word_order="little")


@given(st.floats(width=32, allow_nan=False), st.sampled_from(ORDERS))
def test_float32_round_trip_property(x: float, order: str) -> None:
    assert decode_raw(encode_raw(x, "float32", order), "float32", order) == x


def test_integer_scaling_follows_float_semantics() -> None:
    regs = encode_raw(1234, "int16", "ABCD")
    d = decode_value(regs, vtype="int16", scale=0.1)
    assert d.value == 1234 * 0.1 == 123.4
    assert d.raw == 1234
    d = decode_value(encode_raw(-40, "int16", "ABCD"), vtype="int16", scale=0.5, offset=-20.0)
    assert d.value == -40 * 0.5 - 20.0 == -40.0
    d = decode_value(encode_raw(65535, "uint16", "ABCD"), vtype="uint16", scale=0.01, offset=0.0)
    assert d.value == 65535 * 0.01
    d = decode_value(encode_raw(200000, "uint32", "CDAB"), vtype="uint32", word_order="CDAB", scale=0.001)
    assert d.value == 200000 * 0.001


def test_float32_value_is_the_exact_float32() -> None:
    regs = encode_raw(0.1, "float32", "ABCD")  # rounds to the nearest float32
    d = decode_value(regs, vtype="float32")
    assert d.value == struct.unpack(">f", struct.pack(">f", 0.1))[0]
    assert d.value != 0.1


def test_sentinels_give_none_with_cause() -> None:
    d = decode_value(encode_raw(-9999.0, "float32", "CDAB"), vtype="float32", word_order="CDAB", sentinels=[-9999.0])
    assert (d.value, d.cause) == (None, "sentinel -9999")
    d = decode_value([0x7FC0, 0x0000], vtype="float32")  # NaN: always a sentinel
    assert d.value is None and d.cause == "sentinel NaN"
    d = decode_value([0xFFFF, 0xFFFF], vtype="float32")  # Xylem's NaN 0xFFFFFFFF
    assert d.value is None and d.cause == "sentinel NaN"
    # a sentinel that float32 cannot hold exactly still matches its float32 image
    d = decode_value(encode_raw(-9999.9, "float32", "ABCD"), vtype="float32", sentinels=[-9999.9])
    assert d.value is None and d.cause.startswith("sentinel -9999.9")
    # integer sentinels are compared before scaling
    d = decode_value(encode_raw(-9999, "int16", "ABCD"), vtype="int16", scale=0.1, sentinels=[-9999])
    assert (d.value, d.cause) == (None, "sentinel -9999")
    d = decode_value(encode_raw(math.inf, "float32", "ABCD"), vtype="float32")
    assert d.value is None and d.cause == "non-finite value inf"


def test_out_of_range_values_are_kept() -> None:
    d = decode_value(encode_raw(5000.0, "float32", "ABCD"), vtype="float32", sentinels=[-9999.0])
    assert d.value == 5000.0 and d.cause == ""


def test_bool_values() -> None:
    assert decode_value(vtype="bool", bit=True).value == 1.0
    assert decode_value(vtype="bool", bit=False, scale=2.0, offset=1.0).value == 1.0


def test_bad_inputs_raise() -> None:
    with pytest.raises(CodecError):
        decode_raw([0x3F80], "float32", "ABCD")
    with pytest.raises(CodecError):
        decode_raw([0x3F80, 0], "float32", "ABDC")
    with pytest.raises(CodecError):
        decode_raw([0x10000, 0], "float32", "ABCD")
    with pytest.raises(CodecError):
        encode_raw(70000, "int16", "ABCD")


def test_exception_causes() -> None:
    assert exception_cause(2) == "modbus exception 2 (illegal data address)"
    assert exception_cause(4) == "modbus exception 4 (server device failure)"
    assert exception_cause(11) == "modbus exception 11 (gateway target device failed to respond)"


# --------------------------------------------------------------------------- #
# Read planning
# --------------------------------------------------------------------------- #


def _floats(table: str, start: int, n: int) -> list[Point]:
    return [Point(f"v{i}", table, start + 2 * i, 2) for i in range(n)]


def test_contiguous_values_are_one_read_and_status_another() -> None:
    points = _floats("input_register", 0, 6) + [Point("status", "input_register", 100, 1)]
    plan = plan_reads(points)
    assert [(r.table, r.address, r.count) for r in plan] == [("input_register", 0, 12), ("input_register", 100, 1)]
    assert [p.key for p in plan[0].points] == [f"v{i}" for i in range(6)]
    assert plan[0].slice_of(points[2]) == slice(4, 6)


def test_reads_respect_125_registers_and_never_split_a_value() -> None:
    plan = plan_reads(_floats("holding_register", 0, 70))  # 140 registers
    assert [(r.address, r.count) for r in plan] == [(0, 124), (124, 16)]
    plan = plan_reads([Point(f"r{i}", "holding_register", i, 1) for i in range(300)])
    assert [(r.address, r.count) for r in plan] == [(0, 125), (125, 125), (250, 50)]
    plan = plan_reads(_floats("holding_register", 0, 10), max_registers=8)  # a profile's lower limit
    assert [(r.address, r.count) for r in plan] == [(0, 8), (8, 8), (16, 4)]
    assert all(r.count <= 8 for r in plan)


def test_bit_reads_respect_2000_bits() -> None:
    plan = plan_reads([Point(f"c{i}", "coil", i, 1) for i in range(2500)])
    assert [(r.table, r.address, r.count) for r in plan] == [("coil", 0, 2000), ("coil", 2000, 500)]


def test_gaps_split_reads_unless_allowed() -> None:
    points = [
        Point("a", "input_register", 0, 2),
        Point("b", "input_register", 3, 2),
        Point("c", "input_register", 10, 1),
    ]
    assert [(r.address, r.count) for r in plan_reads(points)] == [(0, 2), (3, 2), (10, 1)]
    assert [(r.address, r.count) for r in plan_reads(points, max_gap=1)] == [(0, 5), (10, 1)]
    assert [(r.address, r.count) for r in plan_reads(points, max_gap=5)] == [(0, 11)]


def test_tables_are_never_mixed() -> None:
    points = [
        Point("h", "holding_register", 0, 2),
        Point("i", "input_register", 0, 2),
        Point("c", "coil", 0, 1),
        Point("d", "discrete_input", 1, 1),
    ]
    plan = plan_reads(points)
    assert [(r.table, r.address, r.count) for r in plan] == [
        ("coil", 0, 1),
        ("discrete_input", 1, 1),
        ("input_register", 0, 2),
        ("holding_register", 0, 2),
    ]


def test_plan_limits_are_checked() -> None:
    with pytest.raises(CodecError):
        plan_reads([], max_registers=126)
    with pytest.raises(CodecError):
        plan_reads([Point("x", "input_register", 0, 4)], max_registers=2)


# --------------------------------------------------------------------------- #
# Issue 3: RTU framing, serial ASCII lines, 4-20 mA loops
# --------------------------------------------------------------------------- #

from pymodbus.framer import FramerRTU  # noqa: E402

from edge_agent.codec import (  # noqa: E402
    FrameError,
    ModbusExceptionReply,
    UnusableLineError,
    ascii_checksum,
    check_line_checksum,
    crc16_modbus,
    decode_text_value,
    parse_rtu_reply,
    rtu_frame_gap_s,
    rtu_read_request,
    rtu_reply_length,
    split_fields,
)


def test_crc16_modbus_known_vectors() -> None:
    assert crc16_modbus(b"123456789") == 0x4B37  # the CRC-16/MODBUS check value
    # The Modbus spec's own example request: read holding 0..9 of unit 1 = 01 03 00 00 00 0A C5 CD
    assert rtu_read_request(1, "holding_register", 0, 10) == bytes.fromhex("01030000000AC5CD")
    assert rtu_read_request(17, "input_register", 8, 1) == bytes.fromhex("110400080001B298")


def test_crc_agrees_with_pymodbus() -> None:
    for data in (b"\x01\x04\x02\x00\x0a", bytes(range(40)), b"\xff" * 7):
        assert crc16_modbus(data) == int.from_bytes(FramerRTU.compute_CRC(data).to_bytes(2, "big"), "little")


def _reply(body: bytes) -> bytes:
    crc = crc16_modbus(body)
    return body + bytes((crc & 0xFF, crc >> 8))


def test_parse_rtu_replies() -> None:
    frame = _reply(bytes.fromhex("0104043F800000"))
    assert rtu_reply_length(frame[:2]) is None and rtu_reply_length(frame[:3]) == 9
    assert parse_rtu_reply(frame, 1, "input_register", 2) == [0x3F80, 0x0000]
    bits = _reply(bytes.fromhex("0202" + "02" + "0501"))  # 10 bits: 1,0,1,0,0,0,0,0, 1,0
    assert parse_rtu_reply(bits, 2, "discrete_input", 10) == [
        True,
        False,
        True,
        False,
        False,
        False,
        False,
        False,
        True,
        False,
    ]
    with pytest.raises(ModbusExceptionReply) as exc:
        parse_rtu_reply(_reply(bytes.fromhex("018402")), 1, "input_register", 2)
    assert exc.value.code == 2 and str(exc.value) == "modbus exception 2 (illegal data address)"
    assert rtu_reply_length(_reply(bytes.fromhex("018402"))[:2]) == 5
    broken = bytearray(frame)
    broken[4] ^= 0x10
    for bad, kind, needle in [
        (bytes(broken), "crc", "bad CRC"),
        (_reply(bytes.fromhex("0204043F800000")), "unit", "answer from unit 2, expected unit 1"),
        (_reply(bytes.fromhex("0103043F800000")), "function", "answer for function 3, expected 4"),
        (_reply(bytes.fromhex("0104023F80")), "length", "expected 2 registers, got 1"),
        (_reply(bytes.fromhex("0104053F800000")), "length", "byte count 5 but 4 data bytes"),
        (frame[:4], "length", "truncated frame"),
    ]:
        with pytest.raises(FrameError, match=needle) as exc:
            parse_rtu_reply(bad, 1, "input_register", 2)
        assert exc.value.kind == kind


def test_inter_frame_gap() -> None:
    assert rtu_frame_gap_s(9600, "E", 1, 8) == pytest.approx(3.5 * 11 / 9600)  # 4.01 ms: 11 bits per character
    assert rtu_frame_gap_s(9600, "N", 2, 8) == pytest.approx(3.5 * 11 / 9600)
    assert rtu_frame_gap_s(9600, "N", 1, 8) == pytest.approx(3.5 * 10 / 9600)
    assert rtu_frame_gap_s(1200, "E", 1, 8) == pytest.approx(0.032083, rel=1e-4)
    assert rtu_frame_gap_s(38400, "E", 1, 8) == rtu_frame_gap_s(115200, "N", 1, 8) == 0.00175  # fixed above 19200


def test_ascii_checksums() -> None:
    nmea = "$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47"
    assert check_line_checksum(nmea, "xor8-hex", "*", 1) == nmea[1:-3]
    assert ascii_checksum("sum8-hex", b"ABC") == f"{(65 + 66 + 67) % 256:02X}"
    assert ascii_checksum("crc16-modbus-hex", b"123456789") == "4B37"
    line = "12.5,7.1;" + ascii_checksum("sum8-hex", b"12.5,7.1")
    assert check_line_checksum(line, "sum8-hex", ";") == "12.5,7.1"
    assert check_line_checksum(line.lower(), "sum8-hex", ";") == "12.5,7.1"  # hex digits in either case
    for bad, needle in [
        (nmea.replace("4807", "4808"), "bad checksum '47', computed 48"),
        (nmea.replace("*47", "47"), "line too short|no checksum separator"),
        ("*4", "line too short"),
    ]:
        with pytest.raises(UnusableLineError, match=needle):
            check_line_checksum(bad, "xor8-hex", "*", 1)


def test_split_fields_and_text_values() -> None:
    assert split_fields(" 0.023, 0.834,  -", delimiter=",", fields=["conc", "_", "err"]) == {
        "conc": " 0.023",
        "err": "  -",
    }
    with pytest.raises(UnusableLineError, match="expected 3 fields separated by ',', got 2"):
        split_fields("1,2", delimiter=",", fields=["a", "b", "c"])
    with pytest.raises(UnusableLineError, match="expected 2 fields"):
        split_fields("1,2,3", delimiter=",", fields=["a", "b"])
    assert split_fields("1,2,3", delimiter=",", fields=["a", "b"], allow_extra=True) == {"a": "1", "b": "2"}
    assert split_fields("NO2=41.2 E", regex=r"NO2=(?P<v>\S+) (?P<f>\w)") == {"v": "41.2", "f": "E"}
    with pytest.raises(UnusableLineError, match="does not match"):
        split_fields("NO2 41.2", regex=r"NO2=(?P<v>\S+)")
    assert decode_text_value(" 0.023", scale=1000.0).value == pytest.approx(23.0)
    assert decode_text_value("-9999", sentinels=(-9999.0,)).cause == "sentinel -9999"
    assert decode_text_value("-----", sentinels=("-----",)).cause == "sentinel '-----'"
    d = decode_text_value("1#.5")
    assert (d.value, d.status, d.cause) == (None, "02", "broken reply: '1#.5' is not a number")


def test_a_broken_loop_is_a_fault_not_a_value() -> None:
    from station_profiles.profile_model import LoopSpec

    loop = LoopSpec(raw=(0, 65535), ma=(0, 20), span=(0, 100))
    scale, offset = loop.scale_offset
    ok = decode_value([65535 * 12 // 20], vtype="uint16", scale=scale, offset=offset, loop=loop)
    assert ok.value == pytest.approx(50.0, abs=0.01) and ok.status is None
    open_loop = decode_value([0], vtype="uint16", scale=scale, offset=offset, loop=loop)
    assert (open_loop.value, open_loop.status, open_loop.cause) == (
        None,
        "02",
        "loop current 0.00 mA < 3.8 mA (sensor burn-out or open loop)",
    )
    full = decode_value([65535], vtype="uint16", scale=scale, offset=offset, loop=loop)
    assert full.value == pytest.approx(100.0)  # 20 mA: the top of the span
    wide = LoopSpec(raw=(0, 65535), ma=(0, 24), span=(0, 100))  # a module that can see up to 24 mA
    high = decode_value([65535], vtype="uint16", scale=wide.scale_offset[0], offset=wide.scale_offset[1], loop=wide)
    assert (high.value, high.status, high.cause) == (
        None,
        "02",
        "loop current 24.00 mA > 20.5 mA (sensor fault current)",
    )
