"""Modbus RTU input: polls one slave on a shared serial line.

Every slave of a port shares one :class:`~edge_agent.sources.serial_line.SerialLine`,
which serialises the exchanges and keeps the inter-frame gap (see there). This
source builds the request frames (one per coalesced read of the profile's
plan), checks each reply (length, CRC, unit id, function, byte count) and
turns the answers into Readings exactly as the Modbus TCP input does
(modbus_map.py).

Failures are flagged, never guessed:

* no reply within ``timeout_s``: the request's values and every later
  request's of this poll are None / "02" with "no reply: timeout after 0.5 s".
  A timeout is **not retried** in the same poll: a dead slave would cost the
  bus (1 + retries) timeouts every cycle and delay every other slave.
* a garbled reply (bad CRC, another unit's answer, wrong function or length,
  a truncated frame) is asked again up to ``retries`` times (line noise);
  then its values are None / "02" with "broken reply: bad CRC ...".
* an exception reply flags that request's values only ("modbus exception 2
  (illegal data address)").
* a slave without an answer for ``isolate_after`` polls in a row is
  isolated: it is tried only every ``isolated_poll_every`` polls until it
  answers, and in between its values are None / "02" with "device isolated
  ..." at no cost to the bus. Isolation and recovery are logged.

Timestamps: ``time.time_ns()`` right before each request frame is written.
"""

from __future__ import annotations

import time
from typing import Any

import structlog

from broker_bridge.envelope import Reading
from edge_agent.codec import (
    FrameError,
    ModbusExceptionReply,
    ReadRequest,
    parse_rtu_reply,
    rtu_read_request,
    rtu_reply_length,
)
from edge_agent.sources.modbus_map import ModbusMap
from edge_agent.sources.polling import DeviceSource, Isolation, PollReport, RequestReport, clip
from edge_agent.sources.serial_line import NoReplyError, SerialLine, join_line
from station_profiles.profile_model import AnalyzerProfile, ModbusRtuDevice

log = structlog.get_logger("edge_agent.sources.modbus_rtu")


def _reply_complete(buf: bytes) -> bool:
    need = rtu_reply_length(buf)
    return need is not None and len(buf) >= need


class ModbusRtuSource(DeviceSource):
    transport = "modbus_rtu"

    def __init__(
        self, station_id: str, device: ModbusRtuDevice, profile: AnalyzerProfile, line: SerialLine | None = None
    ) -> None:
        super().__init__(station_id, device, profile)
        self.line = join_line(device, station_id, line)
        self.map = ModbusMap(profile)
        self.plan: tuple[ReadRequest, ...] = self.map.plan
        self.isolation = Isolation(device.isolate_after, device.isolated_poll_every)
        self.last_poll = PollReport()
        self.polls = 0
        self.requests_sent = 0
        self._failing_cause: str | None = None
        self.log = log.bind(station=station_id, device=device.id, unit_id=device.unit_id, port=device.port)

    @property
    def device_id(self) -> str:
        return self.device.id

    @property
    def requests_per_poll(self) -> int:
        return len(self.plan)

    @property
    def isolated(self) -> bool:
        return self.isolation.isolated

    async def close(self) -> None:
        self.line.close()

    async def __aenter__(self) -> ModbusRtuSource:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _request(self, req: ReadRequest, rr: RequestReport) -> tuple[int, list[Any]]:
        """One read, with retries for garbled replies. Raises NoReplyError (transport) or
        _Broken / ModbusExceptionReply."""
        frame = rtu_read_request(self.device.unit_id, req.table, req.address, req.count)
        broken = ""
        for attempt in range(1 + self.device.retries):
            rr.attempts = attempt + 1
            self.requests_sent += 1
            try:
                ex = await self.line.exchange(
                    frame, _reply_complete, self.timeout_s, pause_s=self.device.turnaround_delay_s
                )
            except NoReplyError as exc:
                rr.latency_s = exc.latency_s
                if exc.kind == "timeout" and exc.partial:
                    need = rtu_reply_length(exc.partial)
                    broken = (
                        f"broken reply: truncated frame, {len(exc.partial)} of {need or '?'} bytes "
                        f"in {self.timeout_s:g} s"
                    )
                    continue
                raise
            rr.latency_s = ex.latency_s
            try:
                need = rtu_reply_length(ex.reply) or len(ex.reply)
                return ex.ts_ns, parse_rtu_reply(ex.reply[:need], self.device.unit_id, req.table, req.count)
            except FrameError as exc:
                broken = f"broken reply: {exc}"
                if attempt < self.device.retries:
                    self.log.debug("modbus.retry", cause=broken, attempt=attempt + 1)
        raise _Broken(broken)

    async def poll(self) -> list[Reading]:
        """Read every value once. Always returns one Reading per profile value, in profile order."""
        self.polls += 1
        ts = time.time_ns()
        report = PollReport()
        if not self.isolation.should_try():
            cause = clip(self.isolation.skipped_cause())
            report.skipped = cause
            self.last_poll = report
            return [Reading(ts, self.device.id, v.parameter, None, v.unit, "02", cause) for v in self.profile.values]
        got: dict[str, tuple[int, Any]] = {}
        failed: dict[str, tuple[int, str]] = {}
        transport_failure: str | None = None
        first_failure: str | None = None
        for i, req in enumerate(self.plan):
            rr = RequestReport(req.table, req.address, req.count)
            report.requests.append(rr)
            ts = time.time_ns()
            try:
                ts, data = await self._request(req, rr)
            except ModbusExceptionReply as exc:
                rr.cause, rr.exception_code = str(exc), exc.code
                first_failure = first_failure or rr.cause
                for p in req.points:
                    failed[p.key] = (ts, rr.cause)
                continue
            except (NoReplyError, _Broken) as exc:
                rr.cause = exc.cause
                transport_failure = first_failure = first_failure or exc.cause
                for later in self.plan[i:]:
                    if later is not req:
                        report.requests.append(RequestReport(later.table, later.address, later.count, cause=exc.cause))
                    for p in later.points:
                        failed[p.key] = (ts, exc.cause)
                break
            rr.data = list(data)
            for p in req.points:
                chunk = data[req.slice_of(p)]
                got[p.key] = (ts, chunk)
                report.raw[p.key] = list(chunk)
        self.last_poll = report
        change = self.isolation.record(transport_failure)
        if change == "isolated":
            self.log.warning(
                "modbus.device_isolated",
                cause=transport_failure,
                failed_polls=self.isolation.failed_polls,
                poll_every=self.isolation.every,
            )
        elif change == "recovered":
            self.log.info("modbus.device_recovered")
        self._note(first_failure)
        return self.map.build(self.device.id, got, failed)

    def _note(self, cause: str | None) -> None:
        """Log failures on change, not on every poll of a long outage."""
        if cause is None:
            if self._failing_cause is not None:
                self.log.info("modbus.recovered")
            self._failing_cause = None
            return
        if cause != self._failing_cause:
            self.log.warning("modbus.read_failed", cause=cause)
        self._failing_cause = cause


class _Broken(Exception):
    def __init__(self, cause: str) -> None:
        super().__init__(cause)
        self.cause = cause
