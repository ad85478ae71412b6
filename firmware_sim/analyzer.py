"""One simulated Modbus analyzer (transport-independent) and the ground-truth log.

A :class:`SimulatedAnalyzer` holds a profile's register map in memory and
answers ``read(function_code, address, count)``. The Modbus TCP server
(modbus_tcp.py) and the RTU bus (modbus_rtu.py) both call it; neither knows
about signals, status or faults.

Values change: whenever a read request covers *all* registers (or the bit)
of a value, the analyzer draws a fresh value from its signal, encodes it into
its registers and appends what it served to the ground-truth log. A value
only partly inside a request is not refreshed and not logged (the master gets
half of the previous encoding, as from a real device). Status registers and
status bits are served and logged the same way.

The encoder here is written independently of ``edge_agent.codec`` on purpose:
the tests read the simulators with pymodbus's own client and with mbpoll, so a
shared bug cannot hide.
"""

from __future__ import annotations

import json
import math
import os
import struct
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog
from pymodbus.constants import ExcCodes

from station_profiles.profile_model import (
    AnalyzerProfile,
    StatusBit,
    StatusSpec,
    ValueSpec,
)
from vocabulary.modbus import FUNCTION_CODES, INT_LIMITS

from .faults import Fault, FaultSet
from .signals import Signal, stable_seed

log = structlog.get_logger("firmware_sim")

FC_TABLE = {fc: table for table, fc in FUNCTION_CODES.items()}
_STRUCT = {"int16": "h", "uint16": "H", "int32": "i", "uint32": "I", "float32": "f", "float64": "d"}


# --------------------------------------------------------------------------- #
# Encoding (independent of edge_agent.codec)
# --------------------------------------------------------------------------- #


def encode_registers(raw: int | float, vtype: str, word_order: str) -> list[int]:
    """Raw number -> wire registers for the given type and word order."""
    data = struct.pack(">" + _STRUCT[vtype], raw)  # A B C D ... (most significant first)
    words = [data[i : i + 2] for i in range(0, len(data), 2)]
    if word_order in ("BADC", "DCBA"):
        words = [w[::-1] for w in words]
    if word_order in ("CDAB", "DCBA"):
        words.reverse()
    return [int.from_bytes(w, "big") for w in words]


def raw_for(engineering: float, spec: ValueSpec) -> int | float:
    """Engineering value -> the raw number the analyzer would hold (inverse scale/offset)."""
    raw = (engineering - spec.eng_offset) / spec.eng_scale
    if spec.type in INT_LIMITS:
        lo, hi = INT_LIMITS[spec.type]
        return int(min(hi, max(lo, round(raw))))
    if spec.type == "bool":
        return int(raw >= 0.5)
    if spec.type == "float32":
        return struct.unpack(">f", struct.pack(">f", raw))[0]
    return float(raw)


def served_value(raw: int | float, spec: ValueSpec) -> tuple[float | None, str, str | None]:
    """What a correct decoder makes of ``raw``: (engineering value or None, cause,
    status of its own or None to keep the device's)."""
    if isinstance(raw, float) and math.isnan(raw):
        return None, "sentinel NaN", None
    for s in spec.sentinels:
        target = struct.unpack(">f", struct.pack(">f", s))[0] if spec.type == "float32" and math.isfinite(s) else s
        if raw == target:
            return None, f"sentinel {raw:g}" if isinstance(raw, float) else f"sentinel {raw}", None
    if isinstance(raw, float) and math.isinf(raw):
        return None, f"non-finite value {raw}", None
    if spec.loop is not None:
        why = spec.loop.fault(raw)
        if why:
            return None, why, "02"
    return float(raw) * spec.eng_scale + spec.eng_offset, "", None


MAX_CAUSE = 256  # the wire contract's limit; a correct agent shortens longer causes the same way


def join_causes(*parts: str) -> str:
    cause = "; ".join(p for p in parts if p)
    return cause if len(cause) <= MAX_CAUSE else cause[: MAX_CAUSE - 3] + "..."


# --------------------------------------------------------------------------- #
# Ground-truth log
# --------------------------------------------------------------------------- #


