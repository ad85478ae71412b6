"""What the Modbus TCP and RTU inputs share: which registers a profile needs read,
and how the answers become Readings (status code register and status bits,
sentinels, 4-20 mA loops). Transport-free: the sources fill ``got``/``failed``
and call :meth:`ModbusMap.build`.
"""

from __future__ import annotations

from typing import Any

from broker_bridge.envelope import Reading
from edge_agent.codec import Point, ReadRequest, decode_value, plan_reads
from edge_agent.sources.polling import clip, join
from station_profiles.profile_model import AnalyzerProfile, combine_conditions
from vocabulary.modbus import BIT_TABLES

STATUS_KEY = "\x00status"  # cannot clash with a parameter symbol (no control characters there)


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
                if b.table in BIT_TABLES:
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
            plan_reads(
                points,
                max_registers=profile.max_read_registers,
                max_bits=profile.max_read_bits,
                max_gap=profile.max_read_gap,
            )
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

    def build(
        self, device_id: str, got: dict[str, tuple[int, Any]], failed: dict[str, tuple[int, str]]
    ) -> list[Reading]:
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
                d = decode_value(
                    chunk,
                    vtype=spec.type,
                    word_order=spec.word_order,
                    scale=scale,
                    offset=offset,
                    sentinels=spec.sentinels,
                    loop=spec.loop,
                )
            if d.value is None:
                code = combine_conditions([(status, ""), (d.status or "00", "")])[0]
                out.append(Reading(ts, device_id, key, None, spec.unit, code, clip(join(status_cause, d.cause))))
            else:
                out.append(Reading(ts, device_id, key, d.value, spec.unit, status, clip(status_cause)))
        return out
