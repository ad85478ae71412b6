"""Pydantic models of analyzer profiles and station files.

An *analyzer profile* describes a model of analyzer (its Modbus map, or its
serial ASCII line format) and is shared by every station that has one. A
*station file* says which analyzers sit where (transport, host or serial
port, unit id). See station_profiles/README.md.

Structural checks (types, allowed values, unknown keys) are pydantic's; the
checks that need the whole document (address conversion, overlaps, duplicate
parameters, ...) run in ``model_validator(mode="after")`` and raise
``configuration.errors.SemanticErrors``, which carries the exact path of each problem so the
loader can point at the YAML line. It deliberately is *not* a ``ValueError``: pydantic must let it through unwrapped.
"""

from __future__ import annotations

import math
import re
import string
import struct
from typing import Annotated, Any, Literal, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from configuration.errors import DocumentProblem, Loc, SemanticErrors, config_error
from vocabulary.modbus import (
    BIT_TABLES,
    INT_LIMITS,
    MAX_BITS_PER_READ,
    MAX_REGISTERS_PER_READ,
    MODICON_PREFIX,
    REGISTER_TABLES,
    TABLES,
    TYPE_WIDTH,
    Table,
    ValueType,
    WordOrder,
)
from vocabulary.parameters import PARAMETER_RE
from vocabulary.stations import NAME_RE, STATION_ID_RE, StationKind
from vocabulary.status import StatusCode

AddressBase = Literal[0, 1, "4xxxx"]
_PREFIX_TABLE = {v: k for k, v in MODICON_PREFIX.items()}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- #
# Analyzer profile
# --------------------------------------------------------------------------- #


class SignalHint(_Strict):
    """How firmware_sim generates a value (the agent ignores it).

    value(t) = base + daily_amplitude * cos(2*pi*(local_hour - peak_hour)/24)
               + gauss(0, noise), clamped to [min, max]; local hour is UTC+7.
    """

    base: float
    daily_amplitude: float = 0.0
    peak_hour: float = Field(default=14.0, ge=0.0, lt=24.0)
    noise: float = Field(default=0.0, ge=0.0)
    min: float | None = None
    max: float | None = None
    #: correlated parameters: this value = (the other parameter's latest value
    #: on the same analyzer) * (this signal's value), e.g. PM2,5 = PM10 * 0.6
    fraction_of: Annotated[str, Field(pattern=PARAMETER_RE)] | None = None


class LoopSpec(_Strict):
    """A 4-20 mA current loop read through an analog input module.

    The module gives raw counts; ``raw`` and ``ma`` say which currents two raw
    counts stand for (the module's input range, e.g. 0..65535 over 0..20 mA),
    ``span`` the engineering values at 4 mA and 20 mA (the analyzer's output
    range). A current outside [fault_below_ma, fault_above_ma] is a broken
    loop or a failed sensor (NAMUR NE43 bands; check the analyzer's own
    failure-current setting), never a measurement.
    """

    raw: tuple[float, float]
    ma: tuple[float, float] = (4.0, 20.0)
    span: tuple[float, float]
    fault_below_ma: float | None = 3.8
    fault_above_ma: float | None = 20.5

    def current(self, raw: float) -> float:
        (r0, r1), (m0, m1) = self.raw, self.ma
        return m0 + (raw - r0) * (m1 - m0) / (r1 - r0)

    @property
    def scale_offset(self) -> tuple[float, float]:
        """engineering = raw * scale + offset, the composition of the two linear maps."""
        (r0, r1), (m0, m1), (lo, hi) = self.raw, self.ma, self.span
        k = (m1 - m0) / (r1 - r0)  # mA per count
        per_ma = (hi - lo) / 16.0
        return k * per_ma, lo + (m0 - r0 * k - 4.0) * per_ma

    def fault(self, raw: float) -> str:
        """The cause when ``raw`` is outside the valid current band, else ""."""
        ma = self.current(raw)
        if self.fault_below_ma is not None and ma < self.fault_below_ma:
            return f"loop current {ma:.2f} mA < {self.fault_below_ma:g} mA (sensor burn-out or open loop)"
        if self.fault_above_ma is not None and ma > self.fault_above_ma:
            return f"loop current {ma:.2f} mA > {self.fault_above_ma:g} mA (sensor fault current)"
        return ""


class ValueSpec(_Strict):
    parameter: Annotated[str, Field(pattern=PARAMETER_RE)]
    table: Table
    address: int | str  # as written in the manual; see AnalyzerProfile.address_base
    type: ValueType
    word_order: WordOrder = "ABCD"
    scale: float = 1.0  # engineering = raw * scale + offset
    offset: float = 0.0
    unit: Annotated[str, Field(max_length=64)]
    range: tuple[float, float] | None = None  # the analyzer's measuring range (low, high)
    sentinels: tuple[float, ...] = ()  # raw values meaning "no value"; NaN always is one for floats
    loop: LoopSpec | None = None  # a 4-20 mA input: scaling and burn-out detection (instead of scale/offset)
    signal: SignalHint | None = None
    _wire: int = PrivateAttr(default=-1)

    @property
    def wire_address(self) -> int:
        """0-based address sent on the wire (the PDU address)."""
        return self._wire

    @property
    def width(self) -> int:
        return TYPE_WIDTH[self.type]

    @property
    def eng_scale(self) -> float:
        """The scale actually applied (from ``loop`` when there is one)."""
        return self.loop.scale_offset[0] if self.loop else self.scale

    @property
    def eng_offset(self) -> float:
        return self.loop.scale_offset[1] if self.loop else self.offset


class StatusBit(_Strict):
    """One bit that means a condition: a coil/discrete input, or bit ``bit`` of a register.

    ``active`` is the bit value that means the condition holds (0 for an
    active-low bit such as Teledyne's "system OK").
    """

    table: Table
    address: int | str
    bit: int | None = Field(default=None, ge=0, le=15)  # register tables only: 0 = least significant
    active: Literal[0, 1] = 1
    status: StatusCode
    cause: Annotated[str, Field(min_length=1, max_length=120)]
    _wire: int = PrivateAttr(default=-1)

    @property
    def wire_address(self) -> int:
        return self._wire

    @property
    def width(self) -> int:
        return 1


SEVERITY = {"00": 0, "01": 1, "02": 2}


def combine_conditions(conditions: list[tuple[str, str]]) -> tuple[str, str]:
    """Several (status, cause) that hold at once -> one: the worst status wins
    (02 over 01 over 00) and every cause is kept, in order."""
    code = "00"
    causes: list[str] = []
    for c, cause in conditions:
        if SEVERITY[c] > SEVERITY[code]:
            code = c
        if cause and cause not in causes:
            causes.append(cause)
    return code, "; ".join(causes)