class TruthLog:
    """Append-only JSON-lines file; one write + flush per request. Thread-safe."""

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.path = Path(path) if path is not None else None
        self._lock = threading.Lock()
        self._fh = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def write(self, entries: Sequence[dict[str, Any]]) -> None:
        if self._fh is None or not entries:
            return
        text = "".join(json.dumps(e, ensure_ascii=False, allow_nan=False) + "\n" for e in entries)
        with self._lock:
            self._fh.write(text)
            self._fh.flush()

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None


def read_truth(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Parse a ground-truth log (for tests and tools)."""
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


# --------------------------------------------------------------------------- #
# Shared by the Modbus and the ASCII analyzers: status conditions and faults
# --------------------------------------------------------------------------- #


class _FaultHooks:
    """set_fault/clear_fault bookkeeping and the truth-line "fault" field."""

    faults: FaultSet
    log: Any

    def set_fault(self, kind: str, **params: Any) -> Fault:
        fault = Fault(kind, **params)
        self._check_fault(fault)
        self.faults.add(fault)
        self._fault_started(fault)
        self.log.info("sim.fault_set", fault=kind, **{k: v for k, v in params.items() if v is not None})
        return fault

    def clear_fault(self, kind: str | None = None, parameter: str | None = None) -> None:
        for fault in self.faults.remove(kind, parameter):
            self._fault_ended(fault)
            self.log.info("sim.fault_cleared", fault=fault.kind, parameter=fault.parameter)

    def take_transport_fault(self) -> Fault | None:
        return self.faults.take_transport()

    def _fault_names(self, transport: Fault | None = None) -> str:
        kinds = [f.kind for f in self.faults.active() if f.kind in ("calibration", "device_error")]
        if transport is not None:
            kinds.append(transport.kind)
        return ",".join(dict.fromkeys(kinds))

    def _check_fault(self, fault: Fault) -> None:  # pragma: no cover - overridden
        pass

    def _fault_started(self, fault: Fault) -> None:  # pragma: no cover - overridden
        pass

    def _fault_ended(self, fault: Fault) -> None:  # pragma: no cover - overridden
        pass


# --------------------------------------------------------------------------- #
# One simulated Modbus analyzer
# --------------------------------------------------------------------------- #


class _Item:
    __slots__ = ("spec", "table", "address", "width", "signal", "forced", "held", "last_raw", "kind")

    def __init__(self, spec: ValueSpec | StatusSpec | StatusBit, signal: Signal | None, kind: str) -> None:
        self.spec = spec
        self.table = spec.table
        self.address = spec.wire_address
        self.width = spec.width
        self.signal = signal
        self.forced: int | float | None = None
        self.held: int | float | None = None  # calibration: the value frozen at the window's start
        self.last_raw: int | float | None = None
        self.kind = kind  # value | status | bit | bitreg


class SimulatedAnalyzer(_FaultHooks):
    """Serves one Modbus analyzer profile under one unit id."""

    def __init__(
        self,
        station_id: str,
        device_id: str,
        unit_id: int,
        profile: AnalyzerProfile,
        *,
        seed: int = 0,
        truth: TruthLog | None = None,
    ) -> None:
        self.station_id = station_id
        self.device_id = device_id
        self.unit_id = unit_id
        self.profile = profile
        self.truth = truth or TruthLog(None)
        self.log = log.bind(station=station_id, device=device_id, unit_id=unit_id)
        self.faults = FaultSet()
        self.latest: dict[str, float] = {}  # engineering values last served, for correlated signals
        self._items: list[_Item] = []
        for spec in profile.values:
            fallback = spec.range[0] + 0.1 * (spec.range[1] - spec.range[0]) if spec.range else 0.0
            sig = Signal.from_hint(
                spec.signal, seed=stable_seed(seed, station_id, device_id, spec.parameter), fallback_base=fallback
            )
            self._items.append(_Item(spec, sig, "value"))
        # Parameters others are a fraction of are drawn first within a request.
        self._sample_order = sorted(
            self._items, key=lambda it: 1 if it.spec.signal is not None and it.spec.signal.fraction_of else 0
        )  # type: ignore[union-attr]
        status = profile.status
        self._status: _Item | None = (
            _Item(status, None, "status") if status is not None and status.has_register else None
        )
        self._status_raw: int | None = None  # None: the normal "measuring" code
        self._bits: tuple[int, ...] = status.normal_bits if status is not None else ()
        self._forced_bits: tuple[int, ...] | None = None
        self._bit_items: list[_Item] = []
        self._bitreg_items: dict[tuple[str, int], _Item] = {}
        if status is not None:
            for b in status.bits:
                if b.table in ("coil", "discrete_input"):
                    self._bit_items.append(_Item(b, None, "bit"))
                elif (b.table, b.wire_address) not in self._bitreg_items:
                    self._bitreg_items[(b.table, b.wire_address)] = _Item(b, None, "bitreg")
        self.memory: dict[str, dict[int, int]] = {t: {} for t in FC_TABLE.values()}
        defined: dict[str, set[int]] = {t: set() for t in FC_TABLE.values()}
        for item in self._all_items():
            for a in range(item.address, item.address + item.width):
                defined[item.table].add(a)
                self.memory[item.table][a] = 0
        self.readable = {t: self._with_gaps(addrs, profile.max_read_gap) for t, addrs in defined.items()}
        # Initial content, so a read of half a value still returns a consistent half.
        now = time.time()
        for item in self._sample_order:
            raw = raw_for(self._sample(item, now), item.spec)  # type: ignore[arg-type]
            self._store(item, raw)
            self.latest[item.spec.parameter] = float(raw) * item.spec.eng_scale + item.spec.eng_offset  # type: ignore[union-attr]
        self._store_status()

    # -- state ------------------------------------------------------------------
    @property
    def status_raw(self) -> int:
        if self._status_raw is not None:
            return self._status_raw
        return self.profile.status.normal_raw if self.profile.status else 0

    @property
    def bit_values(self) -> tuple[int, ...]:
        return self._forced_bits if self._forced_bits is not None else self._bits

    def set_status(self, raw: int | None) -> None:
        """Force the status code register to ``raw`` (None: back to normal measuring)."""
        if self.profile.status is None or not self.profile.status.has_register:
            raise ValueError(f"profile {self.profile.profile} has no status code register")
        self._status_raw = raw
        self._store_status()
        code, cause = self.status()
        self.log.info("sim.status_set", raw=self.status_raw, status=code, cause=cause)

    def set_bits(self, values: Sequence[int] | dict[int, int] | None) -> None:
        """Force the status bits (one value per profile ``status.bits`` entry, or {index: value}); None: normal."""
        if self.profile.status is None or not self.profile.status.bits:
            raise ValueError(f"profile {self.profile.profile} has no status bits")
        if values is None:
            self._forced_bits = None
        else:
            if isinstance(values, dict):
                bits = list(self._bits)
                for i, v in values.items():
                    bits[i] = int(bool(v))
            else:
                bits = [int(bool(v)) for v in values]
            if len(bits) != len(self._bits):
                raise ValueError(f"expected {len(self._bits)} bit values")
            self._forced_bits = tuple(bits)
        self._store_status()
        code, cause = self.status()
        self.log.info("sim.status_set", bits=list(self.bit_values), status=code, cause=cause)

    def force_raw(self, parameter: str, raw: int | float | None) -> None:
        """Serve ``raw`` (e.g. -9999.0 or NaN) for ``parameter`` instead of the signal (None: back to the signal)."""
        self._item(parameter).forced = raw

    def status(self) -> tuple[str, str]:
        if self.profile.status is None:
            return "00", ""
        raw = self.status_raw if self.profile.status.has_register else None
        return self.profile.status.evaluate(raw, self.bit_values)

    # -- faults -----------------------------------------------------------------
    def _condition(self, code: str, which: str) -> tuple[str, Any]:
        """The status register code or bit that says ``code`` with ``which`` in its cause."""
        st = self.profile.status
        if st is None:
            raise ValueError(f"profile {self.profile.profile} has no status to report a {code} condition with")
        for raw, (c, cause) in sorted(st.codes.items()):
            if c == code and which in cause:
                return "code", raw
        for i, b in enumerate(st.bits):
            if b.status == code and which in b.cause:
                return "bit", i
        raise ValueError(f"profile {self.profile.profile} has no status {code} condition mentioning {which!r}")

    def _check_fault(self, fault: Fault) -> None:
        if fault.kind == "calibration":
            self._condition("01", fault.which)
        elif fault.kind == "device_error":
            self._condition("02", fault.which)
        elif fault.parameter is not None:
            item = self._item(fault.parameter)
            if fault.kind == "burnout" and item.spec.loop is None:  # type: ignore[union-attr]
                raise ValueError(f"{fault.parameter} is not a 4-20 mA loop value")

    def _fault_started(self, fault: Fault) -> None:
        if fault.kind in ("calibration", "device_error"):
            how, which = self._condition("01" if fault.kind == "calibration" else "02", fault.which)
            if how == "code":
                self._status_raw = which
            else:
                bits = list(self.bit_values)
                bits[which] = self.profile.status.bits[which].active  # type: ignore[union-attr]
                self._forced_bits = tuple(bits)
            self._store_status()
        if fault.kind == "calibration":
            for item in self._value_items():  # an analyzer holds its outputs while it calibrates
                item.held = item.last_raw
        if fault.kind == "stuck":
            item = self._item(fault.parameter or "")
            item.held = item.last_raw

    def _fault_ended(self, fault: Fault) -> None:
        if fault.kind in ("calibration", "device_error"):
            self._status_raw = None
            self._forced_bits = None
            self._store_status()
        if fault.kind == "calibration":
            for item in self._value_items():
                if self.faults.get("stuck", item.spec.parameter) is None:  # type: ignore[union-attr]
                    item.held = None
        if fault.kind == "stuck":
            self._item(fault.parameter or "").held = None

    # -- serving ----------------------------------------------------------------
    def _item(self, parameter: str) -> _Item:
        for item in self._items:
            if item.spec.parameter == parameter:  # type: ignore[union-attr]
                return item
        raise KeyError(parameter)

    def _value_items(self) -> list[_Item]:
        return self._items

    def _all_items(self) -> list[_Item]:
        out = list(self._items)
        if self._status is not None:
            out.append(self._status)
        return out + self._bit_items + list(self._bitreg_items.values())

    @staticmethod
    def _with_gaps(addrs: set[int], max_gap: int) -> frozenset[int]:
        out = set(addrs)
        if max_gap > 0 and addrs:
            ordered = sorted(addrs)
            for a, b in zip(ordered, ordered[1:]):
                if 1 < b - a <= max_gap + 1:
                    out.update(range(a + 1, b))
        return frozenset(out)

    def _sample(self, item: _Item, t_s: float) -> float:
        spec: ValueSpec = item.spec  # type: ignore[assignment]
        value = item.signal.sample(t_s)  # type: ignore[union-attr]
        if spec.signal is not None and spec.signal.fraction_of:
            value *= self.latest.get(spec.signal.fraction_of, 0.0)
        return value

    def _store(self, item: _Item, raw: int | float) -> None:
        mem = self.memory[item.table]
        item.last_raw = raw
        if item.spec.type == "bool":  # type: ignore[union-attr]
            mem[item.address] = int(bool(raw))
            return
        for i, reg in enumerate(encode_registers(raw, item.spec.type, item.spec.word_order)):  # type: ignore[union-attr]
            mem[item.address + i] = reg

    def _store_status(self) -> None:
        if self._status is not None:
            self._store(self._status, self.status_raw)
        st = self.profile.status
        if st is None:
            return
        words: dict[tuple[str, int], int] = {key: 0 for key in self._bitreg_items}
        for b, value in zip(st.bits, self.bit_values):
            if b.table in ("coil", "discrete_input"):
                self.memory[b.table][b.wire_address] = int(bool(value))
            elif value:
                words[(b.table, b.wire_address)] |= 1 << (b.bit or 0)
        for (table, address), word in words.items():
            self.memory[table][address] = word

    def _next_raw(self, item: _Item, t_ns: int) -> tuple[int | float, str]:
        """The raw value to serve now and the value faults behind it."""
        spec: ValueSpec = item.spec  # type: ignore[assignment]
        why: list[str] = []
        if item.forced is not None:
            raw: int | float = (
                int(item.forced) if spec.type in INT_LIMITS or spec.type == "bool" else float(item.forced)
            )
        elif item.held is not None:
            raw = item.held
            why.append("stuck" if self.faults.get("stuck", spec.parameter) else "calibration")
        else:
            eng = self._sample(item, t_ns / 1e9)
            spike = self.faults.get("spike", spec.parameter)
            if spike is not None:
                eng *= spike.factor
                self.faults.use(spike)
                why.append("spike")
            raw = raw_for(eng, spec)
            burnout = self.faults.get("burnout", spec.parameter)
            if burnout is not None and spec.loop is not None:
                raw = _raw_at_current(0.0, spec)  # an open loop carries no current
                why.append("burnout")
        if spec.type == "float32" and isinstance(raw, float) and math.isfinite(raw):
            raw = struct.unpack(">f", struct.pack(">f", raw))[0]
        return raw, ",".join(why)

    def read(
        self, function_code: int, address: int, count: int, *, transport_fault: Fault | None = None
    ) -> list[int] | list[bool] | ExcCodes:
        """Serve one read request; refreshes and logs every value fully inside it."""
        table = FC_TABLE.get(function_code)
        if table is None:
            return ExcCodes.ILLEGAL_FUNCTION
        readable = self.readable[table]
        if count < 1 or any(a not in readable for a in range(address, address + count)):
            return ExcCodes.ILLEGAL_ADDRESS
        t_ns = time.time_ns()
        end = address + count
        code, cause = self.status()
        device_faults = self._fault_names(transport_fault)
        base = {"t_ns": t_ns, "station": self.station_id, "device": self.device_id, "unit_id": self.unit_id}
        covered = [
            it
            for it in self._all_items()
            if it.table == table and it.address >= address and it.address + it.width <= end
        ]
        served: dict[int, dict[str, Any]] = {}
        for item in self._sample_order:  # correlated values after what they follow
            if item not in covered:
                continue
            spec: ValueSpec = item.spec  # type: ignore[assignment]
            raw, why = self._next_raw(item, t_ns)
            self._store(item, raw)
            value, vcause, own_status = served_value(raw, spec)
            if value is not None:
                self.latest[spec.parameter] = value
            faults = ",".join(x for x in (device_faults, why) if x)
            served[id(item)] = {
                **base,
                "kind": "value",
                "parameter": spec.parameter,
                "value": value,
                "status": own_status or code,
                "cause": join_causes(cause, vcause),
                "fault": faults,
            }
        entries: list[dict[str, Any]] = []
        status_logged = False
        for item in covered:
            if item.kind != "value":
                if not status_logged:  # one status line per request, however many bits it covered
                    raw_code = self.status_raw if self._status is not None else None
                    entries.append(
                        {
                            **base,
                            "kind": "status",
                            "raw": raw_code,
                            "bits": list(self.bit_values),
                            "status": code,
                            "cause": cause,
                            "fault": device_faults,
                        }
                    )
                    status_logged = True
                continue
            entries.append(served[id(item)])
        self.truth.write(entries)
        self.log.debug("sim.served", table=table, address=address, count=count, values=len(entries))
        mem = self.memory[table]
        if table in ("coil", "discrete_input"):
            return [bool(mem.get(a, 0)) for a in range(address, end)]
        return [mem.get(a, 0) for a in range(address, end)]

    def log_unanswered(self, fault: Fault) -> None:
        """A request the device did not answer (no_reply): one truth line, no values."""
        base = {"t_ns": time.time_ns(), "station": self.station_id, "device": self.device_id, "unit_id": self.unit_id}
        self.truth.write([{**base, "kind": "fault", "fault": fault.kind}])


def _raw_at_current(ma: float, spec: ValueSpec) -> int | float:
    """The raw count a loop module reports for ``ma`` milliamps."""
    assert spec.loop is not None
    (r0, r1), (m0, m1) = spec.loop.raw, spec.loop.ma
    raw = r0 + (ma - m0) * (r1 - r0) / (m1 - m0)
    if spec.type in INT_LIMITS:
        lo, hi = INT_LIMITS[spec.type]
        return int(min(hi, max(lo, round(raw))))
    return raw
