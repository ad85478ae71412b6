"""Pydantic models of analyzer profiles and station files.

An *analyzer profile* describes a model of analyzer (its Modbus map) and is
shared by every station that has one. A *station file* says which analyzers
sit where (transport, host, port, unit id). See station_profiles/README.md.

Structural checks (types, allowed values, unknown keys) are pydantic's; the
checks that need the whole document (address conversion, overlaps, duplicate
parameters, ...) run in ``model_validator(mode="after")`` and raise
:class:`SemanticErrors`, which carries the exact path of each problem so the
loader can point at the YAML line. :class:`SemanticErrors` deliberately is
*not* a ``ValueError``: pydantic must let it through unwrapped.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

Table = Literal["coil", "discrete_input", "input_register", "holding_register"]
ValueType = Literal["bool", "int16", "uint16", "int32", "uint32", "float32", "float64"]
WordOrder = Literal["ABCD", "CDAB", "BADC", "DCBA"]
StatusCode = Literal["00", "01", "02"]
AddressBase = Literal[0, 1, "4xxxx"]

TABLES: tuple[str, ...] = ("coil", "discrete_input", "input_register", "holding_register")
BIT_TABLES = frozenset({"coil", "discrete_input"})
REGISTER_TABLES = frozenset({"input_register", "holding_register"})
INTEGER_TYPES = frozenset({"int16", "uint16", "int32", "uint32"})
FLOAT_TYPES = frozenset({"float32", "float64"})

#: Width of each type: registers for register tables, bits for bit tables.
TYPE_WIDTH: dict[str, int] = {
    "bool": 1,
    "int16": 1,
    "uint16": 1,
    "int32": 2,
    "uint32": 2,
    "float32": 2,
    "float64": 4,
}
INT_LIMITS: dict[str, tuple[int, int]] = {
    "int16": (-(1 << 15), (1 << 15) - 1),
    "uint16": (0, (1 << 16) - 1),
    "int32": (-(1 << 31), (1 << 31) - 1),
    "uint32": (0, (1 << 32) - 1),
}

#: Modicon reference prefix of each table ("4xxxx" numbering).
MODICON_PREFIX: dict[str, int] = {"coil": 0, "discrete_input": 1, "input_register": 3, "holding_register": 4}
_PREFIX_TABLE = {v: k for k, v in MODICON_PREFIX.items()}

MAX_REGISTERS_PER_READ = 125  # FC03/FC04 limit of the Modbus spec
MAX_BITS_PER_READ = 2000  # FC01/FC02 limit of the Modbus spec

NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
STATION_ID_RE = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"  # = broker_bridge.topics.STATION_ID_PATTERN
PARAMETER_RE = r"^[^\s]{1,64}$"  # regulation symbols, e.g. "PM2,5" (with a comma), "NOx"

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class Issue:
    """One semantic problem: where (a path into the document), what, and how to fix it."""

    loc: Loc
    message: str
    fix: str


class SemanticErrors(Exception):
    """Whole-document checks failed. Not a ValueError on purpose (see module doc)."""

    def __init__(self, issues: list[Issue]) -> None:
        self.issues = issues
        super().__init__("; ".join(f"{format_loc(i.loc)}: {i.message} (fix: {i.fix})" for i in issues))


def format_loc(loc: Loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(document)"


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
    signal: SignalHint | None = None
    _wire: int = PrivateAttr(default=-1)

    @property
    def wire_address(self) -> int:
        """0-based address sent on the wire (the PDU address)."""
        return self._wire

    @property
    def width(self) -> int:
        return TYPE_WIDTH[self.type]


class StatusSpec(_Strict):
    """One register (or bit) whose raw value maps to the regulation's status code and a cause."""

    table: Table
    address: int | str
    type: Literal["bool", "int16", "uint16", "int32", "uint32"] = "uint16"
    word_order: WordOrder = "ABCD"
    codes: dict[int, tuple[StatusCode, Annotated[str, Field(max_length=200)]]]
    #: what an unlisted raw value means; "{raw}" is replaced by the raw value
    unknown: tuple[StatusCode, Annotated[str, Field(max_length=200)]] = ("02", "unknown status code {raw}")
    _wire: int = PrivateAttr(default=-1)

    @property
    def wire_address(self) -> int:
        return self._wire

    @property
    def width(self) -> int:
        return TYPE_WIDTH[self.type]

    def interpret(self, raw: int) -> tuple[str, str]:
        """Raw register value -> (status code, cause)."""
        if raw in self.codes:
            code, cause = self.codes[raw]
            return code, cause
        code, cause = self.unknown
        return code, cause.replace("{raw}", str(raw))

    @property
    def normal_raw(self) -> int:
        """The raw value meaning "measuring" (what a healthy analyzer reports)."""
        for raw, (code, _) in sorted(self.codes.items()):
            if code == "00":
                return raw
        return min(self.codes)


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
        issues: list[Issue] = []
        for i, v in enumerate(self.values):
            wire = _wire_address(self.address_base, v.table, v.address, ("values", i, "address"), issues)
            v._wire = wire
            _check_value(v, ("values", i), issues)
        if self.status is not None:
            s = self.status
            s._wire = _wire_address(self.address_base, s.table, s.address, ("status", "address"), issues)
            _check_type_table(s.type, s.table, ("status",), issues)
            if not s.codes:
                issues.append(Issue(("status", "codes"), "no status codes", 'map raw values, e.g. {0: ["00", ""], 1: ["01", "zero calibration"]}'))
            elif s.type in INT_LIMITS or s.type == "bool":
                lo, hi = INT_LIMITS.get(s.type, (0, 1))
                for raw in s.codes:
                    if not lo <= raw <= hi:
                        issues.append(Issue(("status", "codes", raw), f"raw code {raw} does not fit {s.type}", f"use {lo}..{hi}"))
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


