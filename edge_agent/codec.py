"""Pure Modbus data codec and read planning (no I/O).

Registers are 16-bit and sent high byte first; how several registers make one
32/64-bit value is the device's choice (qc-and-analyzers.md B.0). Word orders,
with A = the most significant byte of the value:

    ABCD  big-endian, high word first        float32 1.0 -> [0x3F80, 0x0000]
    CDAB  word-swapped, low word first       float32 1.0 -> [0x0000, 0x3F80]
    BADC  byte-swapped in each register      float32 1.0 -> [0x803F, 0x0000]
    DCBA  little-endian                      float32 1.0 -> [0x0000, 0x803F]

For 64-bit values CDAB/DCBA reverse the order of all four registers (what
pymodbus calls word_order="little"). For 16-bit values CDAB = ABCD and
DCBA = BADC.

Engineering value = raw * scale + offset, computed in Python floats (so an
int16 1234 with scale 0.1 gives exactly ``1234 * 0.1``).

Also here, because they are pure too: Modbus RTU framing (CRC-16/MODBUS,
read requests, reply lengths and checks) and serial ASCII lines (checksums,
splitting a line into named fields, a field into a value).
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from vocabulary.modbus import (
    BIT_TABLES,
    EXCEPTION_NAMES,
    FUNCTION_CODES,
    MAX_BITS_PER_READ,
    MAX_REGISTERS_PER_READ,
    TYPE_WIDTH,
    WORD_ORDERS,
)

REGISTER_FORMATS: dict[str, str] = {
    "int16": "h",
    "uint16": "H",
    "int32": "i",
    "uint32": "I",
    "float32": "f",
    "float64": "d",
}


class CodecError(ValueError):
    pass


def exception_cause(code: int) -> str:
    """Modbus exception code -> the cause text of a Reading."""
    return f"modbus exception {code} ({EXCEPTION_NAMES.get(code, 'unknown exception code')})"


# --------------------------------------------------------------------------- #
# Registers <-> raw values
# --------------------------------------------------------------------------- #


def _check_order(word_order: str) -> None:
    if word_order not in WORD_ORDERS:
        raise CodecError(f"word order {word_order!r} is not one of {', '.join(WORD_ORDERS)}")


def registers_to_bytes(registers: Sequence[int], word_order: str = "ABCD") -> bytes:
    """Wire registers -> the value's bytes, most significant first."""
    _check_order(word_order)
    regs = list(registers)
    for r in regs:
        if not 0 <= r <= 0xFFFF:
            raise CodecError(f"register value {r} is not 16-bit")
    if word_order in ("CDAB", "DCBA"):
        regs.reverse()
    swap = word_order in ("BADC", "DCBA")
    out = bytearray()
    for r in regs:
        hi, lo = r >> 8, r & 0xFF
        out += bytes((lo, hi)) if swap else bytes((hi, lo))
    return bytes(out)


def bytes_to_registers(data: bytes, word_order: str = "ABCD") -> list[int]:
    """The value's bytes (most significant first) -> wire registers."""
    _check_order(word_order)
    if len(data) % 2:
        raise CodecError("odd number of bytes")
    swap = word_order in ("BADC", "DCBA")
    regs = [(data[i + 1] << 8 | data[i]) if swap else (data[i] << 8 | data[i + 1]) for i in range(0, len(data), 2)]
    if word_order in ("CDAB", "DCBA"):
        regs.reverse()
    return regs


def decode_raw(registers: Sequence[int], vtype: str, word_order: str = "ABCD") -> int | float:
    """Registers of one value -> its raw number (int or float, before scale/offset)."""
    fmt = REGISTER_FORMATS.get(vtype)
    if fmt is None:
        raise CodecError(f"type {vtype!r} is not a register type")
    if len(registers) != TYPE_WIDTH[vtype]:
        raise CodecError(f"{vtype} needs {TYPE_WIDTH[vtype]} registers, got {len(registers)}")
    return struct.unpack(">" + fmt, registers_to_bytes(registers, word_order))[0]


def encode_raw(raw: int | float, vtype: str, word_order: str = "ABCD") -> list[int]:
    """Raw number -> registers (the inverse of decode_raw; floats round to the type)."""
    fmt = REGISTER_FORMATS.get(vtype)
    if fmt is None:
        raise CodecError(f"type {vtype!r} is not a register type")
    try:
        data = struct.pack(">" + fmt, raw)
    except struct.error as exc:
        raise CodecError(f"{raw!r} does not fit {vtype}: {exc}") from None
    return bytes_to_registers(data, word_order)