class StatusSpec(_Strict):
    """How an analyzer reports its state: a code register (``table``/``address``/
    ``codes``), status bits (``bits``), or both. Every condition that holds is
    combined by :func:`combine_conditions`."""

    table: Table | None = None
    address: int | str | None = None
    type: Literal["bool", "int16", "uint16", "int32", "uint32"] = "uint16"
    word_order: WordOrder = "ABCD"
    codes: dict[int, tuple[StatusCode, Annotated[str, Field(max_length=200)]]] = Field(default_factory=dict)
    #: what an unlisted raw value means; "{raw}" is replaced by the raw value
    unknown: tuple[StatusCode, Annotated[str, Field(max_length=200)]] = ("02", "unknown status code {raw}")
    bits: tuple[StatusBit, ...] = ()
    _wire: int = PrivateAttr(default=-1)

    @property
    def has_register(self) -> bool:
        """True when there is a status code register (not only bits)."""
        return self.table is not None

    @property
    def wire_address(self) -> int:
        return self._wire

    @property
    def width(self) -> int:
        return TYPE_WIDTH[self.type]

    def interpret(self, raw: int) -> tuple[str, str]:
        """Raw code register value -> (status code, cause)."""
        if raw in self.codes:
            code, cause = self.codes[raw]
            return code, cause
        code, cause = self.unknown
        return code, cause.replace("{raw}", str(raw))

    def evaluate(self, raw: int | None, bit_values: tuple[int, ...] | list[int] = ()) -> tuple[str, str]:
        """The code register's raw value (None without one) and the value of each
        of ``bits`` (in order) -> (status code, cause)."""
        conditions: list[tuple[str, str]] = []
        if self.has_register:
            if raw is None:
                raise ValueError("this status has a code register; its raw value is needed")
            conditions.append(self.interpret(raw))
        if len(bit_values) != len(self.bits):
            raise ValueError(f"expected {len(self.bits)} bit values, got {len(bit_values)}")
        for spec, value in zip(self.bits, bit_values):
            if int(bool(value)) == spec.active:
                conditions.append((spec.status, spec.cause))
        return combine_conditions(conditions)

    @property
    def normal_raw(self) -> int:
        """The raw value meaning "measuring" (what a healthy analyzer reports)."""
        for raw, (code, _) in sorted(self.codes.items()):
            if code == "00":
                return raw
        return min(self.codes) if self.codes else 0

    @property
    def normal_bits(self) -> tuple[int, ...]:
        """Every bit in its inactive state."""
        return tuple(1 - b.active for b in self.bits)


class AnalyzerProfile(_Strict):
    profile: Annotated[str, Field(pattern=NAME_RE)]  # must equal the file stem
    manufacturer: str
    model: str
    source: str  # where the map comes from (manual, page) or "simulated"
    notes: str = ""
    protocol: Literal["modbus"] = "modbus"
    address_base: AddressBase = 0
    #: read-planning limits; lower them for analyzers that cannot take full-size reads
    max_read_registers: int = Field(default=MAX_REGISTERS_PER_READ, ge=1, le=MAX_REGISTERS_PER_READ)
    max_read_bits: int = Field(default=MAX_BITS_PER_READ, ge=1, le=MAX_BITS_PER_READ)
    #: coalesce reads across gaps of up to this many undefined registers/bits
    #: (0: only contiguous; many analyzers answer exception 2 for undefined addresses)
    max_read_gap: int = Field(default=0, ge=0, le=MAX_REGISTERS_PER_READ - 1)
    values: Annotated[list[ValueSpec], Field(min_length=1)]
    status: StatusSpec | None = None

    @model_validator(mode="after")
    def _check(self) -> AnalyzerProfile:
        issues: list[DocumentProblem] = []
        for i, v in enumerate(self.values):
            wire = _wire_address(self.address_base, v.table, v.address, ("values", i, "address"), issues)
            v._wire = wire
            _check_value(v, ("values", i), issues)
        if self.status is not None:
            _check_status(self, self.status, issues)
        _check_duplicates(self, issues)
        _check_overlaps(self, issues)
        if issues:
            raise SemanticErrors(issues)
        return self

    def value(self, parameter: str) -> ValueSpec:
        for v in self.values:
            if v.parameter == parameter:
                return v
        raise KeyError(parameter)

    @property
    def parameters(self) -> list[str]:
        return [v.parameter for v in self.values]


def _wire_address(base: Any, table: str, address: int | str, loc: Loc, issues: list[DocumentProblem]) -> int:
    """Convert a manual's address to the 0-based PDU address (-1 if invalid)."""
    if base == "4xxxx":
        return _modicon(table, address, loc, issues)
    if isinstance(address, str):
        if not address.isdigit():
            issues.append(
                DocumentProblem(loc, f"address {address!r} is not a number", "write the register number as an integer")
            )
            return -1
        address = int(address)
    if base == 1:
        if not 1 <= address <= 65536:
            issues.append(
                DocumentProblem(
                    loc,
                    f"address {address} is outside 1..65536 (address_base: 1 counts from 1)",
                    "use the manual's 1-based number, or set address_base: 0 if the manual counts from 0",
                )
            )
            return -1
        return address - 1
    if not 0 <= address <= 65535:
        issues.append(
            DocumentProblem(
                loc,
                f"address {address} is outside 0..65535",
                'use the 0-based PDU address, or set address_base: 1 / "4xxxx" to match the manual\'s numbering',
            )
        )
        return -1
    return address


def _modicon(table: str, address: int | str, loc: Loc, issues: list[DocumentProblem]) -> int:
    expected = MODICON_PREFIX[table]
    if isinstance(address, str):
        if not address.isdigit() or len(address) not in (5, 6):
            issues.append(
                DocumentProblem(
                    loc,
                    f"address {address!r} is not a 5- or 6-digit Modicon reference",
                    f'write e.g. {expected}0001 or "{expected}00001"',
                )
            )
            return -1
        digits = address
    else:
        if address < 0:
            issues.append(DocumentProblem(loc, f"address {address} is negative", f"write e.g. {expected}0001"))
            return -1
        digits = f"{address:05d}" if address < 100000 else str(address)
        if len(digits) > 6:
            issues.append(
                DocumentProblem(
                    loc, f"address {address} is not a 5- or 6-digit Modicon reference", f"write e.g. {expected}0001"
                )
            )
            return -1
    prefix, number = int(digits[0]), int(digits[1:])
    if prefix != expected:
        other = _PREFIX_TABLE.get(prefix)
        what = (
            f"{'an' if other[0] in 'aeiou' else 'a'} {other} number ({prefix}xxxx)"
            if other
            else f"not a valid Modicon reference (prefix {prefix})"
        )
        issues.append(
            DocumentProblem(
                loc,
                f"address {address} is {what} but table is {table}",
                f"use {expected}xxxx numbers for {table} (e.g. {expected}{1:0{len(digits) - 1}d} for the first one)"
                + (f", or set table: {other}" if other else ""),
            )
        )
        return -1
    limit = 9999 if len(digits) == 5 else 65536
    if not 1 <= number <= limit:
        issues.append(
            DocumentProblem(
                loc,
                f"address {address} is outside {expected}{1:0{len(digits) - 1}d}..{expected}{limit}",
                "Modicon references count from 1",
            )
        )
        return -1
    return number - 1


