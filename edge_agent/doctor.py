"""``quantrac agent doctor``: probe every device of a station once and explain what came back.

For each value it shows the raw registers (hex) or the raw text field, the
decoded value, unit, status and cause, the latency of the request that
carried it, and a hint when something looks wrong:

* no reply -> check unit id, baud, parity, wiring (or host/port for TCP);
* the port cannot be opened -> the path, permissions, another program;
* exception 02 -> the address is wrong or off by one (``address_base``);
* exception 04 -> the unit id first (some analyzers answer a unit id they do not
  serve with it), then the addresses read, then the analyzer's own fault;
* an absurd magnitude against the value's range -> the word order that
  would give a plausible value ("try word order CDAB (gives 41.37)");
* a bad CRC / checksum -> line settings or noise; another unit's answer ->
  two devices with one unit id;
* a serial line that does not parse -> compare with the analyzer's header.

It uses the agent's own sources (the same code as ``quantrac agent run``), so
what it shows is what the agent would store. Run it while the agent is
stopped: a serial port is opened exclusively.
"""

from __future__ import annotations

import math
import textwrap
import time
from dataclasses import dataclass, field
from typing import Any

from edge_agent.codec import CodecError, decode_raw
from edge_agent.sources import sources_for_station
from edge_agent.sources.modbus_map import STATUS_KEY
from edge_agent.sources.polling import PollReport, RequestReport
from station_profiles.profile_model import ModbusTcpDevice, StationConfig
from vocabulary.modbus import TYPE_WIDTH, WORD_ORDERS


@dataclass
class Row:
    parameter: str
    where: str  # address or field
    raw: str
    value: str
    unit: str
    status: str
    cause: str
    latency_ms: str
    hint: str = ""


@dataclass
class DeviceResult:
    device: str
    transport: str
    where: str
    rows: list[Row] = field(default_factory=list)
    hints: list[str] = field(default_factory=list)
    ok: bool = True


def _hex(data: list[Any] | None) -> str:
    if not data:
        return "-"
    if isinstance(data[0], bool):
        return " ".join("1" if b else "0" for b in data)
    if isinstance(data[0], str):
        return repr(data[0])
    return " ".join(f"{r:04X}" for r in data)


def _fmt(value: float | None) -> str:
    if value is None:
        return "None"
    if value != 0 and (abs(value) >= 1e7 or abs(value) < 1e-3):
        return f"{value:.4g}"
    return f"{value:.4f}".rstrip("0").rstrip(".")


def _request_for(report: PollReport, table: str, address: int, width: int) -> RequestReport | None:
    for rr in report.requests:
        if rr.table == table and rr.address <= address and address + width <= rr.address + rr.count:
            return rr
    return None


def absurd(value: float | None, rng: tuple[float, float] | None) -> bool:
    """A value no analyzer means: NaN, denormal-small, astronomically large, or far outside its range."""
    if value is None or math.isnan(value) or math.isinf(value):
        return True
    if value != 0 and abs(value) < 1e-12:
        return True
    if abs(value) > 1e12:
        return True
    if rng is not None:
        low, high = rng
        span = high - low
        return value < low - 10 * span or value > high + 10 * span
    return False


def word_order_hint(spec: Any, registers: list[int]) -> str:
    """For an absurd value: the other word order that gives a value inside the range.

    Only absurd values get this hint (1e-29, 1e38, NaN: the classic symptoms). A small
    value on a wide-range analyzer (8 ppb SO2 on 0-20000 ppb) is normal, and another order
    can turn its registers into an equally "plausible" 5992 - guessing there would send a
    technician to break a working profile.
    """
    if spec.type not in ("int32", "uint32", "float32", "float64") or len(registers) != TYPE_WIDTH[spec.type]:
        return ""
    candidates: list[tuple[str, float]] = []
    for order in WORD_ORDERS:
        if order == spec.word_order:
            continue
        try:
            raw = decode_raw(registers, spec.type, order)
        except CodecError:
            continue
        value = float(raw) * spec.eng_scale + spec.eng_offset
        if absurd(value, spec.range) or (spec.range is not None and not spec.range[0] <= value <= spec.range[1]):
            continue
        candidates.append((order, value))
    if not candidates:
        return ""
    options = " or ".join(f"{order} (gives {_fmt(value)})" for order, value in candidates)
    return f"try word order {options}; compare with the analyzer's display"


