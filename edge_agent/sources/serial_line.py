"""One physical serial port, shared by every device on it, one exchange at a time.

An RS-485 bus is half-duplex with one master: a second request sent before
the first answer is in garbles both (EdgeX device-modbus #685 locked per
slave, not per port, and two slaves on one port collided). So every device
on a port goes through the *same* :class:`SerialLine`, whose lock admits one
request/reply exchange at a time, in arrival order (asyncio.Lock is FIFO, so
no device starves). Before each request the line

* waits until it has been quiet for the Modbus RTU inter-frame gap t3.5
  (3.5 character times; 1.75 ms above 19200 baud) plus the device's
  turnaround delay, counted from the last byte received (or from the end of
  a timeout);
* throws away bytes that arrived since (a reply that came after its
  timeout must not be read as the answer to this request), counting them in
  ``stale_bytes``;

then writes the request and reads until the caller's ``complete(buffer)``
says the reply is whole, or the per-request timeout ends.

The port is opened on first use with pyserial (``exclusive=True``: a second
program opening the same bus fails instead of corrupting it) and reopened
after it fails (a USB adapter unplugged and plugged back reappears behind the
same /dev/serial/by-id/ path). I/O is non-blocking on the file descriptor
through the event loop, so a slow bus never blocks the agent.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import serial
import structlog

from edge_agent.codec import rtu_char_time_s, rtu_frame_gap_s

log = structlog.get_logger("edge_agent.sources.serial")

PARITY = {"N": serial.PARITY_NONE, "E": serial.PARITY_EVEN, "O": serial.PARITY_ODD}


class NoReplyError(Exception):
    """An exchange that produced no complete reply. ``kind``: open, closed, timeout."""

    def __init__(self, kind: str, cause: str, partial: bytes = b"", latency_s: float | None = None) -> None:
        super().__init__(cause)
        self.kind = kind
        self.cause = cause
        self.partial = partial
        self.latency_s = latency_s


@dataclass(frozen=True)
class Exchange:
    ts_ns: int  # time.time_ns() right before the request was written
    reply: bytes
    latency_s: float  # request written -> reply complete


class SerialLine:
    def __init__(
        self,
        path: str,
        baud: int,
        parity: str,
        stop_bits: int,
        bytesize: int,
        *,
        station_id: str = "",
        gap_s: float | None = None,
    ) -> None:
        self.path = path
        self.settings = (baud, parity, stop_bits, bytesize)
        self.gap_s = rtu_frame_gap_s(baud, parity, stop_bits, bytesize) if gap_s is None else gap_s
        self.char_s = rtu_char_time_s(baud, parity, stop_bits, bytesize)
        self._lock = asyncio.Lock()
        self._serial: serial.Serial | None = None
        self._quiet_since = 0.0
        self.opens = 0
        self.exchanges = 0
        self.stale_bytes = 0
        self.devices: list[str] = []
        self.log = log.bind(station=station_id, port=path)

    @property
    def is_open(self) -> bool:
        return self._serial is not None

    @property
    def framing(self) -> str:
        baud, parity, stop_bits, bytesize = self.settings
        return f"{baud} {bytesize}{parity}{stop_bits}"

    def _open(self) -> None:
        baud, parity, stop_bits, bytesize = self.settings
        if parity != "N" and os.path.realpath(self.path).startswith("/dev/pts/"):
            # A pseudo-terminal (firmware_sim's serial ports) has no parity bit, and Linux
            # refuses a termios change that asks for one (EINVAL) once the speed is set.
            self.log.warning(
                "serial.parity_ignored_on_pty",
                parity=parity,
                pty=os.path.realpath(self.path),
                device=",".join(self.devices),
            )
            parity = "N"
        try:
            ser = serial.Serial(
                self.path,
                baudrate=baud,
                bytesize=bytesize,
                parity=PARITY[parity],
                stopbits=stop_bits,
                timeout=0,
                exclusive=True,
            )
        except (serial.SerialException, OSError, ValueError) as exc:
            code = getattr(exc, "errno", None)
            text = os.strerror(code) if isinstance(code, int) else str(exc)  # pyserial repeats the path twice otherwise
            if "exclusively lock" in str(exc) or code == 11:
                text = "the port is in use by another program (another agent, a doctor run, a terminal?)"
            raise NoReplyError("open", f"no connection: cannot open {self.path}: {text}"[:240]) from None
        self._serial = ser
        self._quiet_since = time.monotonic()
        self.opens += 1
        self.log.info(
            "serial.opened",
            framing=self.framing,
            devices=",".join(self.devices),
            device=",".join(self.devices),
            opens=self.opens,
        )

    def close(self) -> None:
        if self._serial is not None:
            try:
                self._serial.close()
            except (serial.SerialException, OSError) as exc:
                self.log.warning("serial.close_failed", error=str(exc), device=",".join(self.devices))
            self._serial = None

    def _drain(self, fd: int) -> None:
        while True:
            try:
                data = os.read(fd, 4096)
            except BlockingIOError:
                return
            except OSError as exc:
                self.close()
                raise NoReplyError(
                    "closed", f"no reply: port {self.path} failed: {exc.strerror or exc} (device unplugged?)"
                ) from None
            if not data:
                return
            self.stale_bytes += len(data)

    async def exchange(
        self, request: bytes, complete: Callable[[bytes], bool], timeout_s: float, *, pause_s: float = 0.0
    ) -> Exchange:
        """Write ``request`` and read until ``complete(buffer)``; raises :class:`NoReplyError`."""
        async with self._lock:
            if self._serial is None:
                self._open()
            assert self._serial is not None
            fd = self._serial.fileno()
            wait = self._quiet_since + self.gap_s + pause_s - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self._drain(fd)
            self.exchanges += 1
            ts = time.time_ns()
            started = time.monotonic()
            try:
                view = memoryview(request)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
            except OSError as exc:
                self.close()
                raise NoReplyError(
                    "closed", f"no reply: cannot write to {self.path}: {exc.strerror or exc} (device unplugged?)"
                ) from None
            try:
                reply = await self._read_until(fd, complete, started + timeout_s, timeout_s)
            finally:
                self._quiet_since = time.monotonic()
            return Exchange(ts, reply, time.monotonic() - started)

    async def _read_until(self, fd: int, complete: Callable[[bytes], bool], deadline: float, timeout_s: float) -> bytes:
        loop = asyncio.get_running_loop()
        buf = bytearray()
        arrived = asyncio.Event()
        broken: list[str] = []

        def readable() -> None:
            try:
                data = os.read(fd, 4096)
            except BlockingIOError:
                return
            except OSError as exc:
                broken.append(exc.strerror or str(exc))
                loop.remove_reader(fd)
                arrived.set()
                return
            if not data:  # hang-up: the other end went away
                broken.append("end of file")
                loop.remove_reader(fd)
            buf.extend(data)
            arrived.set()

        loop.add_reader(fd, readable)
        started = deadline - timeout_s
        try:
            while True:
                if complete(bytes(buf)):
                    return bytes(buf)
                if broken:
                    self.close()
                    raise NoReplyError(
                        "closed",
                        f"no reply: port {self.path} closed ({broken[0]}; device unplugged?)",
                        bytes(buf),
                        time.monotonic() - started,
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise NoReplyError("timeout", f"no reply: timeout after {timeout_s:g} s", bytes(buf), timeout_s)
                arrived.clear()
                try:
                    await asyncio.wait_for(arrived.wait(), remaining)
                except TimeoutError:
                    continue  # the loop's deadline check turns this into the NoReplyError
        finally:
            loop.remove_reader(fd)  # no await since a close, so the fd number cannot have been reused


class SerialLines:
    """The registry of open ports: one :class:`SerialLine` per physical port.

    Two paths naming the same device (a /dev/serial/by-id/ link and the
    /dev/ttyUSB0 it points to) are one line: ports are keyed by their resolved path.
    """

    def __init__(self, station_id: str = "") -> None:
        self.station_id = station_id
        self.lines: dict[str, SerialLine] = {}

    def line_for(self, device: object) -> SerialLine:
        path = device.port  # type: ignore[attr-defined]
        key = os.path.realpath(path)
        settings = device.line_settings  # type: ignore[attr-defined]
        line = self.lines.get(key)
        if line is None:
            line = self.lines[key] = SerialLine(path, *settings, station_id=self.station_id)
        elif line.settings != settings:
            raise ValueError(
                f"{path} is opened at {line.framing} by {', '.join(line.devices)}; "
                f"device {device.id} asks for different settings"
            )  # type: ignore[attr-defined]
        line.devices.append(device.id)  # type: ignore[attr-defined]
        return line

    def close(self) -> None:
        for line in self.lines.values():
            line.close()


def join_line(device, station_id: str, line: SerialLine | None = None) -> SerialLine:
    """The serial line a device talks on (a shared bus when given), with the device registered on it."""
    line = line or SerialLine(device.port, *device.line_settings, station_id=station_id)
    if device.id not in line.devices:
        line.devices.append(device.id)
    return line