def to_engineering(raw: int | float, scale: float = 1.0, offset: float = 0.0) -> float:
    return float(raw) * scale + offset


@dataclass(frozen=True, slots=True)
class Decoded:
    """One decoded value: ``value`` is None when the analyzer gave no usable value."""

    value: float | None
    raw: int | float | str
    cause: str = ""  # why value is None, e.g. "sentinel -9999"
    #: a status this value has whatever the device says (a broken 4-20 mA loop is "02")
    status: str | None = None


def _fmt_raw(raw: int | float) -> str:
    if isinstance(raw, float):
        return "NaN" if math.isnan(raw) else f"{raw:g}"
    return str(raw)


def _sentinel_matches(raw: int | float, sentinels: Iterable[float], vtype: str) -> bool:
    for s in sentinels:
        target = struct.unpack(">f", struct.pack(">f", s))[0] if vtype == "float32" and math.isfinite(s) else s
        if raw == target:
            return True
    return False


def decode_value(
    registers: Sequence[int] | None = None,
    *,
    vtype: str,
    word_order: str = "ABCD",
    scale: float = 1.0,
    offset: float = 0.0,
    sentinels: Iterable[float] = (),
    bit: bool | None = None,
    loop: object | None = None,
) -> Decoded:
    """Decode one value: registers (or one bit for bool) -> engineering value.

    NaN (floats) and the profile's sentinels (compared with the raw value,
    before scale/offset) give value None with cause "sentinel <raw>"; an
    infinite float gives None with cause "non-finite value inf". Values
    outside the analyzer's range are returned as they are.
    """
    if vtype == "bool":
        if bit is None:
            raise CodecError("bool values need bit=")
        raw: int | float = int(bool(bit))
    else:
        if registers is None:
            raise CodecError("registers are required")
        raw = decode_raw(registers, vtype, word_order)
    if isinstance(raw, float) and math.isnan(raw):
        return Decoded(None, raw, "sentinel NaN")
    if _sentinel_matches(raw, sentinels, vtype):
        return Decoded(None, raw, f"sentinel {_fmt_raw(raw)}")
    if isinstance(raw, float) and math.isinf(raw):
        return Decoded(None, raw, f"non-finite value {raw}")
    if loop is not None:
        fault = loop.fault(raw)  # type: ignore[attr-defined]
        if fault:
            return Decoded(None, raw, fault, status="02")
    value = to_engineering(raw, scale, offset)
    if not math.isfinite(value):
        return Decoded(None, raw, f"non-finite value {value} after scaling")
    return Decoded(value, raw)


# --------------------------------------------------------------------------- #
# Read planning
# --------------------------------------------------------------------------- #


@dataclass(frozen=True, slots=True)
class Point:
    """Something to read: ``key`` identifies it (a parameter, or "status")."""

    key: str
    table: str
    address: int  # 0-based wire address
    width: int  # registers (or bits for bit tables)


@dataclass(frozen=True, slots=True)
class ReadRequest:
    table: str
    address: int
    count: int
    points: tuple[Point, ...]

    @property
    def end(self) -> int:
        return self.address + self.count

    def slice_of(self, point: Point) -> slice:
        start = point.address - self.address
        return slice(start, start + point.width)


def plan_reads(
    points: Iterable[Point],
    *,
    max_registers: int = MAX_REGISTERS_PER_READ,
    max_bits: int = MAX_BITS_PER_READ,
    max_gap: int = 0,
) -> list[ReadRequest]:
    """Group points by table and coalesce neighbours into as few reads as possible.

    Two points share a read when the undefined addresses between them number
    at most ``max_gap`` and the read stays within the limit (125 registers or
    2000 bits by the Modbus spec; a profile can lower them). A value is never
    split across reads. Order: by table (coil, discrete, input, holding), then
    by address.
    """
    if not 1 <= max_registers <= MAX_REGISTERS_PER_READ:
        raise CodecError(f"max_registers must be 1..{MAX_REGISTERS_PER_READ}")
    if not 1 <= max_bits <= MAX_BITS_PER_READ:
        raise CodecError(f"max_bits must be 1..{MAX_BITS_PER_READ}")
    if max_gap < 0:
        raise CodecError("max_gap must be >= 0")
    order = {"coil": 0, "discrete_input": 1, "input_register": 2, "holding_register": 3}
    by_table: dict[str, list[Point]] = {}
    for p in points:
        if p.table not in order:
            raise CodecError(f"unknown table {p.table!r}")
        limit = max_bits if p.table in BIT_TABLES else max_registers
        if p.width > limit:
            raise CodecError(f"{p.key} is {p.width} wide, more than one read of {limit}")
        by_table.setdefault(p.table, []).append(p)
    plan: list[ReadRequest] = []
    for table in sorted(by_table, key=order.__getitem__):
        limit = max_bits if table in BIT_TABLES else max_registers
        group: list[Point] = []
        start = end = 0
        for p in sorted(by_table[table], key=lambda q: (q.address, q.width)):
            p_end = p.address + p.width
            if group and p.address - end <= max_gap and max(end, p_end) - start <= limit:
                group.append(p)
                end = max(end, p_end)
                continue
            if group:
                plan.append(ReadRequest(table, start, end - start, tuple(group)))
            group, start, end = [p], p.address, p_end
        if group:
            plan.append(ReadRequest(table, start, end - start, tuple(group)))
    return plan