def _wire_address(base: Any, table: str, address: int | str, loc: Loc, issues: list[Issue]) -> int:
    """Convert a manual's address to the 0-based PDU address (-1 if invalid)."""
    if base == "4xxxx":
        return _modicon(table, address, loc, issues)
    if isinstance(address, str):
        if not address.isdigit():
            issues.append(Issue(loc, f"address {address!r} is not a number", "write the register number as an integer"))
            return -1
        address = int(address)
    if base == 1:
        if not 1 <= address <= 65536:
            issues.append(Issue(loc, f"address {address} is outside 1..65536 (address_base: 1 counts from 1)", "use the manual's 1-based number, or set address_base: 0 if the manual counts from 0"))
            return -1
        return address - 1
    if not 0 <= address <= 65535:
        issues.append(Issue(loc, f"address {address} is outside 0..65535", "use the 0-based PDU address, or set address_base: 1 / \"4xxxx\" to match the manual's numbering"))
        return -1
    return address


def _modicon(table: str, address: int | str, loc: Loc, issues: list[Issue]) -> int:
    expected = MODICON_PREFIX[table]
    if isinstance(address, str):
        if not address.isdigit() or len(address) not in (5, 6):
            issues.append(Issue(loc, f"address {address!r} is not a 5- or 6-digit Modicon reference", f'write e.g. {expected}0001 or "{expected}00001"'))
            return -1
        digits = address
    else:
        if address < 0:
            issues.append(Issue(loc, f"address {address} is negative", f"write e.g. {expected}0001"))
            return -1
        digits = f"{address:05d}" if address < 100000 else str(address)
        if len(digits) > 6:
            issues.append(Issue(loc, f"address {address} is not a 5- or 6-digit Modicon reference", f"write e.g. {expected}0001"))
            return -1
    prefix, number = int(digits[0]), int(digits[1:])
    if prefix != expected:
        other = _PREFIX_TABLE.get(prefix)
        what = f"{'an' if other[0] in 'aeiou' else 'a'} {other} number ({prefix}xxxx)" if other else f"not a valid Modicon reference (prefix {prefix})"
        issues.append(Issue(loc, f"address {address} is {what} but table is {table}", f"use {expected}xxxx numbers for {table} (e.g. {expected}{1:0{len(digits) - 1}d} for the first one)" + (f", or set table: {other}" if other else "")))
        return -1
    limit = 9999 if len(digits) == 5 else 65536
    if not 1 <= number <= limit:
        issues.append(Issue(loc, f"address {address} is outside {expected}{1:0{len(digits) - 1}d}..{expected}{limit}", "Modicon references count from 1"))
        return -1
    return number - 1