def _check_status(p: AnalyzerProfile, s: StatusSpec, issues: list[DocumentProblem]) -> None:
    if s.table is None and s.address is None and not s.codes and not s.bits:
        issues.append(
            DocumentProblem(
                ("status",),
                "the status says nothing",
                "give a code register (table, address, codes) and/or bits; or remove status:",
            )
        )
        return
    if s.table is not None or s.address is not None or s.codes:
        if s.table is None:
            issues.append(
                DocumentProblem(
                    ("status", "table"),
                    "a status code register needs table:",
                    "add table: input_register (or holding_register, ...)",
                )
            )
        if s.address is None:
            issues.append(
                DocumentProblem(
                    ("status", "address"),
                    "a status code register needs address:",
                    "add the register's address as the manual numbers it",
                )
            )
        if s.table is not None and s.address is not None:
            s._wire = _wire_address(p.address_base, s.table, s.address, ("status", "address"), issues)
            _check_type_table(s.type, s.table, ("status",), issues)
        if not s.codes:
            issues.append(
                DocumentProblem(
                    ("status", "codes"),
                    "no status codes",
                    'map raw values, e.g. {0: ["00", ""], 1: ["01", "zero calibration"]}',
                )
            )
        elif s.type in INT_LIMITS or s.type == "bool":
            lo, hi = INT_LIMITS.get(s.type, (0, 1))
            for raw in s.codes:
                if not lo <= raw <= hi:
                    issues.append(
                        DocumentProblem(
                            ("status", "codes", raw), f"raw code {raw} does not fit {s.type}", f"use {lo}..{hi}"
                        )
                    )
    seen: dict[tuple[str, int, int | None], int] = {}
    for j, b in enumerate(s.bits):
        loc: Loc = ("status", "bits", j)
        b._wire = _wire_address(p.address_base, b.table, b.address, loc + ("address",), issues)
        if b.table in BIT_TABLES and b.bit is not None:
            issues.append(
                DocumentProblem(
                    loc + ("bit",), f"a {b.table} is one bit already; bit: applies to registers", "remove bit:"
                )
            )
        if b.table in REGISTER_TABLES and b.bit is None:
            issues.append(
                DocumentProblem(
                    loc + ("bit",),
                    f"which bit of {b.table} {b.address}?",
                    "add bit: N (0 = least significant, 15 = most significant)",
                )
            )
        key = (b.table, b._wire, b.bit)
        if b._wire >= 0 and key in seen:
            issues.append(
                DocumentProblem(
                    loc + ("address",),
                    f"status.bits[{seen[key]}] already reads this bit",
                    "each bit means one condition; merge the two entries",
                )
            )
        else:
            seen[key] = j


def _check_type_table(vtype: str, table: str, loc: Loc, issues: list[DocumentProblem]) -> None:
    if table in BIT_TABLES and vtype != "bool":
        issues.append(
            DocumentProblem(
                loc + ("type",),
                f"type {vtype} cannot live in a {table} table (one bit per address)",
                "use type: bool, or table: input_register / holding_register",
            )
        )
    if table in REGISTER_TABLES and vtype == "bool":
        issues.append(
            DocumentProblem(
                loc + ("type",),
                f"type bool cannot live in a {table} table",
                "use an integer type (e.g. uint16), or table: coil / discrete_input",
            )
        )


def _check_value(v: ValueSpec, loc: Loc, issues: list[DocumentProblem]) -> None:
    _check_type_table(v.type, v.table, loc, issues)
    if v.scale == 0 or not math.isfinite(v.scale):
        issues.append(
            DocumentProblem(
                loc + ("scale",),
                f"scale {v.scale} must be a finite non-zero number",
                "engineering = raw * scale + offset; use 1.0 for no scaling",
            )
        )
    if not math.isfinite(v.offset):
        issues.append(DocumentProblem(loc + ("offset",), f"offset {v.offset} must be finite", "use 0.0 for no offset"))
    if v.range is not None:
        low, high = v.range
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            issues.append(
                DocumentProblem(
                    loc + ("range",),
                    f"range [{low}, {high}] must have low < high",
                    f"write range: [{min(low, high)}, {max(low, high)}] (the analyzer's measuring range)",
                )
            )
    if v.type in INT_LIMITS:
        lo, hi = INT_LIMITS[v.type]
        for j, s in enumerate(v.sentinels):
            if not math.isfinite(s) or s != int(s):
                issues.append(
                    DocumentProblem(
                        loc + ("sentinels", j),
                        f"sentinel {s} can never be a raw {v.type}",
                        "integer types have integer raw values",
                    )
                )
            elif not lo <= s <= hi:
                issues.append(
                    DocumentProblem(
                        loc + ("sentinels", j),
                        f"sentinel {s:g} does not fit {v.type} ({lo}..{hi})",
                        "sentinels are raw values, before scale and offset",
                    )
                )
    if v.type == "float32":
        for j, s in enumerate(v.sentinels):
            if math.isfinite(s) and abs(s) > 3.4028234663852886e38:
                issues.append(
                    DocumentProblem(
                        loc + ("sentinels", j), f"sentinel {s} is outside float32", "use a value a float32 can hold"
                    )
                )
    if v.signal is not None and v.signal.min is not None and v.signal.max is not None and v.signal.min > v.signal.max:
        issues.append(
            DocumentProblem(loc + ("signal", "min"), f"signal min {v.signal.min} > max {v.signal.max}", "swap them")
        )
    if v.loop is not None:
        _check_loop(v, loc, issues)


