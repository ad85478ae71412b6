"""A simulated serial ASCII analyzer on a pseudo-terminal.

It answers the profile's ``poll_command`` with one line built from the
profile: every value from its signal (printed with the value's ``decimals``,
right-aligned to ``sim.width`` when set), status flags and error letters,
the other fields from ``sim.fill`` (strftime with the local time, UTC+7),
joined with the delimiter (or written into ``sim.template`` for regex
profiles), then the checksum, then the line terminator. The init command is
swallowed. Everything served goes to the ground-truth log in the same format
as the Modbus simulators (``unit_id`` is null).

Faults (firmware_sim.faults): calibration / device_error set the first flag
or error letter with status "01" / "02" whose cause contains ``which``;
stuck, spike, no_reply, slow as for Modbus; ``garbled`` changes one
character of the covered text (so the checksum fails), or, without a
checksum, drops a delimiter or breaks a number (so the line cannot be
parsed); ``truncated`` sends the first half of the line and no terminator.

The checksum here is written independently of edge_agent.codec.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from typing import Any

import structlog

from station_profiles.profile_model import SerialAsciiProfile

from .analyzer import TruthLog, _FaultHooks, join_causes
from .faults import Fault, FaultSet
from .pty_link import PtyLink
from .signals import ICT_OFFSET_S, Signal, stable_seed

log = structlog.get_logger("firmware_sim.serial_ascii")


def checksum_text(algorithm: str, data: bytes) -> str:
    if algorithm == "sum8-hex":
        return format(sum(data) % 256, "02X")
    if algorithm == "xor8-hex":
        acc = 0
        for b in data:
            acc ^= b
        return format(acc, "02X")
    if algorithm == "crc16-modbus-hex":
        crc = 0xFFFF
        for b in data:
            crc ^= b
            for _ in range(8):
                lsb = crc & 1
                crc >>= 1
                if lsb:
                    crc ^= 0xA001
        return format(crc, "04X")
    raise ValueError(f"unknown checksum {algorithm!r}")


class SimulatedAsciiAnalyzer(_FaultHooks):
    def __init__(
        self,
        station_id: str,
        device_id: str,
        profile: SerialAsciiProfile,
        *,
        seed: int = 0,
        truth: TruthLog | None = None,
    ) -> None:
        self.station_id = station_id
        self.device_id = device_id
        self.unit_id = None
        self.profile = profile
        self.truth = truth or TruthLog(None)
        self.log = log.bind(station=station_id, device=device_id)
        self.faults = FaultSet()
        self.signals: dict[str, Signal] = {}
        for v in profile.values:
            fallback = v.range[0] + 0.1 * (v.range[1] - v.range[0]) if v.range else 0.0
            self.signals[v.parameter] = Signal.from_hint(
                v.signal, seed=stable_seed(seed, station_id, device_id, v.parameter), fallback_base=fallback
            )
        self.order = sorted(profile.values, key=lambda v: 1 if v.signal is not None and v.signal.fraction_of else 0)
        self.latest: dict[str, float] = {}
        self.last_text: dict[str, str] = {}
        self.held: dict[str, str] = {}
        self.forced: dict[str, float | str] = {}
        st = profile.status
        self.flags: dict[str, str] = {f.field: f.off[0] for f in st.flags} if st else {}
        self.letters: str = st.letters.none[0] if st and st.letters else ""
        self.served = 0

    # -- state -------------------------------------------------------------------
    def force_raw(self, parameter: str, raw: float | str | None) -> None:
        self.profile.value(parameter)
        if raw is None:
            self.forced.pop(parameter, None)
        else:
            self.forced[parameter] = raw

    def set_flags(self, flags: dict[str, str] | None = None, letters: str | None = None) -> None:
        """Set status flag fields' texts and/or the error-letters field (None: leave)."""
        st = self.profile.status
        if st is None:
            raise ValueError(f"profile {self.profile.profile} has no status fields")
        for name, text in (flags or {}).items():
            if name not in self.flags:
                raise KeyError(name)
            self.flags[name] = text
        if letters is not None:
            if st.letters is None:
                raise ValueError("no letters field")
            self.letters = letters
        self.log.info("sim.status_set", flags=self.flags, letters=self.letters, status=self.status()[0])

    def _fields_for_status(self) -> dict[str, str]:
        fields = dict(self.flags)
        st = self.profile.status
        if st is not None and st.letters is not None:
            fields[st.letters.field] = self.letters
        return fields

    def status(self) -> tuple[str, str]:
        if self.profile.status is None:
            return "00", ""
        return self.profile.status.evaluate(self._fields_for_status())

    # -- faults ------------------------------------------------------------------
    def _condition(self, code: str, which: str) -> tuple[str, str]:
        st = self.profile.status
        if st is not None:
            for f in st.flags:
                if f.status == code and which in f.cause:
                    return "flag", f.field
            if st.letters is not None:
                for letter, (c, cause) in st.letters.map.items():
                    if c == code and which in cause:
                        return "letter", letter
        raise ValueError(f"profile {self.profile.profile} has no status {code} condition mentioning {which!r}")

    def _check_fault(self, fault: Fault) -> None:
        if fault.kind in ("calibration", "device_error"):
            self._condition("01" if fault.kind == "calibration" else "02", fault.which)
        elif fault.kind == "burnout":
            raise ValueError("serial ASCII values are not 4-20 mA loops")
        elif fault.parameter is not None:
            self.profile.value(fault.parameter)

    def _fault_started(self, fault: Fault) -> None:
        if fault.kind in ("calibration", "device_error"):
            how, which = self._condition("01" if fault.kind == "calibration" else "02", fault.which)
            if how == "flag":
                self.flags[which] = "1"
            else:
                self.letters = which
        if fault.kind == "calibration":
            self.held = dict(self.last_text)
        if fault.kind == "stuck" and fault.parameter in self.last_text:
            self.held[fault.parameter] = self.last_text[fault.parameter]

    def _fault_ended(self, fault: Fault) -> None:
        st = self.profile.status
        if fault.kind in ("calibration", "device_error") and st is not None:
            self.flags = {f.field: f.off[0] for f in st.flags}
            self.letters = st.letters.none[0] if st.letters else ""
        if fault.kind == "calibration":
            self.held = {p: t for p, t in self.held.items() if self.faults.get("stuck", p) is not None}
        if fault.kind == "stuck":
            self.held.pop(fault.parameter or "", None)

    # -- serving -----------------------------------------------------------------
    def _value_text(self, parameter: str, t_s: float) -> tuple[str, str]:
        spec = self.profile.value(parameter)
        if parameter in self.forced:
            forced = self.forced[parameter]
            return (forced if isinstance(forced, str) else f"{forced:.{spec.decimals}f}"), ""
        if parameter in self.held:
            return self.held[parameter], ("stuck" if self.faults.get("stuck", parameter) else "calibration")
        eng = self.signals[parameter].sample(t_s)
        why = ""
        if spec.signal is not None and spec.signal.fraction_of:
            eng *= self.latest.get(spec.signal.fraction_of, 0.0)
        spike = self.faults.get("spike", parameter)
        if spike is not None:
            eng *= spike.factor
            self.faults.use(spike)
            why = "spike"
        raw = (eng - spec.offset) / spec.scale
        return f"{raw:.{spec.decimals}f}", why

    @staticmethod
    def _served(text: str, spec: Any) -> tuple[float | None, str, str | None]:
        t = text.strip()
        for s in spec.sentinels:
            if isinstance(s, str) and t == s.strip():
                return None, f"sentinel {s.strip()!r}", None
        try:
            raw = float(t)
        except ValueError:
            return None, f"broken reply: {t!r} is not a number", "02"
        if math.isnan(raw):
            return None, "sentinel NaN", None
        for s in spec.sentinels:
            if not isinstance(s, str) and raw == s:
                return None, f"sentinel {raw:g}", None
        if math.isinf(raw):
            return None, f"non-finite value {raw}", None
        return raw * spec.scale + spec.offset, "", None

    def render(self, transport_fault: Fault | None = None) -> str:
        """The next reply line (without terminator); logs what it served."""
        t_ns = time.time_ns()
        p = self.profile
        code, cause = self.status()
        device_faults = self._fault_names(transport_fault)
        fields: dict[str, str] = {}
        why: dict[str, str] = {}
        for spec in self.order:
            text, w = self._value_text(spec.parameter, t_ns / 1e9)
            fields[spec.field] = text
            why[spec.parameter] = w
            self.last_text[spec.parameter] = text
            value, _, _ = self._served(text, spec)
            if value is not None:
                self.latest[spec.parameter] = value
        fields.update(self._fields_for_status())
        local = time.gmtime(t_ns / 1e9 + ICT_OFFSET_S)
        for name, pattern in p.sim.fill.items():
            fields.setdefault(name, time.strftime(pattern, local))
        width = p.sim.width
        if p.parse.delimiter is not None:
            cols = [fields.get(name, "0") if name != "_" else "0" for name in p.parse.fields]
            if width:
                cols = [c.rjust(width) for c in cols]
            body = p.parse.delimiter.join(cols)
        else:
            assert p.sim.template is not None
            body = p.sim.template.format(**{k: (v.rjust(width) if width else v) for k, v in fields.items()})
        corrupted = transport_fault is not None and transport_fault.kind == "garbled"
        if corrupted and p.checksum is None:
            if p.parse.delimiter is not None and p.parse.delimiter in body:
                body = body.replace(p.parse.delimiter, "", 1)  # one field short: the line cannot be split
            else:
                first = p.values[0].field
                body = body.replace(fields[first].strip(), "#" * len(fields[first].strip()), 1)
        prefix = p.sim.prefix
        line = prefix + body
        if p.checksum is not None:
            cs = checksum_text(p.checksum.algorithm, body.encode(p.encoding))
            line = prefix + body + p.checksum.separator + cs
            if corrupted:
                # Change one character of the covered text, keeping the checksum.
                i = next((k for k, ch in enumerate(body) if ch.isdigit()), 0)
                swapped = "7" if body[i] != "7" else "3"
                line = prefix + body[:i] + swapped + body[i + 1 :] + p.checksum.separator + cs
        base = {"t_ns": t_ns, "station": self.station_id, "device": self.device_id, "unit_id": None}
        entries: list[dict[str, Any]] = []
        for spec in p.values:
            value, vcause, own = self._served(fields[spec.field], spec)
            faults = ",".join(x for x in (device_faults, why[spec.parameter]) if x)
            entries.append(
                {
                    **base,
                    "kind": "value",
                    "parameter": spec.parameter,
                    "value": value,
                    "status": own or code,
                    "cause": join_causes(cause, vcause),
                    "fault": faults,
                }
            )
        if p.status is not None:
            entries.append(
                {
                    **base,
                    "kind": "status",
                    "raw": None,
                    "fields": self._fields_for_status(),
                    "status": code,
                    "cause": cause,
                    "fault": device_faults,
                }
            )
        self.truth.write(entries)
        self.served += 1
        return line

    def log_unanswered(self, fault: Fault) -> None:
        self.truth.write(
            [
                {
                    "t_ns": time.time_ns(),
                    "station": self.station_id,
                    "device": self.device_id,
                    "unit_id": None,
                    "kind": "fault",
                    "fault": fault.kind,
                }
            ]
        )