# --------------------------------------------------------------------------- #
# Modbus RTU framing
# --------------------------------------------------------------------------- #


class FrameError(ValueError):
    """A reply that is not a valid answer to the request. ``kind``: crc, unit,
    function, length."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class ModbusExceptionReply(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(exception_cause(code))
        self.code = code


def crc16_modbus(data: bytes) -> int:
    """CRC-16/MODBUS (poly 0xA001 reflected, init 0xFFFF). On the wire: low byte first."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def with_crc(frame: bytes) -> bytes:
    crc = crc16_modbus(frame)
    return frame + bytes((crc & 0xFF, crc >> 8))


def rtu_read_request(unit_id: int, table: str, address: int, count: int) -> bytes:
    """The RTU frame of a read request (FC 1-4), CRC included."""
    if not 0 <= unit_id <= 255 or not 0 <= address <= 0xFFFF or not 1 <= count <= MAX_BITS_PER_READ:
        raise CodecError(f"bad request: unit {unit_id}, address {address}, count {count}")
    return with_crc(bytes((unit_id, FUNCTION_CODES[table])) + address.to_bytes(2, "big") + count.to_bytes(2, "big"))


def rtu_reply_length(prefix: bytes) -> int | None:
    """Total length of the reply frame that starts with ``prefix`` (None: need more bytes).

    A read reply is unit, function, byte count, data, CRC; an exception reply
    is unit, function | 0x80, exception code, CRC.
    """
    if len(prefix) < 2:
        return None
    if prefix[1] & 0x80:
        return 5
    if len(prefix) < 3:
        return None
    return 3 + prefix[2] + 2