def _check_loop(v: ValueSpec, loc: Loc, issues: list[DocumentProblem]) -> None:
    lp = v.loop
    assert lp is not None
    if v.scale != 1.0 or v.offset != 0.0:
        issues.append(
            DocumentProblem(
                loc + ("loop",),
                "loop: computes the scaling; scale/offset would apply it twice",
                "remove scale: and offset: from this value",
            )
        )
    if lp.raw[0] == lp.raw[1] or not all(math.isfinite(x) for x in lp.raw):
        issues.append(
            DocumentProblem(
                loc + ("loop", "raw"),
                f"raw {list(lp.raw)} must be two different counts",
                "write the counts the module gives at the two ends of its input range, e.g. raw: [0, 65535]",
            )
        )
    if lp.ma[0] == lp.ma[1]:
        issues.append(
            DocumentProblem(
                loc + ("loop", "ma"),
                f"ma {list(lp.ma)} must be two different currents",
                "e.g. ma: [0, 20] for a module set to 0-20 mA",
            )
        )
    if lp.span[0] == lp.span[1]:
        issues.append(
            DocumentProblem(
                loc + ("loop", "span"),
                f"span {list(lp.span)} must be two different values",
                "the analyzer's output range: the values at 4 mA and at 20 mA",
            )
        )
    if lp.fault_below_ma is not None and lp.fault_above_ma is not None and lp.fault_below_ma >= lp.fault_above_ma:
        issues.append(
            DocumentProblem(
                loc + ("loop", "fault_below_ma"),
                f"fault_below_ma {lp.fault_below_ma:g} >= fault_above_ma {lp.fault_above_ma:g}",
                "e.g. fault_below_ma: 3.8, fault_above_ma: 20.5",
            )
        )


def _check_duplicates(p: Any, issues: list[DocumentProblem]) -> None:
    seen: dict[str, int] = {}
    for i, v in enumerate(p.values):
        if v.parameter in seen:
            issues.append(
                DocumentProblem(
                    ("values", i, "parameter"),
                    f"parameter {v.parameter!r} is already defined by values[{seen[v.parameter]}]",
                    "each parameter appears once per analyzer; remove or rename one",
                )
            )
        else:
            seen[v.parameter] = i
    for i, v in enumerate(p.values):
        other = v.signal.fraction_of if v.signal is not None else None
        if other is not None and (other not in seen or other == v.parameter):
            issues.append(
                DocumentProblem(
                    ("values", i, "signal", "fraction_of"),
                    f"fraction_of {other!r} is not another parameter of this profile",
                    f"use one of {', '.join(x for x in seen if x != v.parameter) or '(none)'}",
                )
            )
        elif other is not None:
            dep = p.values[seen[other]].signal
            if dep is not None and dep.fraction_of is not None:
                issues.append(
                    DocumentProblem(
                        ("values", i, "signal", "fraction_of"),
                        f"{other} is itself a fraction of {dep.fraction_of}",
                        "make it a fraction of a parameter with its own signal",
                    )
                )


def _check_overlaps(p: AnalyzerProfile, issues: list[DocumentProblem]) -> None:
    spans: list[tuple[str, int, int, Loc, str]] = []
    for i, v in enumerate(p.values):
        if v.wire_address >= 0:
            spans.append((v.table, v.wire_address, v.width, ("values", i, "address"), f"values[{i}] ({v.parameter})"))
    if p.status is not None and p.status.has_register and p.status.wire_address >= 0:
        spans.append((p.status.table, p.status.wire_address, p.status.width, ("status", "address"), "status"))
    if p.status is not None:
        registers_seen: set[tuple[str, int]] = set()
        for j, b in enumerate(p.status.bits):
            if b.wire_address < 0:
                continue
            if b.table in REGISTER_TABLES:
                if (b.table, b.wire_address) in registers_seen:
                    continue  # several bits of one register are one span
                registers_seen.add((b.table, b.wire_address))
            spans.append((b.table, b.wire_address, 1, ("status", "bits", j, "address"), f"status.bits[{j}]"))
    for table in TABLES:
        items = sorted((s for s in spans if s[0] == table), key=lambda s: (s[1], s[3]))
        unit = "bit" if table in BIT_TABLES else "register"
        for (_, a1, w1, _, name1), (_, a2, _w2, loc2, name2) in zip(items, items[1:]):
            if a2 < a1 + w1:
                issues.append(
                    DocumentProblem(
                        loc2,
                        f"{name2} at {table} {a2} overlaps {name1} ({unit}s {a1}..{a1 + w1 - 1})",
                        f"check the manual; a {w1}-{unit} value at {a1} leaves {a1 + w1} as the next free address",
                    )
                )
        for _, a, w, loc, name in items:
            if a + w > 65536:
                issues.append(
                    DocumentProblem(loc, f"{name} at {a} runs past the end of the address space", "check the address")
                )


# --------------------------------------------------------------------------- #
# Serial ASCII analyzer profile
# --------------------------------------------------------------------------- #

ChecksumAlgorithm = Literal["sum8-hex", "xor8-hex", "crc16-modbus-hex"]
CHECKSUM_DIGITS: dict[str, int] = {"sum8-hex": 2, "xor8-hex": 2, "crc16-modbus-hex": 4}
SKIP_FIELD = "_"


class AsciiParse(_Strict):
    """How one reply line becomes named fields: a regex with named groups, or
    split on ``delimiter`` with ``fields`` naming each position ("_" skips one)."""

    regex: str | None = None
    delimiter: Annotated[str, Field(min_length=1, max_length=4)] | None = None
    fields: tuple[Annotated[str, Field(pattern=r"^(_|[A-Za-z][A-Za-z0-9_]{0,31})$")], ...] = ()
    #: more fields than listed is normal for analyzers that append columns in later firmware
    allow_extra_fields: bool = False

    def names(self) -> list[str]:
        if self.regex is not None:
            try:
                return list(re.compile(self.regex).groupindex)
            except re.error:
                return []
        return [f for f in self.fields if f != SKIP_FIELD]


class ChecksumSpec(_Strict):
    """A checksum at the end of the line: ``<covered text><separator><hex digits>``.

    The covered text starts after ``skip_start`` characters (e.g. 1 for a
    leading STX or "$") and ends before the separator.
    """

    algorithm: ChecksumAlgorithm
    separator: Annotated[str, Field(max_length=4)] = ""
    skip_start: int = Field(default=0, ge=0, le=8)

    @property
    def digits(self) -> int:
        return CHECKSUM_DIGITS[self.algorithm]


