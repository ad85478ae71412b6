"""Is the station PC's clock right? Readings are stamped with ``time.time_ns()``,
so a station clock 40 s off puts every value 40 s off in the warehouse.

Two ways to measure the offset:

* **SNTP** (RFC 4330) to a configured server: one 48-byte UDP request, the
  server's receive/transmit timestamps T2/T3 and our send/receive times T1/T4
  give ``offset = ((T2 - T1) + (T3 - T4)) / 2`` (the reference minus our clock)
  and ``delay = (T4 - T1) - (T3 - T2)``. Replies that are not an answer to
  our request (another originate timestamp), from an unsynchronised server
  (leap indicator 3, stratum 0 "kiss-of-death" or above 15) are refused.
* **chrony**, when the station runs chronyd: ``chronyc -c tracking`` (CSV),
  field 5 "System time" is how far the system clock is from chrony's idea of
  NTP time, and the last field the leap status ("Not synchronised" counts
  as a failed check).

:class:`ClockMonitor` checks every ``check_every_s``; while the offset
exceeds ``max_offset_s``, :meth:`ClockMonitor.mark` appends a cause such as
"clock offset 12.3 s > 2.0 s" to every reading (status and value are left
as they are: the value was measured, only its time is doubtful; the wire
format does not change). :attr:`ClockMonitor.state` is what the station can
publish about its clock.

Sign convention here: ``offset_s`` > 0 means the station clock is *ahead*
of the reference.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import struct
import subprocess
import time
from dataclasses import dataclass
from typing import Any

import structlog

from broker_bridge.envelope import Reading

log = structlog.get_logger("edge_agent.clock")

NTP_EPOCH_OFFSET_S = 2_208_988_800  # 1900-01-01 to 1970-01-01
MAX_CAUSE = 256


class ClockCheckError(Exception):
    pass


@dataclass(frozen=True)
class ClockSample:
    offset_s: float  # > 0: the station clock is ahead of the reference
    delay_s: float  # round trip (SNTP); 0 for chrony
    source: str  # "sntp host:port" or "chrony"
    measured_ns: int
    stratum: int | None = None


def _to_ntp(t_ns: int) -> bytes:
    secs, frac_ns = divmod(t_ns, 1_000_000_000)
    return struct.pack("!II", (secs + NTP_EPOCH_OFFSET_S) & 0xFFFFFFFF, (frac_ns << 32) // 1_000_000_000)


def _from_ntp(data: bytes) -> int:
    secs, frac = struct.unpack("!II", data)
    return (secs - NTP_EPOCH_OFFSET_S) * 1_000_000_000 + (frac * 1_000_000_000 >> 32)


def parse_server(server: str, default_port: int = 123) -> tuple[str, int]:
    host, sep, port = server.rpartition(":")
    if sep and port.isdigit() and host and not host.endswith(":"):
        return host.strip("[]"), int(port)
    return server.strip("[]"), default_port


def sntp_query(server: str, timeout_s: float = 1.0) -> ClockSample:
    """One SNTP exchange (blocking). Raises :class:`ClockCheckError`."""
    host, port = parse_server(server)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except socket.gaierror as exc:
        raise ClockCheckError(f"cannot resolve NTP server {host}: {exc}") from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout_s)
        t1 = time.time_ns()
        request = bytes([0x23]) + bytes(39) + _to_ntp(t1)  # LI 0, version 4, mode 3 (client)
        try:
            sock.sendto(request, address)
            while True:
                data, peer = sock.recvfrom(512)
                t4 = time.time_ns()
                if len(data) >= 48 and data[24:32] == request[40:48]:
                    break  # a reply to *this* request (the originate timestamp echoes ours)
        except TimeoutError:
            raise ClockCheckError(f"no answer from NTP server {host}:{port} within {timeout_s:g} s") from None
        except OSError as exc:
            raise ClockCheckError(f"NTP server {host}:{port}: {exc.strerror or exc}") from None
    leap, mode, stratum = data[0] >> 6, data[0] & 7, data[1]
    if mode != 4:
        raise ClockCheckError(f"NTP server {host}:{port} answered in mode {mode}, not as a server")
    if leap == 3 or stratum == 0 or stratum > 15:
        raise ClockCheckError(f"NTP server {host}:{port} is not synchronised (leap {leap}, stratum {stratum})")
    t2, t3 = _from_ntp(data[32:40]), _from_ntp(data[40:48])
    reference_minus_local = ((t2 - t1) + (t3 - t4)) / 2e9
    delay = ((t4 - t1) - (t3 - t2)) / 1e9
    return ClockSample(-reference_minus_local, delay, f"sntp {host}:{port}", t4, stratum)


def parse_chrony_tracking(csv_line: str) -> ClockSample:
    """One line of ``chronyc -c tracking`` -> sample. Raises :class:`ClockCheckError`."""
    fields = csv_line.strip().split(",")
    if len(fields) < 14:
        raise ClockCheckError(f"unexpected chronyc tracking output: {csv_line.strip()[:120]!r}")
    if fields[-1].strip().lower().startswith("not synchronised"):
        raise ClockCheckError("chrony is not synchronised (leap status: Not synchronised)")
    try:
        # chrony's "System time" is the correction still to be applied: positive means the
        # system clock is slow of NTP time, so the clock is ahead by -value.
        correction = float(fields[4])
        stratum = int(fields[2])
    except ValueError:
        raise ClockCheckError(f"unexpected chronyc tracking output: {csv_line.strip()[:120]!r}") from None
    return ClockSample(-correction, 0.0, "chrony", time.time_ns(), stratum)


def chrony_query(timeout_s: float = 2.0, chronyc: str = "chronyc") -> ClockSample:
    try:
        done = subprocess.run(
            [chronyc, "-c", "tracking"], capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except FileNotFoundError:
        raise ClockCheckError(f"{chronyc} not found (install chrony, or use clock source sntp)") from None
    except subprocess.TimeoutExpired:
        raise ClockCheckError(f"{chronyc} -c tracking did not answer within {timeout_s:g} s") from None
    if done.returncode != 0:
        raise ClockCheckError(f"{chronyc} -c tracking failed: {(done.stderr or done.stdout).strip()[:160]}")
    return parse_chrony_tracking(done.stdout.splitlines()[0] if done.stdout else "")


class ClockMonitor:
    """Measures the clock offset now and then and marks readings while it is too large."""

    def __init__(self, config: Any, *, station_id: str = "", chronyc: str = "chronyc") -> None:
        self.config = config  # station_profiles.profile_model.ClockConfig
        self.station_id = station_id
        self.chronyc = chronyc
        self.sample: ClockSample | None = None
        self.error: str | None = None
        self.checks = 0
        self._last_check = float("-inf")
        self._exceeded_logged = False
        self.log = log.bind(station=station_id, device="")

    @property
    def max_offset_s(self) -> float:
        return float(self.config.max_offset_s)

    @property
    def offset_s(self) -> float | None:
        return self.sample.offset_s if self.sample is not None else None

    @property
    def exceeded(self) -> bool:
        return self.sample is not None and abs(self.sample.offset_s) > self.max_offset_s

    @property
    def state(self) -> dict[str, Any]:
        """For the station's status: the last measurement and whether it is within the limit."""
        return {
            "source": self.config.source if self.sample is None else self.sample.source,
            "offset_s": None if self.sample is None else round(self.sample.offset_s, 6),
            "delay_s": None if self.sample is None else round(self.sample.delay_s, 6),
            "measured_ns": None if self.sample is None else self.sample.measured_ns,
            "max_offset_s": self.max_offset_s,
            "ok": None if self.sample is None else not self.exceeded,
            "error": self.error,
        }

    def cause(self) -> str:
        if not self.exceeded:
            return ""
        assert self.sample is not None
        return f"clock offset {abs(self.sample.offset_s):.1f} s > {self.max_offset_s:g} s"

    def _query(self) -> ClockSample:
        if self.config.source == "chrony":
            return chrony_query(self.config.timeout_s + 1.0, self.chronyc)
        return sntp_query(self.config.server, self.config.timeout_s)

    async def check(self) -> ClockSample | None:
        """Measure now. A failed check keeps the previous sample (if any) and records the error."""
        self._last_check = time.monotonic()
        self.checks += 1
        try:
            sample = await asyncio.to_thread(self._query)
        except ClockCheckError as exc:
            if str(exc) != self.error:
                self.log.warning("clock.check_failed", error=str(exc))
            self.error = str(exc)
            return None
        self.error = None
        self.sample = sample
        if self.exceeded and not self._exceeded_logged:
            self.log.warning(
                "clock.offset_exceeded",
                offset_s=round(sample.offset_s, 3),
                max_offset_s=self.max_offset_s,
                source=sample.source,
            )
            self._exceeded_logged = True
        elif not self.exceeded and self._exceeded_logged:
            self.log.info(
                "clock.offset_ok",
                offset_s=round(sample.offset_s, 3),
                max_offset_s=self.max_offset_s,
                source=sample.source,
            )
            self._exceeded_logged = False
        else:
            self.log.debug(
                "clock.checked",
                offset_s=round(sample.offset_s, 6),
                delay_s=round(sample.delay_s, 6),
                source=sample.source,
            )
        return sample

    async def maybe_check(self) -> None:
        if time.monotonic() - self._last_check >= self.config.check_every_s:
            await self.check()

    def mark(self, readings: list[Reading]) -> list[Reading]:
        """Readings with the clock cause appended while the offset exceeds the limit."""
        cause = self.cause()
        if not cause:
            return readings
        out = []
        for r in readings:
            joined = f"{r.cause}; {cause}" if r.cause else cause
            if len(joined) > MAX_CAUSE:
                joined = joined[: MAX_CAUSE - 3] + "..."
            out.append(dataclasses.replace(r, cause=joined))
        return out
