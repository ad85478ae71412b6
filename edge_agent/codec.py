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
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

REGISTER_FORMATS: dict[str, str] = {
    "int16": "h",
    "uint16": "H",
    "int32": "i",
    "uint32": "I",
    "float32": "f",
    "float64": "d",
}
WIDTHS: dict[str, int] = {"bool": 1, "int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "float32": 2, "float64": 4}
WORD_ORDERS = ("ABCD", "CDAB", "BADC", "DCBA")
BIT_TABLES = frozenset({"coil", "discrete_input"})
MAX_REGISTERS = 125
MAX_BITS = 2000

EXCEPTION_NAMES: dict[int, str] = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    7: "negative acknowledge",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
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
    if len(registers) != WIDTHS[vtype]:
        raise CodecError(f"{vtype} needs {WIDTHS[vtype]} registers, got {len(registers)}")
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
    raw: int | float
    cause: str = ""  # why value is None, e.g. "sentinel -9999"


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
    max_registers: int = MAX_REGISTERS,
    max_bits: int = MAX_BITS,
    max_gap: int = 0,
) -> list[ReadRequest]:
    """Group points by table and coalesce neighbours into as few reads as possible.

    Two points share a read when the undefined addresses between them number
    at most ``max_gap`` and the read stays within the limit (125 registers or
    2000 bits by the Modbus spec; a profile can lower them). A value is never
    split across reads. Order: by table (coil, discrete, input, holding), then
    by address.
    """
    if not 1 <= max_registers <= MAX_REGISTERS:
        raise CodecError(f"max_registers must be 1..{MAX_REGISTERS}")
    if not 1 <= max_bits <= MAX_BITS:
        raise CodecError(f"max_bits must be 1..{MAX_BITS}")
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