class AsciiValueSpec(_Strict):
    parameter: Annotated[str, Field(pattern=PARAMETER_RE)]
    field: Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_]{0,31}$")]
    scale: float = 1.0  # engineering = number in the line * scale + offset
    offset: float = 0.0
    unit: Annotated[str, Field(max_length=64)]
    range: tuple[float, float] | None = None
    #: numbers (compared with the number in the line) or exact texts (e.g. "-----") meaning "no value"
    sentinels: tuple[float | str, ...] = ()
    decimals: int = Field(default=3, ge=0, le=9)  # firmware_sim: digits it prints after the point
    signal: SignalHint | None = None

    @property
    def eng_scale(self) -> float:
        return self.scale

    @property
    def eng_offset(self) -> float:
        return self.offset


class AsciiFlag(_Strict):
    """A field that is a flag: the condition holds when its text is not one of ``off``."""

    field: Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_]{0,31}$")]
    off: tuple[str, ...] = ("0", "", "-")
    status: StatusCode
    cause: Annotated[str, Field(min_length=1, max_length=120)]


class AsciiLetters(_Strict):
    """A field holding error letters (e.g. "-" for none, "LM" for two errors)."""

    field: Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_]{0,31}$")]
    none: str = "- 0"  # characters that mean "no error here"
    map: dict[str, tuple[StatusCode, Annotated[str, Field(max_length=120)]]]
    unknown: tuple[StatusCode, Annotated[str, Field(max_length=120)]] = ("02", "unknown error letter {raw}")


class AsciiStatusSpec(_Strict):
    flags: tuple[AsciiFlag, ...] = ()
    letters: AsciiLetters | None = None

    def evaluate(self, fields: dict[str, str]) -> tuple[str, str]:
        """Parsed fields -> (status code, cause): every condition that holds, worst status wins."""
        conditions: list[tuple[str, str]] = []
        for f in self.flags:
            if fields[f.field].strip() not in f.off:
                conditions.append((f.status, f.cause))
        if self.letters is not None:
            for ch in fields[self.letters.field].strip():
                if ch in self.letters.none:
                    continue
                if ch in self.letters.map:
                    conditions.append(self.letters.map[ch])
                else:
                    code, cause = self.letters.unknown
                    conditions.append((code, cause.replace("{raw}", ch)))
        return combine_conditions(conditions)


class AsciiSimSpec(_Strict):
    """How firmware_sim fills the fields that are neither values nor status (the agent ignores it).

    ``fill`` texts go through strftime with the local time (UTC+7), so
    "%Y-%m-%d %H:%M" gives the analyzer's clock. ``template`` (regex
    profiles) is the line with {field} placeholders; ``width`` right-aligns
    every field to that many characters (the BAM-1020 pads to 6).
    """

    template: str | None = None
    fill: dict[str, str] = Field(default_factory=dict)
    width: int | None = Field(default=None, ge=1, le=32)
    prefix: Annotated[str, Field(max_length=8)] = ""  # characters before the line's text (e.g. STX); not checksummed
    echo: bool = False  # the device echoes the command before answering


class SerialAsciiProfile(_Strict):
    profile: Annotated[str, Field(pattern=NAME_RE)]
    manufacturer: str
    model: str
    source: str
    notes: str = ""
    protocol: Literal["serial_ascii"]
    encoding: Literal["ascii", "latin-1"] = "ascii"
    #: sent once after the port is opened (e.g. to leave a menu); its reply is read and discarded
    init_command: str | None = None
    init_wait_s: float = Field(default=0.3, ge=0, le=10)
    poll_command: Annotated[str, Field(min_length=1, max_length=64)]
    line_terminator: Annotated[str, Field(min_length=1, max_length=4)] = "\r\n"
    #: lines matching this regex are skipped (echo, prompts, headers); the first other line is the reply
    ignore_lines: str | None = None
    parse: AsciiParse
    checksum: ChecksumSpec | None = None
    values: Annotated[list[AsciiValueSpec], Field(min_length=1)]
    status: AsciiStatusSpec | None = None
    sim: AsciiSimSpec = Field(default_factory=AsciiSimSpec)

    @model_validator(mode="after")
    def _check(self) -> SerialAsciiProfile:
        issues: list[DocumentProblem] = []
        pr = self.parse
        for key in ("regex", "ignore_lines"):
            text = pr.regex if key == "regex" else self.ignore_lines
            if text is None:
                continue
            try:
                re.compile(text)
            except re.error as exc:
                issues.append(
                    DocumentProblem(
                        ("parse", "regex") if key == "regex" else ("ignore_lines",),
                        f"not a valid regular expression: {exc}",
                        "check the escaping (in YAML single quotes a backslash is literal)",
                    )
                )
        if (pr.regex is None) == (pr.delimiter is None):
            issues.append(
                DocumentProblem(
                    ("parse",),
                    "give either regex: (named groups) or delimiter: with fields:",
                    'e.g. parse: {delimiter: ",", fields: [time, conc, flow]}',
                )
            )
        if pr.delimiter is not None and not pr.fields:
            issues.append(
                DocumentProblem(
                    ("parse", "fields"),
                    "delimiter: needs fields: naming each position",
                    'e.g. fields: [time, conc, "_", flow] ("_" skips a field)',
                )
            )
        if pr.regex is not None and pr.fields:
            issues.append(
                DocumentProblem(
                    ("parse", "fields"),
                    "fields: is for delimiter: parsing; a regex names its groups",
                    "remove fields: or use (?P<name>...) groups",
                )
            )
        names = pr.names()
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            issues.append(
                DocumentProblem(
                    ("parse", "fields"),
                    f"field names used twice: {', '.join(sorted(dup))}",
                    'give each position its own name ("_" for fields to skip)',
                )
            )
        known = set(names)
        for i, v in enumerate(self.values):
            if known and v.field not in known:
                issues.append(
                    DocumentProblem(
                        ("values", i, "field"),
                        f"no field {v.field!r} in the parsed line",
                        f"use one of {', '.join(names)}",
                    )
                )
            if v.scale == 0 or not math.isfinite(v.scale):
                issues.append(
                    DocumentProblem(
                        ("values", i, "scale"),
                        f"scale {v.scale} must be a finite non-zero number",
                        "use 1.0 for no scaling",
                    )
                )
            if v.range is not None and not v.range[0] < v.range[1]:
                issues.append(
                    DocumentProblem(
                        ("values", i, "range"),
                        f"range {list(v.range)} must have low < high",
                        "write range: [low, high]",
                    )
                )
        if self.status is not None and known:
            for j, f in enumerate(self.status.flags):
                if f.field not in known:
                    issues.append(
                        DocumentProblem(
                            ("status", "flags", j, "field"),
                            f"no field {f.field!r} in the parsed line",
                            f"use one of {', '.join(names)}",
                        )
                    )
            if self.status.letters is not None and self.status.letters.field not in known:
                issues.append(
                    DocumentProblem(
                        ("status", "letters", "field"),
                        f"no field {self.status.letters.field!r} in the parsed line",
                        f"use one of {', '.join(names)}",
                    )
                )
        if self.sim.template is None and pr.regex is not None and any(v.signal for v in self.values):
            issues.append(
                DocumentProblem(
                    ("sim", "template"),
                    "firmware_sim cannot write a line from a regex",
                    'add sim: {template: "...{field}..."} with a placeholder per field',
                )
            )
        _check_duplicates(self, issues)
        if issues:
            raise SemanticErrors(issues)
        return self

    def value(self, parameter: str) -> AsciiValueSpec:
        for v in self.values:
            if v.parameter == parameter:
                return v
        raise KeyError(parameter)

    @property
    def parameters(self) -> list[str]:
        return [v.parameter for v in self.values]


