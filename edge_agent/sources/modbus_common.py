"""What every Modbus input shares: which registers to read, and how the answers
become Readings (status code register and status bits, sentinels, 4-20 mA
loops). Transport-free: the TCP and RTU sources fill ``got``/``failed`` and
call :meth:`ModbusMap.build`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from broker_bridge.envelope import Reading
from edge_agent.codec import Point, ReadRequest, decode_value, plan_reads
from station_profiles.profile_model import AnalyzerProfile, combine_conditions

STATUS_KEY = "\x00status"  # cannot clash with a parameter symbol (no control characters there)
MAX_CAUSE = 256  # the wire contract's limit (broker_bridge.envelope)


def clip(cause: str) -> str:
    return cause if len(cause) <= MAX_CAUSE else cause[: MAX_CAUSE - 3] + "..."


def join(*causes: str) -> str:
    return "; ".join(c for c in causes if c)


@dataclass
class RequestReport:
    """One request of a poll, for diagnostics (``quantrac agent doctor``)."""

    table: str
    address: int
    count: int
    latency_s: float | None = None
    cause: str | None = None  # None: answered
    exception_code: int | None = None
    data: list[Any] | None = None
    attempts: int = 0


@dataclass
class PollReport:
    requests: list[RequestReport] = field(default_factory=list)
    raw: dict[str, list[Any]] = field(default_factory=dict)  # point key -> registers/bits
    line: str | None = None  # serial ASCII: the reply line as received
    skipped: str | None = None  # why the device was not asked (isolated)


class ModbusMap:
    """The read plan of one profile and the decoding of its answers."""

    def __init__(self, profile: AnalyzerProfile) -> None:
        self.profile = profile
        points = [Point(v.parameter, v.table, v.wire_address, v.width) for v in profile.values]
        status = profile.status
        #: per status bit: (point key, bit number within a register or None)
        self.bit_points: list[tuple[str, int | None]] = []
        if status is not None:
            if status.has_register:
                points.append(Point(STATUS_KEY, status.table, status.wire_address, status.width))  # type: ignore[arg-type]
            seen: set[str] = set()
            for j, b in enumerate(status.bits):
                if b.table in ("coil", "discrete_input"):
                    key = f"\x00bit{j}"
                    points.append(Point(key, b.table, b.wire_address, 1))
                    self.bit_points.append((key, None))
                else:
                    key = f"\x00reg:{b.table}:{b.wire_address}"
                    if key not in seen:
                        seen.add(key)
                        points.append(Point(key, b.table, b.wire_address, 1))
                    self.bit_points.append((key, b.bit))
        self.status_keys = {p.key for p in points if p.key.startswith("\x00")}
        self.plan: tuple[ReadRequest, ...] = tuple(
            plan_reads(points, max_registers=profile.max_read_registers, max_bits=profile.max_read_bits, max_gap=profile.max_read_gap)
        )

    def status(self, got: dict[str, tuple[int, Any]], failed: dict[str, tuple[int, str]]) -> tuple[str, str, bool]:
        """-> (status code, cause, known)."""
        spec = self.profile.status
        if spec is None:
            return "00", "", True
        for key in self.status_keys:
            if key in failed:
                return "02", f"status unreadable: {failed[key][1]}", False
        raw: int | None = None
        if spec.has_register:
            _, chunk = got[STATUS_KEY]
            if spec.type == "bool":
                raw = int(bool(chunk[0]))
            else:
                raw = int(decode_value(chunk, vtype=spec.type, word_order=spec.word_order).raw)
        bits: list[int] = []
        for key, bit in self.bit_points:
            _, chunk = got[key]
            bits.append(int(bool(chunk[0])) if bit is None else (int(chunk[0]) >> bit) & 1)
        code, cause = spec.evaluate(raw, bits)
        return code, cause, True

    def build(self, device_id: str, got: dict[str, tuple[int, Any]], failed: dict[str, tuple[int, str]]) -> list[Reading]:
        """One Reading per profile value, in profile order."""
        status, status_cause, known = self.status(got, failed)
        out: list[Reading] = []
        for spec in self.profile.values:
            key = spec.parameter
            if key in failed:
                ts, cause = failed[key]
                out.append(Reading(ts, device_id, key, None, spec.unit, "02", clip(cause)))
                continue
            ts, chunk = got[key]
            if not known:
                out.append(Reading(ts, device_id, key, None, spec.unit, "02", clip(status_cause)))
                continue
            scale, offset = spec.eng_scale, spec.eng_offset
            if spec.type == "bool":
                d = decode_value(vtype="bool", bit=bool(chunk[0]), scale=scale, offset=offset, sentinels=spec.sentinels)
            else:
                d = decode_value(chunk, vtype=spec.type, word_order=spec.word_order, scale=scale, offset=offset, sentinels=spec.sentinels, loop=spec.loop)
            if d.value is None:
                code = combine_conditions([(status, ""), (d.status or "00", "")])[0]
                out.append(Reading(ts, device_id, key, None, spec.unit, code, clip(join(status_cause, d.cause))))
            else:
                out.append(Reading(ts, device_id, key, d.value, spec.unit, status, clip(status_cause)))
        return out


class Isolation:
    """Keeps a dead device from costing its bus a timeout every cycle.

    After ``after`` polls in a row without a usable answer the device is
    isolated: it is then tried only on every ``every``-th poll cycle, until it
    answers again. The other polls return its values as None / "02" at once.
    """

    def __init__(self, after: int, every: int) -> None:
        self.after = after
        self.every = every
        self.failed_polls = 0
        self.isolated = False
        self._skipped = 0
        self.last_cause = ""

    def should_try(self) -> bool:
        if not self.isolated:
            return True
        self._skipped += 1
        if self._skipped >= self.every:
            self._skipped = 0
            return True
        return False

    def skipped_cause(self) -> str:
        return f"device isolated after {self.failed_polls} polls without an answer, tried every {self.every} polls (last: {self.last_cause})"

    def record(self, failure: str | None) -> str | None:
        """Note one poll's outcome; returns "isolated" / "recovered" when that changes."""
        if failure is None:
            self.failed_polls = 0
            self._skipped = 0
            if self.isolated:
                self.isolated = False
                return "recovered"
            return None
        self.failed_polls += 1
        self.last_cause = failure
        if not self.isolated and self.failed_polls >= self.after:
            self.isolated = True
            self._skipped = 0
            return "isolated"
        return None