def _check_type_table(vtype: str, table: str, loc: Loc, issues: list[Issue]) -> None:
    if table in BIT_TABLES and vtype != "bool":
        issues.append(Issue(loc + ("type",), f"type {vtype} cannot live in a {table} table (one bit per address)", "use type: bool, or table: input_register / holding_register"))
    if table in REGISTER_TABLES and vtype == "bool":
        issues.append(Issue(loc + ("type",), f"type bool cannot live in a {table} table", "use an integer type (e.g. uint16), or table: coil / discrete_input"))


def _check_value(v: ValueSpec, loc: Loc, issues: list[Issue]) -> None:
    _check_type_table(v.type, v.table, loc, issues)
    if v.scale == 0 or not math.isfinite(v.scale):
        issues.append(Issue(loc + ("scale",), f"scale {v.scale} must be a finite non-zero number", "engineering = raw * scale + offset; use 1.0 for no scaling"))
    if not math.isfinite(v.offset):
        issues.append(Issue(loc + ("offset",), f"offset {v.offset} must be finite", "use 0.0 for no offset"))
    if v.range is not None:
        low, high = v.range
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            issues.append(Issue(loc + ("range",), f"range [{low}, {high}] must have low < high", f"write range: [{min(low, high)}, {max(low, high)}] (the analyzer's measuring range)"))
    if v.type in INT_LIMITS:
        lo, hi = INT_LIMITS[v.type]
        for j, s in enumerate(v.sentinels):
            if not math.isfinite(s) or s != int(s):
                issues.append(Issue(loc + ("sentinels", j), f"sentinel {s} can never be a raw {v.type}", "integer types have integer raw values"))
            elif not lo <= s <= hi:
                issues.append(Issue(loc + ("sentinels", j), f"sentinel {s:g} does not fit {v.type} ({lo}..{hi})", "sentinels are raw values, before scale and offset"))
    if v.type == "float32":
        for j, s in enumerate(v.sentinels):
            if math.isfinite(s) and abs(s) > 3.4028234663852886e38:
                issues.append(Issue(loc + ("sentinels", j), f"sentinel {s} is outside float32", "use a value a float32 can hold"))
    if v.signal is not None and v.signal.min is not None and v.signal.max is not None and v.signal.min > v.signal.max:
        issues.append(Issue(loc + ("signal", "min"), f"signal min {v.signal.min} > max {v.signal.max}", "swap them"))


def _check_duplicates(p: AnalyzerProfile, issues: list[Issue]) -> None:
    seen: dict[str, int] = {}
    for i, v in enumerate(p.values):
        if v.parameter in seen:
            issues.append(Issue(("values", i, "parameter"), f"parameter {v.parameter!r} is already defined by values[{seen[v.parameter]}]", "each parameter appears once per analyzer; remove or rename one"))
        else:
            seen[v.parameter] = i


def _check_overlaps(p: AnalyzerProfile, issues: list[Issue]) -> None:
    spans: list[tuple[str, int, int, Loc, str]] = []
    for i, v in enumerate(p.values):
        if v.wire_address >= 0:
            spans.append((v.table, v.wire_address, v.width, ("values", i, "address"), f"values[{i}] ({v.parameter})"))
    if p.status is not None and p.status.wire_address >= 0:
        spans.append((p.status.table, p.status.wire_address, p.status.width, ("status", "address"), "status"))
    for table in TABLES:
        items = sorted((s for s in spans if s[0] == table), key=lambda s: (s[1], s[3]))
        unit = "bit" if table in BIT_TABLES else "register"
        for (_, a1, w1, _, name1), (_, a2, w2, loc2, name2) in zip(items, items[1:]):
            if a2 < a1 + w1:
                issues.append(Issue(loc2, f"{name2} at {table} {a2} overlaps {name1} ({unit}s {a1}..{a1 + w1 - 1})", f"check the manual; a {w1}-{unit} value at {a1} leaves {a1 + w1} as the next free address"))
        for _, a, w, loc, name in items:
            if a + w > 65536:
                issues.append(Issue(loc, f"{name} at {a} runs past the end of the address space", "check the address"))