#: Any analyzer profile (``protocol`` tells which).
Profile = Union[AnalyzerProfile, SerialAsciiProfile]  # noqa: UP007
PROTOCOLS = ("modbus", "serial_ascii")


def float32_round(x: float) -> float:
    """The float32 nearest to x, as a Python float."""
    return struct.unpack(">f", struct.pack(">f", x))[0]


# --------------------------------------------------------------------------- #
# Station file
# --------------------------------------------------------------------------- #


class StationInfo(_Strict):
    id: Annotated[str, Field(pattern=STATION_ID_RE)]
    name: str = ""
    kind: StationKind


#: A profile file's name ends in one of these; a name in a station file is looked up as ``<name>.yaml``.
PROFILE_FILE_SUFFIXES = (".yaml", ".yml")
_NAME_PATTERN = re.compile(NAME_RE)


#: The longest live window a station may choose (station file ``live_batch_s``): five minutes, the TT10
#: cycle; a longer one would hold live data back longer than the regulation's own files do.
MAX_LIVE_BATCH_S = 300.0


def _live_batch_s(seconds: float) -> float:
    if not 0 <= seconds <= MAX_LIVE_BATCH_S:  # also refuses .nan and .inf
        raise config_error(
            f"{seconds:g} is outside 0..{MAX_LIVE_BATCH_S:g} seconds",
            f"write 0 (the default: one message per poll) or the seconds of polls to seal into one message,"
            f" at most {MAX_LIVE_BATCH_S:g} (each second added is a second of delay for live data;"
            " see edge_agent/README.md, Live batches)",
        )
    return seconds


def is_profile_path(reference: str) -> bool:
    """A station file's ``profile:`` is a path (relative to the station file's folder, or absolute) when
    it holds a slash or ends in .yaml/.yml; otherwise it is a name looked up in the profile search path."""
    return "/" in reference or "\\" in reference or reference.endswith(PROFILE_FILE_SUFFIXES)


def _profile_reference(reference: str) -> str:
    if is_profile_path(reference):
        if reference.startswith("~"):
            raise config_error(
                f"{reference!r}: ~ is not expanded (the agent may run as another user)",
                "write the full path, e.g. /etc/quantrac/profiles/model.yaml, or one relative to the station file",
            )
        if not reference.endswith(PROFILE_FILE_SUFFIXES):
            raise config_error(
                f"{reference!r} is a path but does not end in .yaml",
                "write the profile file's whole name, e.g. profiles/model.yaml",
            )
        if len(reference) > 4096:
            raise config_error("the path is longer than 4096 characters", "use a shorter path")
        return reference
    if not _NAME_PATTERN.match(reference):
        raise config_error(
            f"{reference!r} is neither a profile name nor a path to a .yaml file",
            "write a name (1-64 characters of A-Z a-z 0-9 _ . -) looked up in the profile folders,"
            " or a path such as profiles/model.yaml (relative to this file) or /etc/quantrac/profiles/model.yaml",
        )
    return reference


class _DeviceBase(_Strict):
    id: Annotated[str, Field(pattern=NAME_RE)]
    #: a profile name (looked up in the search path) or a path to a profile file; after load_station,
    #: always the name of the profile it resolved to (see StationConfig.profile_file)
    profile: Annotated[str, Field(min_length=1), AfterValidator(_profile_reference)]
    timeout_s: float = Field(default=1.0, gt=0, le=60)


class ModbusTcpDevice(_DeviceBase):
    transport: Literal["modbus_tcp"]
    host: Annotated[str, Field(min_length=1)]
    port: int = Field(default=502, ge=1, le=65535)
    unit_id: int = Field(default=1, ge=0, le=255)


SERIAL_PORT_RE = r"^/[^\s]*$"
Parity = Literal["N", "E", "O"]


class _SerialDevice(_DeviceBase):
    #: the serial device; prefer /dev/serial/by-id/... (stable across reboots and replugging)
    port: Annotated[str, Field(pattern=SERIAL_PORT_RE, max_length=255)]
    baud: int = Field(ge=300, le=921600)
    parity: Parity
    stop_bits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8
    #: a garbled or truncated reply is asked again this many times (a timeout is not: see sources/README.md)
    retries: int = Field(default=1, ge=0, le=5)
    #: after this many polls in a row without an answer the device is isolated ...
    isolate_after: int = Field(default=3, ge=1, le=1000)
    #: ... and then tried only every this many poll cycles, until it answers again
    isolated_poll_every: int = Field(default=10, ge=1, le=10000)

    @property
    def line_settings(self) -> tuple[int, str, int, int]:
        return (self.baud, self.parity, self.stop_bits, self.bytesize)

    @property
    def framing(self) -> str:
        """e.g. "9600 8E1"."""
        return f"{self.baud} {self.bytesize}{self.parity}{self.stop_bits}"


class ModbusRtuDevice(_SerialDevice):
    transport: Literal["modbus_rtu"]
    unit_id: int = Field(ge=1, le=247)  # 0 is broadcast (no reply); 248..255 are reserved
    #: extra silence before each request to this slave, on top of the 3.5-character gap
    #: (slow RS-485 converters or slaves that need time to release the line)
    turnaround_delay_s: float = Field(default=0.0, ge=0.0, le=1.0)


class SerialAsciiDevice(_SerialDevice):
    transport: Literal["serial_ascii"]


