"""Modbus TCP input: polls one analyzer over one persistent connection.

Timestamps: every Reading carries ``time.time_ns()`` taken immediately before
the read request that carried its registers was sent (UTC ns). So a reading's
ts_ns is at most one round trip earlier than the moment the analyzer answered;
values that came in different requests of one poll have slightly different
timestamps. A failed request stamps its readings with its own send time.

Failures are flagged, never guessed:

* no connection / timeout / broken reply: every value of the device not
  already read in this poll is returned with value None, status "02" and a
  cause ("no reply: timeout after 1.0 s", "no connection: 127.0.0.1:502
  refused or unreachable", "broken reply: expected 12 registers, got 10"); the
  rest of the poll is skipped and the connection is closed, to be reopened
  on the next poll (a late reply must not be mistaken for the next answer).
* a Modbus exception reply (e.g. 2, illegal data address) flags the values
  of that request only; the connection stays up.
* if the profile has a status register and it cannot be read, every value of
  the poll is returned as None/"02" with cause "status unreadable: ..." -- a
  value whose status is unknown might be a span-gas reading.

A sentinel (NaN, or a raw value listed under ``sentinels``) gives value None
with the device status kept and cause "sentinel -9999". A value outside the
analyzer's range is returned as it is; the collector's QC flags it.

Reconnecting: the first ``FREE_RECONNECTS`` attempts after a failure are made
at once (a device that restarts); after that, attempts are spaced by an
exponential back-off with full jitter (``BACKOFF_BASE_S`` doubling up to
``BACKOFF_CAP_S``), and polls in between report the last connect failure
without touching the network, so a dead gateway is not hammered and a fleet
of agents does not reconnect in lock-step.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import structlog
from pymodbus.client import AsyncModbusTcpClient

from broker_bridge.envelope import Reading
from edge_agent.codec import ReadRequest, exception_cause
from edge_agent.sources.modbus_map import STATUS_KEY, ModbusMap  # noqa: F401 - STATUS_KEY re-exported
from edge_agent.sources.polling import PollReport, RequestReport
from station_profiles.profile_model import AnalyzerProfile, ModbusTcpDevice

log = structlog.get_logger("edge_agent.sources.modbus_tcp")

FREE_RECONNECTS = 2
BACKOFF_BASE_S = 1.0
BACKOFF_CAP_S = 60.0


class _Failure(Exception):
    def __init__(self, cause: str, *, transport: bool, code: int | None = None) -> None:
        super().__init__(cause)
        self.cause = cause
        self.transport = transport  # True: the connection is unusable
        self.code = code  # the Modbus exception code, if that was the answer


class ModbusTcpSource:
    """Poll one Modbus TCP analyzer described by an analyzer profile."""

    transport = "modbus_tcp"

    def __init__(self, station_id: str, device: ModbusTcpDevice, profile: AnalyzerProfile) -> None:
        if device.profile != profile.profile:
            raise ValueError(f"device {device.id} uses profile {device.profile!r}, got {profile.profile!r}")
        self.station_id = station_id
        self.device = device
        self.profile = profile
        self.timeout_s = float(device.timeout_s)
        self.map = ModbusMap(profile)
        self.plan: tuple[ReadRequest, ...] = self.map.plan
        self.last_poll = PollReport()
        self.connect_attempts = 0
        self._connect_failures = 0  # in a row
        self._next_connect = 0.0  # monotonic time before which no connect is attempted
        self._connect_cause = ""
        self._client: AsyncModbusTcpClient | None = None  # made on the first poll (pymodbus needs a running loop)
        self._lost: asyncio.Event | None = None  # set when the peer drops the connection
        self._failing_cause: str | None = None
        self._failed_polls = 0
        self.connects = 0  # successful (re)connections, for tests and status reports
        self.log = log.bind(station=station_id, device=device.id)

    def _on_connect_change(self, connected: bool) -> None:
        if not connected and self._lost is not None:
            self._lost.set()

    def _get_client(self) -> AsyncModbusTcpClient:
        if self._client is None:
            # No automatic reconnect (we reconnect on the next poll) and no
            # retries (a retry would blur the timestamp); pymodbus' own
            # timeout is only a backstop behind ours.
            self._client = AsyncModbusTcpClient(
                self.device.host,
                port=self.device.port,
                timeout=self.timeout_s * 2 + 1.0,
                retries=0,
                reconnect_delay=0,
                name=f"{self.station_id}/{self.device.id}",
                trace_connect=self._on_connect_change,
            )
        return self._client

    @property
    def device_id(self) -> str:
        return self.device.id

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.connected

    @property
    def requests_per_poll(self) -> int:
        return len(self.plan)

    async def close(self) -> None:
        if self._client is not None:
            self._client.close()

    async def __aenter__(self) -> ModbusTcpSource:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ #

    @property
    def backoff_s(self) -> float:
        """Seconds until the next connect attempt is allowed (0: now)."""
        return max(0.0, self._next_connect - time.monotonic())

    async def _ensure_connected(self) -> None:
        client = self._get_client()
        if client.connected:
            return
        if self._connect_failures and time.monotonic() < self._next_connect:
            raise _Failure(self._connect_cause, transport=True)
        started = time.monotonic()
        self.connect_attempts += 1
        try:
            ok = await asyncio.wait_for(client.connect(), timeout=self.timeout_s)
        except TimeoutError:
            ok = False
        if ok and client.connected:
            self._lost = asyncio.Event()
            self._connect_failures = 0
        else:
            client.close()
            where = f"{self.device.host}:{self.device.port}"
            if time.monotonic() - started >= self.timeout_s * 0.95:
                cause = f"no connection: connect to {where} timed out after {self.timeout_s} s"
            else:
                cause = f"no connection: {where} refused or unreachable"
            self._connect_failures += 1
            self._connect_cause = cause
            if self._connect_failures >= FREE_RECONNECTS:
                ceiling = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** (self._connect_failures - FREE_RECONNECTS))
                delay = random.uniform(0.0, ceiling)  # full jitter
                self._next_connect = time.monotonic() + delay
                self.log.debug("modbus.reconnect_backoff", delay_s=round(delay, 3), failures=self._connect_failures)
            raise _Failure(cause, transport=True)
        self.connects += 1

    async def _read(self, req: ReadRequest) -> list[int] | list[bool]:
        unit = self.device.unit_id
        client = self._get_client()
        fn = {
            "coil": client.read_coils,
            "discrete_input": client.read_discrete_inputs,
            "input_register": client.read_input_registers,
            "holding_register": client.read_holding_registers,
        }[req.table]
        if not client.connected or (self._lost is not None and self._lost.is_set()):
            raise _Failure("no reply: connection closed by the device", transport=True)
        try:
            request = asyncio.ensure_future(fn(req.address, count=req.count, device_id=unit))
        except Exception as exc:  # noqa: BLE001 - pymodbus raises ConnectionException synchronously
            raise _Failure(f"no reply: {type(exc).__name__}: {exc}"[:200], transport=True) from None
        lost = asyncio.ensure_future(self._lost.wait()) if self._lost is not None else None
        try:
            done, _ = await asyncio.wait(
                [t for t in (request, lost) if t is not None],
                timeout=self.timeout_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            if lost is not None:
                lost.cancel()
            if not request.done():
                request.cancel()
        if request not in done:
            await asyncio.gather(request, return_exceptions=True)  # reap the cancelled request
            if lost is not None and lost in done:
                raise _Failure("no reply: connection closed by the device", transport=True)
            raise _Failure(f"no reply: timeout after {self.timeout_s} s", transport=True)
        try:
            reply = request.result()
        except Exception as exc:  # noqa: BLE001 - pymodbus raises ModbusIOException/ConnectionException/...
            raise _Failure(f"no reply: {type(exc).__name__}: {exc}"[:200], transport=True) from None
        if reply.isError():
            code = getattr(reply, "exception_code", None)
            if isinstance(code, int) and code:
                raise _Failure(exception_cause(code), transport=False, code=code)
            raise _Failure(f"broken reply: {reply!r}"[:200], transport=True)
        if req.table in ("coil", "discrete_input"):
            data: list[Any] = list(reply.bits)
            what = "bits"
        else:
            data = list(reply.registers)
            what = "registers"
        if len(data) < req.count or (what == "registers" and len(data) != req.count):
            raise _Failure(f"broken reply: expected {req.count} {what}, got {len(data)}", transport=True)
        return data[: req.count]

    async def poll(self) -> list[Reading]:
        """Read every value once. Always returns one Reading per profile value, in profile order."""
        got: dict[str, tuple[int, Any]] = {}  # key -> (ts_ns, registers | bit)
        failed: dict[str, tuple[int, str]] = {}  # key -> (ts_ns, cause)
        report = PollReport()
        first_failure: str | None = None
        ts = time.time_ns()
        try:
            await self._ensure_connected()
        except _Failure as f:
            first_failure = f.cause
            for req in self.plan:
                report.requests.append(RequestReport(req.table, req.address, req.count, cause=f.cause))
                for p in req.points:
                    failed[p.key] = (ts, f.cause)
        else:
            for i, req in enumerate(self.plan):
                rr = RequestReport(req.table, req.address, req.count, attempts=1)
                report.requests.append(rr)
                ts = time.time_ns()  # right before the request is sent
                started = time.monotonic()
                try:
                    data = await self._read(req)
                except _Failure as f:
                    rr.latency_s, rr.cause, rr.exception_code = time.monotonic() - started, f.cause, f.code
                    first_failure = first_failure or f.cause
                    for p in req.points:
                        failed[p.key] = (ts, f.cause)
                    if f.transport:
                        self._get_client().close()  # a late reply must not answer the next request
                        for later in self.plan[i + 1 :]:
                            report.requests.append(
                                RequestReport(later.table, later.address, later.count, cause=f.cause)
                            )
                            for p in later.points:
                                failed[p.key] = (ts, f.cause)
                        break
                    continue
                rr.latency_s, rr.data = time.monotonic() - started, list(data)
                for p in req.points:
                    chunk = data[req.slice_of(p)]
                    got[p.key] = (ts, chunk)
                    report.raw[p.key] = list(chunk)
        readings = self.map.build(self.device.id, got, failed)
        self.last_poll = report
        self._note(first_failure)
        return readings

    def _note(self, cause: str | None) -> None:
        """Log failures on change, not on every poll of a long outage."""
        if cause is None:
            if self._failing_cause is not None:
                self.log.info(
                    "modbus.recovered", failed_polls=self._failed_polls, host=self.device.host, port=self.device.port
                )
            self._failing_cause, self._failed_polls = None, 0
            return
        self._failed_polls += 1
        if cause != self._failing_cause:
            self.log.warning(
                "modbus.read_failed",
                cause=cause,
                host=self.device.host,
                port=self.device.port,
                unit_id=self.device.unit_id,
            )
        else:
            self.log.debug("modbus.read_failed", cause=cause, failed_polls=self._failed_polls)
        self._failing_cause = cause