def failure_hint(cause: str, device: Any, exception_code: int | None) -> str:
    tcp = isinstance(device, ModbusTcpDevice)
    if exception_code == 2 or "exception 2 " in cause:
        return (
            "the address is wrong or off by one - check the profile's address_base "
            '(1-based manual numbers need address_base: 1, 40001-style need "4xxxx") '
            "and the table (input vs holding)"
        )
    if exception_code == 1 or "exception 1 " in cause:
        return "the device does not support this function - check table: (input_register vs holding_register)"
    if exception_code == 11 or "exception 11 " in cause:
        return f"the gateway cannot reach unit {device.unit_id} - check unit_id and the gateway's serial side"
    if exception_code == 4 or "exception 4 " in cause:
        unit = getattr(device, "unit_id", None)
        return (
            f"check unit_id ({unit}) first - some analyzers answer a unit id they do not serve with exception 4;"
            " then that the device serves every address read (max_read_registers, max_read_gap),"
            " then its display for a fault"
        )
    if exception_code == 6 or "exception 6 " in cause:
        return "the device is busy - try again; check the analyzer's display"
    if "cannot open" in cause:
        if "in use" in cause:
            return "another program has the port open - stop the agent (or the other program) first"
        return "check the path (ls -l /dev/serial/by-id/), the cable/adapter, and permissions (dialout group)"
    if cause.startswith("no connection"):
        return "check host and port, the network and firewall, and that the device accepts another connection"
    if cause.startswith("no reply"):
        if tcp:
            return "check unit_id (gateways route by it), and that the device answers Modbus TCP (not RTU over TCP)"
        return (
            f"check unit id ({getattr(device, 'unit_id', '-')}), baud/parity ({getattr(device, 'framing', '')}), "
            "wiring (A/B swapped?), termination, and that nothing else polls this bus"
        )
    if "bad CRC" in cause or "bad checksum" in cause:
        return "garbled on the line - check baud and parity against the analyzer's menu, termination and grounding"
    if "answer from unit" in cause:
        return "another slave answered - two devices with the same unit id on this bus?"
    if "truncated" in cause or "incomplete line" in cause:
        return (
            "the reply stops early - check the timeout (timeout_s), the line terminator, "
            "and an RS-485 converter that turns around too slowly"
        )
    if "does not match" in cause or "fields separated" in cause:
        return (
            "the line does not fit the profile - compare with the analyzer's header output "
            "and fix parse: in the profile"
        )
    if cause.startswith("device isolated"):
        return "the device stopped answering; see the last cause"
    return ""


async def probe_station(station: StationConfig, devices: list[str] | None = None) -> list[DeviceResult]:
    """Poll each device once (one after the other) and explain the result."""
    sources = sources_for_station(station)
    results: list[DeviceResult] = []
    try:
        for source in sources:
            device = station.device(source.device_id)
            if devices and device.id not in devices:
                continue
            profile = station.profile_for(device.id)
            where = (
                f"{device.host}:{device.port} unit {device.unit_id}"
                if isinstance(device, ModbusTcpDevice)
                else f"{device.port} {device.framing}"
                + (f" unit {device.unit_id}" if hasattr(device, "unit_id") else "")
            )
            result = DeviceResult(device.id, device.transport, where)
            port = getattr(device, "port", "")
            if isinstance(port, str) and port.startswith(("/dev/ttyUSB", "/dev/ttyACM")):
                result.hints.append(f"{port} may change after a reboot or replug - use its /dev/serial/by-id/ path")
            started = time.monotonic()
            readings = await source.poll()
            elapsed = time.monotonic() - started
            report: PollReport = source.last_poll  # type: ignore[attr-defined]
            by_param = {r.parameter: r for r in readings}
            if profile.protocol == "serial_ascii":
                _ascii_rows(result, profile, device, report, by_param, elapsed)
            else:
                _modbus_rows(result, profile, device, report, by_param)
            result.ok = all(r.status == "00" and r.value is not None for r in readings) and not any(
                row.hint for row in result.rows
            )
            results.append(result)
    finally:
        for source in sources:
            await source.close()
    return results