def parse_rtu_reply(frame: bytes, unit_id: int, table: str, count: int) -> list[int] | list[bool]:
    """Check a complete reply frame and return its registers (or bits).

    Raises :class:`FrameError` for a bad CRC, another unit's or function's
    answer, or a wrong length, and :class:`ModbusExceptionReply` for an
    exception reply.
    """
    if len(frame) < 5:
        raise FrameError("length", f"truncated frame: {len(frame)} bytes")
    body, crc = frame[:-2], frame[-2] | frame[-1] << 8
    if crc16_modbus(body) != crc:
        raise FrameError("crc", f"bad CRC {crc:04X}, computed {crc16_modbus(body):04X}")
    if frame[0] != unit_id:
        raise FrameError("unit", f"answer from unit {frame[0]}, expected unit {unit_id}")
    fc = FUNCTION_CODES[table]
    if frame[1] == fc | 0x80:
        raise ModbusExceptionReply(frame[2])
    if frame[1] != fc:
        raise FrameError("function", f"answer for function {frame[1]}, expected {fc}")
    data = frame[3:-2]
    if frame[2] != len(data):
        raise FrameError("length", f"byte count {frame[2]} but {len(data)} data bytes")
    if table in BIT_TABLES:
        if len(data) != (count + 7) // 8:
            raise FrameError("length", f"expected {(count + 7) // 8} bytes of bits, got {len(data)}")
        return [bool(data[i // 8] >> (i % 8) & 1) for i in range(count)]
    if len(data) != 2 * count:
        raise FrameError("length", f"expected {count} registers, got {len(data) // 2} ({len(data)} bytes)")
    return [data[i] << 8 | data[i + 1] for i in range(0, len(data), 2)]


def rtu_char_time_s(baud: int, parity: str = "E", stop_bits: int = 1, bytesize: int = 8) -> float:
    """Seconds one character takes on the line: start bit + data + parity + stop bits."""
    bits = 1 + bytesize + (0 if parity == "N" else 1) + stop_bits
    return bits / baud


def rtu_frame_gap_s(baud: int, parity: str = "E", stop_bits: int = 1, bytesize: int = 8) -> float:
    """The silence between frames, t3.5: 3.5 character times, fixed at 1.75 ms above 19200 baud
    (Modbus over Serial Line v1.02, 2.5.1.1)."""
    if baud > 19200:
        return 0.00175
    return 3.5 * rtu_char_time_s(baud, parity, stop_bits, bytesize)


# --------------------------------------------------------------------------- #
# Serial ASCII lines
# --------------------------------------------------------------------------- #


class UnusableLineError(ValueError):
    """A reply line that cannot be used. ``kind``: checksum, parse."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


CHECKSUM_DIGITS = {"sum8-hex": 2, "xor8-hex": 2, "crc16-modbus-hex": 4}


def ascii_checksum(algorithm: str, text: bytes) -> str:
    """The checksum of ``text`` as upper-case hex digits."""
    if algorithm == "sum8-hex":
        return f"{sum(text) & 0xFF:02X}"
    if algorithm == "xor8-hex":
        x = 0
        for b in text:
            x ^= b
        return f"{x:02X}"
    if algorithm == "crc16-modbus-hex":
        return f"{crc16_modbus(text):04X}"
    raise CodecError(f"unknown checksum algorithm {algorithm!r}")


def check_line_checksum(
    line: str, algorithm: str, separator: str = "", skip_start: int = 0, encoding: str = "ascii"
) -> str:
    """Verify ``<skipped><covered><separator><hex>`` and return the covered text.

    Raises :class:`UnusableLineError` ("checksum") when the checksum is missing or wrong.
    """
    digits = CHECKSUM_DIGITS[algorithm]
    tail = len(separator) + digits
    if len(line) < skip_start + tail:
        raise UnusableLineError("checksum", f"line too short for a {algorithm} checksum: {line!r}"[:200])
    received = line[-digits:]
    if separator and line[-tail:-digits] != separator:
        raise UnusableLineError(
            "checksum", f"no checksum separator {separator!r} before the last {digits} characters: {line!r}"[:200]
        )
    covered = line[skip_start:-tail]
    expected = ascii_checksum(algorithm, covered.encode(encoding, errors="replace"))
    if received.upper() != expected:
        raise UnusableLineError("checksum", f"bad checksum {received!r}, computed {expected} ({algorithm})")
    return covered


def split_fields(
    text: str,
    *,
    regex: str | None = None,
    delimiter: str | None = None,
    fields: Sequence[str] = (),
    allow_extra: bool = False,
) -> dict[str, str]:
    """One line -> {field name: text}. A regex must match the whole line; a
    delimited line must have exactly len(fields) fields (or more with allow_extra)."""
    if regex is not None:
        m = re.fullmatch(regex, text)
        if m is None:
            raise UnusableLineError("parse", f"line does not match the profile's regex: {text!r}"[:200])
        return {k: (v if v is not None else "") for k, v in m.groupdict().items()}
    if delimiter is None:
        raise CodecError("give regex or delimiter")
    parts = text.split(delimiter)
    if len(parts) < len(fields) or (len(parts) > len(fields) and not allow_extra):
        raise UnusableLineError(
            "parse", f"expected {len(fields)} fields separated by {delimiter!r}, got {len(parts)}: {text!r}"[:200]
        )
    return {name: part for name, part in zip(fields, parts) if name != "_"}


def decode_text_value(
    text: str, *, scale: float = 1.0, offset: float = 0.0, sentinels: Iterable[float | str] = ()
) -> Decoded:
    """One field of a line -> engineering value. A text or numeric sentinel gives
    None with its cause; text that is not a number gives None, status "02"."""
    t = text.strip()
    for s in sentinels:
        if isinstance(s, str) and t == s.strip():
            return Decoded(None, t, f"sentinel {s.strip()!r}")
    try:
        raw = float(t)
    except ValueError:
        return Decoded(None, t, f"broken reply: {t!r} is not a number", status="02")
    if math.isnan(raw):
        return Decoded(None, raw, "sentinel NaN")
    for s in sentinels:
        if not isinstance(s, str) and raw == s:
            return Decoded(None, raw, f"sentinel {_fmt_raw(raw)}")
    if math.isinf(raw):
        return Decoded(None, raw, f"non-finite value {raw}")
    return Decoded(to_engineering(raw, scale, offset), raw)