class AsciiDeviceSimulator:
    """One serial ASCII analyzer behind one pty."""

    def __init__(
        self,
        port: str | os.PathLike[str] | None,
        analyzer: SimulatedAsciiAnalyzer,
        station_id: str,
        *,
        response_delay_s: float = 0.0,
    ) -> None:
        self.analyzer = analyzer
        self.response_delay_s = response_delay_s
        self.log = log.bind(station=station_id, device=analyzer.device_id, port=str(port))
        self.link = PtyLink(port, self._on_data, name=str(port), logger=self.log)
        self._buf = bytearray()
        p = analyzer.profile
        self._poll = p.poll_command.encode(p.encoding)
        self._init = p.init_command.encode(p.encoding) if p.init_command else None
        self._term = p.line_terminator.encode(p.encoding)

    @property
    def path(self) -> str:
        return self.link.path

    async def start(self) -> None:
        self.link.connect()
        self.log.info("sim.listening", transport="serial_ascii", path=self.link.path, pty=self.link.slave_path)

    async def stop(self) -> None:
        self.link.disconnect()
        self._buf.clear()

    def _on_data(self, data: bytes) -> None:
        self._buf += data
        while True:
            at_poll = self._buf.find(self._poll)
            at_init = self._buf.find(self._init) if self._init else -1
            if at_init >= 0 and (at_poll < 0 or at_init < at_poll):
                del self._buf[: at_init + len(self._init or b"")]
                continue
            if at_poll < 0:
                if len(self._buf) > 1024:
                    del self._buf[:-64]  # noise; keep a tail in case a command is arriving
                return
            del self._buf[: at_poll + len(self._poll)]
            fault = self.analyzer.take_transport_fault()
            if fault is not None and fault.kind == "no_reply":
                self.analyzer.log_unanswered(fault)
                continue
            line = self.analyzer.render(fault)
            p = self.analyzer.profile
            out = line.encode(p.encoding, errors="replace") + self._term
            if p.sim.echo:
                out = self._poll + out
            if fault is not None and fault.kind == "truncated":
                out = line.encode(p.encoding, errors="replace")[: max(1, len(line) // 2)]
            delay = self.response_delay_s + (fault.delay_s if fault is not None and fault.kind == "slow" else 0.0)
            if delay > 0:
                asyncio.get_running_loop().call_later(delay, self.link.write, out)
            else:
                self.link.write(out)