def _modbus_rows(result: DeviceResult, profile: Any, device: Any, report: PollReport, by_param: dict[str, Any]) -> None:
    for spec in profile.values:
        r = by_param[spec.parameter]
        rr = _request_for(report, spec.table, spec.wire_address, spec.width)
        raw = report.raw.get(spec.parameter)
        hint = ""
        if rr is not None and rr.cause:
            hint = failure_hint(rr.cause, device, rr.exception_code)
        elif raw is not None and r.value is not None and absurd(r.value, spec.range):
            hint = word_order_hint(spec, raw) or "absurd magnitude - check type, word order, scale and the address"
        elif raw is not None and r.value is None and "NaN" in r.cause:
            hint = word_order_hint(spec, raw) or "NaN: the analyzer has no value now (warming up, maintenance?)"
        elif r.value is not None and spec.range is not None and not spec.range[0] <= r.value <= spec.range[1]:
            hint = "outside the analyzer's range - check scale/offset and signed vs unsigned"
        result.rows.append(
            Row(
                spec.parameter,
                f"{spec.table} {spec.wire_address}",
                _hex(raw),
                _fmt(r.value),
                spec.unit,
                r.status,
                r.cause,
                _ms(rr),
                hint,
            )
        )
    st = profile.status
    if st is not None:
        parts: list[str] = []
        if st.has_register:
            parts.append(f"code {_hex(report.raw.get(STATUS_KEY))}")
        for j, b in enumerate(st.bits):
            key = f"\x00bit{j}" if b.table in ("coil", "discrete_input") else f"\x00reg:{b.table}:{b.wire_address}"
            data = report.raw.get(key)
            if data is not None:
                value = int(bool(data[0])) if b.bit is None else (int(data[0]) >> b.bit) & 1
                parts.append(f"{b.wire_address}{'' if b.bit is None else '.' + str(b.bit)}={value}")
        first = next(iter(by_param.values()))
        result.rows.append(Row("(status)", "", " ".join(parts) or "-", "", "", first.status, first.cause, "", ""))


def _ascii_rows(
    result: DeviceResult, profile: Any, device: Any, report: PollReport, by_param: dict[str, Any], elapsed: float
) -> None:
    rr = report.requests[0] if report.requests else None
    if report.line is not None:
        result.hints.append(f"line: {report.line!r}")
    for spec in profile.values:
        r = by_param[spec.parameter]
        raw = report.raw.get(spec.field)
        hint = failure_hint(rr.cause, device, None) if rr is not None and rr.cause else ""
        if (
            not hint
            and r.value is not None
            and spec.range is not None
            and not spec.range[0] <= r.value <= spec.range[1]
        ):
            hint = "outside the analyzer's range - check scale (units: mg/m3 vs ug/m3?) and the field position"
        result.rows.append(
            Row(
                spec.parameter,
                f"field {spec.field}",
                _hex(raw),
                _fmt(r.value),
                spec.unit,
                r.status,
                r.cause,
                _ms(rr),
                hint,
            )
        )


def _ms(rr: RequestReport | None) -> str:
    if rr is None or rr.latency_s is None:
        return "-"
    return f"{rr.latency_s * 1000:.1f}"


HEADER = ("parameter", "where", "raw", "value", "unit", "st", "cause", "ms", "hint")
CAUSE = HEADER.index("cause")
CAUSE_WIDTH = 48  # a longer cause wraps onto lines of its own under the column, never cut


def render(results: list[DeviceResult]) -> str:
    out: list[str] = []
    for res in results:
        out.append(f"== {res.device} ({res.transport}, {res.where}): {'OK' if res.ok else 'PROBLEM'}")
        for h in res.hints:
            out.append(f"   {h}")
        rows = [HEADER] + [
            (r.parameter, r.where, r.raw, r.value, r.unit, r.status, r.cause or "-", r.latency_ms, r.hint)
            for r in res.rows
        ]
        widths = [max(len(str(row[i])) for row in rows) for i in range(len(HEADER) - 1)]
        widths[CAUSE] = min(widths[CAUSE], CAUSE_WIDTH)
        for row in rows:
            cause = textwrap.wrap(str(row[CAUSE]), widths[CAUSE], break_on_hyphens=False) or [""]
            cells = [str(c).ljust(widths[i]) for i, c in enumerate(row[:-1])]
            cells[CAUSE] = cause[0].ljust(widths[CAUSE])
            line = "   " + "  ".join(cells)
            if row[-1]:
                line += "  " + str(row[-1])
            out.append(line.rstrip())
            indent = "   " + "".join(" " * (w + 2) for w in widths[:CAUSE])
            out.extend(indent + more for more in cause[1:])
        out.append("")
    return "\n".join(out)