DeviceConfig = Annotated[Union[ModbusTcpDevice, ModbusRtuDevice, SerialAsciiDevice], Field(discriminator="transport")]  # noqa: UP007
AnyDevice = Union[ModbusTcpDevice, ModbusRtuDevice, SerialAsciiDevice]  # noqa: UP007
SERIAL_TRANSPORTS = ("modbus_rtu", "serial_ascii")
TRANSPORT_PROTOCOL = {"modbus_tcp": "modbus", "modbus_rtu": "modbus", "serial_ascii": "serial_ascii"}


class ClockConfig(_Strict):
    """How the agent checks the station PC's clock (edge_agent/clock.py)."""

    source: Literal["sntp", "chrony"] = "sntp"
    server: Annotated[str, Field(min_length=1)] | None = None  # sntp: host or host:port
    max_offset_s: float = Field(default=2.0, gt=0, le=3600)
    check_every_s: float = Field(default=300.0, ge=1, le=86400)
    timeout_s: float = Field(default=1.0, gt=0, le=30)


#: The TT10 name forms and modes; the same words as broker_bridge.tt10 (names.NAME_FORMS, cycles.MODES),
#: which this package may not import: tests/edge_agent/test_tt10_out_config.py keeps them equal.
Tt10NameForm = Literal["tinh_coso_tram", "doubled_underscore", "no_separator"]
Tt10Mode = Literal["mean", "each"]
TT10_DIR_FIELDS = ("station", "prefix", "yyyy", "MM", "dd", "HH")
_DAY_S = 86_400


class Tt10Target(_Strict):
    """A province server the agent delivers TT10 files to (edge_agent/tt10_out/README.md)."""

    name: Annotated[str, Field(pattern=NAME_RE)]  # the target's id, unique in the station: the queue's key
    protocol: Literal["ftp", "ftps", "sftp"]  # ftps: explicit TLS (AUTH TLS), protected data channel
    host: Annotated[str, Field(min_length=1)]
    port: int | None = Field(default=None, ge=1, le=65535)  # default 21 (ftp, ftps) or 22 (sftp)
    user: Annotated[str, Field(min_length=1)]
    password_file: Annotated[str, Field(min_length=1)]  # a file holding the password, mode 0600; never the password
    #: where files go, in Vietnam local time of the cycle's end: {station} {prefix} {yyyy} {MM} {dd} {HH}
    remote_dir: str = "{station}/{yyyy}/{MM}/{dd}"
    prefix: Annotated[str, Field(pattern=STATION_ID_RE)] | None = None  # <Tinh>_<CoSo>_<Tram>; default: station id
    name_form: Tt10NameForm = "tinh_coso_tram"
    cycle_s: int = Field(default=300, ge=1, le=_DAY_S)  # must divide a day
    mode: Tt10Mode = "mean"
    decimals: int | None = Field(default=None, ge=0, le=12)  # None: the exact value (shortest text)
    devices: list[Annotated[str, Field(pattern=NAME_RE)]] = []  # empty: every device
    #: wait this long after a cycle's end before writing its file (its last poll's readings committed)
    settle_s: float = Field(default=10.0, ge=0, le=600)
    timeout_s: float = Field(default=30.0, gt=0, le=600)
    retry_min_s: float = Field(default=5.0, gt=0, le=3600)  # back-off after a failed upload, doubling ...
    retry_max_s: float = Field(default=300.0, gt=0, le=86400)  # ... up to this
    retention_days: float = Field(default=60.0, gt=0, le=3650)  # sent files are kept this long (the regulation: 60)
    passive: bool = True  # FTP/FTPS passive mode (through NAT and firewalls)
    tls_ca: Annotated[str, Field(min_length=1)] | None = None  # ftps: CA file for the server's certificate
    known_hosts: Annotated[str, Field(min_length=1)] | None = None  # sftp: OpenSSH known_hosts with the host's key

    @property
    def effective_port(self) -> int:
        return self.port or (22 if self.protocol == "sftp" else 21)