def float32_round(x: float) -> float:
    """The float32 nearest to x, as a Python float."""
    return struct.unpack(">f", struct.pack(">f", x))[0]


# --------------------------------------------------------------------------- #
# Station file
# --------------------------------------------------------------------------- #

StationKind = Literal["ambient_air", "wastewater", "stack_emission", "surface_water", "groundwater"]


class StationInfo(_Strict):
    id: Annotated[str, Field(pattern=STATION_ID_RE)]
    name: str = ""
    kind: StationKind


class _DeviceBase(_Strict):
    id: Annotated[str, Field(pattern=NAME_RE)]
    profile: Annotated[str, Field(pattern=NAME_RE)]
    timeout_s: float = Field(default=1.0, gt=0, le=60)


class ModbusTcpDevice(_DeviceBase):
    transport: Literal["modbus_tcp"]
    host: Annotated[str, Field(min_length=1)]
    port: int = Field(default=502, ge=1, le=65535)
    unit_id: int = Field(default=1, ge=0, le=255)


# Issue 3 adds ModbusRtuDevice (transport: modbus_rtu) and SerialAsciiDevice
# (transport: serial_ascii) as further members of this union.
DeviceConfig = Annotated[Union[ModbusTcpDevice], Field(discriminator="transport")]  # noqa: UP007


class StationConfig(_Strict):
    station: StationInfo
    poll_interval_s: float = Field(default=60.0, gt=0, le=3600)
    devices: Annotated[list[DeviceConfig], Field(min_length=1)]
    _profiles: dict[str, AnalyzerProfile] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> StationConfig:
        issues: list[Issue] = []
        ids: dict[str, int] = {}
        endpoints: dict[tuple[str, int, int], int] = {}
        for i, d in enumerate(self.devices):
            if d.id in ids:
                issues.append(Issue(("devices", i, "id"), f"device id {d.id!r} is already used by devices[{ids[d.id]}]", "give every device of a station its own id"))
            else:
                ids[d.id] = i
            if isinstance(d, ModbusTcpDevice):
                key = (d.host, d.port, d.unit_id)
                if key in endpoints:
                    issues.append(Issue(("devices", i, "unit_id"), f"devices[{endpoints[key]}] already answers at {d.host}:{d.port} unit {d.unit_id}", "two analyzers behind one host:port need different unit_id values"))
                else:
                    endpoints[key] = i
        if issues:
            raise SemanticErrors(issues)
        return self

    @property
    def id(self) -> str:
        return self.station.id

    @property
    def profiles(self) -> dict[str, AnalyzerProfile]:
        """Resolved analyzer profiles by name (filled by load_station / with_profiles)."""
        return dict(self._profiles)

    def device(self, device_id: str) -> ModbusTcpDevice:
        for d in self.devices:
            if d.id == device_id:
                return d
        raise KeyError(f"station {self.station.id} has no device {device_id!r}")

    def profile_for(self, device_id: str) -> AnalyzerProfile:
        name = self.device(device_id).profile
        try:
            return self._profiles[name]
        except KeyError:
            raise KeyError(f"profile {name!r} of device {device_id!r} is not resolved; load the station with load_station()") from None

    def with_profiles(self, profiles: dict[str, AnalyzerProfile]) -> StationConfig:
        copy = self.model_copy()
        copy._profiles = dict(profiles)
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
        devices = []
        for d in self.devices:
            update: dict[str, Any] = {}
            if d.id in ports:
                update["port"] = int(ports[d.id])
            if host is not None and hasattr(d, "host"):
                update["host"] = host
            devices.append(d.model_copy(update=update) if update else d)
        copy = StationConfig.model_validate({"station": self.station, "poll_interval_s": self.poll_interval_s, "devices": devices})
        copy._profiles = dict(self._profiles)
        return copy