class StationConfig(_Strict):
    station: StationInfo
    poll_interval_s: float = Field(default=60.0, gt=0, le=3600)
    # Seconds of live polls sealed into one signed batch (edge_agent/live_window.py); 0: one batch per poll.
    live_batch_s: Annotated[float, AfterValidator(_live_batch_s)] = 0.0
    devices: Annotated[list[DeviceConfig], Field(min_length=1)]
    clock: ClockConfig | None = None
    tt10_out: list[Tt10Target] = []  # province servers the agent also delivers TT10 files to
    _profiles: dict[str, Any] = PrivateAttr(default_factory=dict)
    _profile_files: dict[str, str] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> StationConfig:
        issues: list[DocumentProblem] = []
        ids: dict[str, int] = {}
        endpoints: dict[tuple[str, int, int], int] = {}
        ports: dict[str, int] = {}  # serial port -> first device on it
        units: dict[tuple[str, int], int] = {}
        for i, d in enumerate(self.devices):
            if d.id in ids:
                issues.append(
                    DocumentProblem(
                        ("devices", i, "id"),
                        f"device id {d.id!r} is already used by devices[{ids[d.id]}]",
                        "give every device of a station its own id",
                    )
                )
            else:
                ids[d.id] = i
            if isinstance(d, ModbusTcpDevice):
                key = (d.host, d.port, d.unit_id)
                if key in endpoints:
                    issues.append(
                        DocumentProblem(
                            ("devices", i, "unit_id"),
                            f"devices[{endpoints[key]}] already answers at {d.host}:{d.port} unit {d.unit_id}",
                            "two analyzers behind one host:port need different unit_id values",
                        )
                    )
                else:
                    endpoints[key] = i
                continue
            first = ports.setdefault(d.port, i)
            if first == i:
                if isinstance(d, ModbusRtuDevice):
                    units[(d.port, d.unit_id)] = i
                continue
            other = self.devices[first]
            assert isinstance(other, _SerialDevice)
            if isinstance(d, SerialAsciiDevice) or isinstance(other, SerialAsciiDevice):
                issues.append(
                    DocumentProblem(
                        ("devices", i, "port"),
                        f"devices[{first}] ({other.id}, {other.transport}) already uses {d.port}",
                        (
                            "a serial ASCII analyzer needs a port of its own; "
                            "several devices may share a port only as Modbus RTU slaves"
                        ),
                    )
                )
                continue
            for field, mine, theirs in zip(
                ("baud", "parity", "stop_bits", "bytesize"), d.line_settings, other.line_settings
            ):
                if mine != theirs:
                    issues.append(
                        DocumentProblem(
                            ("devices", i, field),
                            (
                                f"{field} {mine} differs from devices[{first}] ({other.id}) "
                                f"on the same port {d.port} ({other.framing})"
                            ),
                            (
                                "every slave on one RS-485 bus uses the bus's settings: "
                                f"set {field}: {theirs} here and in the analyzer's menu"
                            ),
                        )
                    )
            assert isinstance(d, ModbusRtuDevice)
            if (d.port, d.unit_id) in units:
                issues.append(
                    DocumentProblem(
                        ("devices", i, "unit_id"),
                        f"devices[{units[(d.port, d.unit_id)]}] already is unit {d.unit_id} on {d.port}",
                        "two slaves on one bus need different unit ids (set it in the analyzer's menu)",
                    )
                )
            else:
                units[(d.port, d.unit_id)] = i
        if self.clock is not None and self.clock.source == "sntp" and not self.clock.server:
            issues.append(
                DocumentProblem(
                    ("clock", "server"),
                    "clock source sntp needs a server",
                    "add server: pool.ntp.org (or your NTP server's host[:port]), or source: chrony",
                )
            )
        issues.extend(_check_tt10_targets(self))
        if issues:
            raise SemanticErrors(issues)
        return self

    @property
    def id(self) -> str:
        return self.station.id

    @property
    def profiles(self) -> dict[str, Any]:
        """Resolved analyzer profiles by name (filled by load_station / with_profiles)."""
        return dict(self._profiles)

    def device(self, device_id: str) -> AnyDevice:
        for d in self.devices:
            if d.id == device_id:
                return d
        raise KeyError(f"station {self.station.id} has no device {device_id!r}")

    def profile_for(self, device_id: str) -> Any:
        name = self.device(device_id).profile
        try:
            return self._profiles[name]
        except KeyError:
            raise KeyError(
                f"profile {name!r} of device {device_id!r} is not resolved; load the station with load_station()"
            ) from None

    def profile_file(self, device_id: str) -> str | None:
        """The file the device's profile was loaded from (None when given in code, not loaded)."""
        return self._profile_files.get(self.device(device_id).profile)

    def with_profiles(self, profiles: dict[str, Any], files: dict[str, str] | None = None) -> StationConfig:
        copy = self.model_copy()
        copy._profiles = dict(profiles)
        copy._profile_files = dict(files or {})
        return copy

    def with_port_overrides(self, ports: dict[str, int] | None = None, *, host: str | None = None) -> StationConfig:
        """A copy with some devices moved to other ports (and optionally another host).

        Used by the demo and the tests, which run simulators on free ports.
        Unknown device ids raise KeyError.
        """
        ports = dict(ports or {})
        for device_id, port in ports.items():
            if not 1 <= int(port) <= 65535:
                raise ValueError(f"port {port} for device {device_id!r} is outside 1..65535")
        unknown = set(ports) - {d.id for d in self.devices}
        if unknown:
            raise KeyError(f"station {self.station.id} has no device(s) {sorted(unknown)}")
        serial = sorted(d.id for d in self.devices if d.id in ports and not isinstance(d, ModbusTcpDevice))
        if serial:
            raise ValueError(
                f"device(s) {', '.join(serial)} of station {self.station.id} are on serial ports; "
                "port overrides move TCP devices only"
            )
        devices = []
        for d in self.devices:
            update: dict[str, Any] = {}
            if d.id in ports:
                update["port"] = int(ports[d.id])
            if host is not None and hasattr(d, "host"):
                update["host"] = host
            devices.append(d.model_copy(update=update) if update else d)
        copy = StationConfig.model_validate(
            {
                "station": self.station,
                "poll_interval_s": self.poll_interval_s,
                "live_batch_s": self.live_batch_s,
                "devices": devices,
                "clock": self.clock,
                "tt10_out": self.tt10_out,
            }
        )
        copy._profiles = dict(self._profiles)
        copy._profile_files = dict(self._profile_files)
        return copy

    def with_device_updates(self, updates: dict[str, dict[str, Any]], **station_fields: Any) -> StationConfig:
        """A copy with some device fields changed, e.g. ``{"t400": {"port": "/tmp/x/bus0"}}``,
        and optionally station fields (``poll_interval_s=0.5``). Checked like a station file."""
        unknown = set(updates) - {d.id for d in self.devices}
        if unknown:
            raise KeyError(f"station {self.station.id} has no device(s) {sorted(unknown)}")
        doc = self.model_dump()
        for d in doc["devices"]:
            d.update(updates.get(d["id"], {}))
        doc.update(station_fields)
        copy = StationConfig.model_validate(doc)
        copy._profiles = dict(self._profiles)
        copy._profile_files = dict(self._profile_files)
        return copy


def _check_tt10_targets(station: StationConfig) -> list[DocumentProblem]:
    issues: list[DocumentProblem] = []
    names: dict[str, int] = {}
    device_ids = {d.id for d in station.devices}
    for i, t in enumerate(station.tt10_out):
        if t.name in names:
            issues.append(
                DocumentProblem(
                    ("tt10_out", i, "name"),
                    f"target name {t.name!r} is already used by tt10_out[{names[t.name]}]",
                    "give every TT10 target its own name (it keys the upload queue)",
                )
            )
        names.setdefault(t.name, i)
        if _DAY_S % t.cycle_s:
            issues.append(
                DocumentProblem(
                    ("tt10_out", i, "cycle_s"),
                    f"cycle {t.cycle_s} s does not divide a day, so cycles would not line up with hours",
                    "use 300 (5 minutes, the usual), 60, 600, 900, 1800 or 3600",
                )
            )
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(t.remote_dir) if f is not None]
        except ValueError as exc:
            fields = []
            issues.append(
                DocumentProblem(("tt10_out", i, "remote_dir"), f"{t.remote_dir!r}: {exc}", "write {yyyy}/{MM}/{dd}")
            )
        for f in fields:
            if f not in TT10_DIR_FIELDS:
                issues.append(
                    DocumentProblem(
                        ("tt10_out", i, "remote_dir"),
                        f"{{{f}}} in {t.remote_dir!r} is not a known field",
                        "use only " + ", ".join("{" + x + "}" for x in TT10_DIR_FIELDS),
                    )
                )
        for j, device in enumerate(t.devices):
            if device not in device_ids:
                issues.append(
                    DocumentProblem(
                        ("tt10_out", i, "devices", j),
                        f"no device {device!r} in this station",
                        f"use one of {', '.join(sorted(device_ids))}",
                    )
                )
        if t.retry_max_s < t.retry_min_s:
            issues.append(
                DocumentProblem(
                    ("tt10_out", i, "retry_max_s"),
                    f"retry_max_s {t.retry_max_s} is below retry_min_s {t.retry_min_s}",
                    "make retry_max_s at least retry_min_s",
                )
            )
    return issues
