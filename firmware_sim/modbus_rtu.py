"""A simulated RS-485 bus: several Modbus RTU slaves behind one pseudo-terminal.

The bus reads request frames from the master, hands each one to the slave
whose unit id it names (a real slave ignores frames for other addresses, so
an unknown unit id or broadcast 0 gets no answer at all) and writes the
slave's reply back. Frames are found by their length (8 bytes for FC 1-6,
9 + byte count for FC 15/16) and checked by CRC; bytes that do not start a
valid frame are dropped one at a time until one does (what a slave does with
line noise), and a partial frame left alone for more than ``FRAME_SILENCE_S``
is discarded (the silence ends a frame on a real line).

Transport faults per slave (firmware_sim.faults): ``no_reply`` (the request
is ignored), ``garbled`` (one data byte of the reply flipped; the CRC no
longer matches), ``truncated`` (half the reply), ``slow`` (the reply
``delay_s`` late). ``disconnect()`` pulls the whole bus (the pty closes).

Every exchange is recorded in ``exchanges`` as (request received t_ns, unit
id, reply sent t_ns or None), so tests can measure the master's gaps.

The CRC here is table-driven and written independently of edge_agent.codec.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import deque

import structlog
from pymodbus.constants import ExcCodes

from .analyzer import SimulatedAnalyzer
from .pty_link import PtyLink

log = structlog.get_logger("firmware_sim.modbus_rtu")

FRAME_SILENCE_S = 0.05


def _crc_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC_TABLE = _crc_table()


def crc16(data: bytes) -> int:
    crc = 0xFFFF
    for b in data:
        crc = (crc >> 8) ^ _CRC_TABLE[(crc ^ b) & 0xFF]
    return crc


def frame(body: bytes) -> bytes:
    return body + crc16(body).to_bytes(2, "little")


def reply_bytes(unit: int, fc: int, result: list[int] | list[bool] | ExcCodes) -> bytes:
    if isinstance(result, ExcCodes):
        return frame(bytes((unit, fc | 0x80, int(result))))
    if fc in (1, 2):
        data = bytearray((len(result) + 7) // 8)
        for i, bit in enumerate(result):
            if bit:
                data[i // 8] |= 1 << (i % 8)
    else:
        data = bytearray()
        for reg in result:
            data += int(reg).to_bytes(2, "big")
    return frame(bytes((unit, fc, len(data))) + bytes(data))


class RtuBusSimulator:
    def __init__(
        self,
        port: str | os.PathLike[str] | None,
        slaves: dict[int, SimulatedAnalyzer],
        station_id: str,
        *,
        response_delay_s: float = 0.0,
    ) -> None:
        self.slaves = slaves
        self.station_id = station_id
        self.response_delay_s = response_delay_s
        self.log = log.bind(station=station_id, port=str(port), device=",".join(a.device_id for a in slaves.values()))
        self.link = PtyLink(port, self._on_data, name=str(port), logger=self.log)
        self.exchanges: deque[list[int | None]] = deque(maxlen=20000)
        self.dropped_bytes = 0
        self._buf = bytearray()
        self._last_rx = 0.0

    @property
    def path(self) -> str:
        return self.link.path

    async def start(self) -> None:
        self.link.connect()
        self.log.info(
            "sim.listening",
            transport="modbus_rtu",
            path=self.link.path,
            pty=self.link.slave_path,
            units={u: a.device_id for u, a in self.slaves.items()},
        )

    async def stop(self) -> None:
        self.link.disconnect()
        self._buf.clear()

    def _on_data(self, data: bytes) -> None:
        now = time.monotonic()
        if self._buf and now - self._last_rx > FRAME_SILENCE_S:
            self.dropped_bytes += len(self._buf)
            self._buf.clear()
        self._last_rx = now
        self._buf += data
        while len(self._buf) >= 2:
            fc = self._buf[1]
            if fc in (15, 16):
                if len(self._buf) < 7:
                    return
                need = 9 + self._buf[6]
            else:
                need = 8
            if len(self._buf) < need:
                return
            candidate = bytes(self._buf[:need])
            if crc16(candidate[:-2]) != int.from_bytes(candidate[-2:], "little"):
                del self._buf[0]
                self.dropped_bytes += 1
                continue
            del self._buf[:need]
            self._handle(candidate)

    def _handle(self, request: bytes) -> None:
        t_rx = time.time_ns()
        unit, fc = request[0], request[1]
        analyzer = self.slaves.get(unit)
        if analyzer is None:
            self.exchanges.append([t_rx, unit, None])
            return
        fault = analyzer.take_transport_fault()
        if fault is not None and fault.kind == "no_reply":
            analyzer.log_unanswered(fault)
            self.exchanges.append([t_rx, unit, None])
            return
        if fc in (1, 2, 3, 4):
            address = int.from_bytes(request[2:4], "big")
            count = int.from_bytes(request[4:6], "big")
            result = analyzer.read(fc, address, count, transport_fault=fault)
        else:
            result = ExcCodes.ILLEGAL_ADDRESS if fc in (5, 6, 15, 16) else ExcCodes.ILLEGAL_FUNCTION
        reply = reply_bytes(unit, fc, result)
        if fault is not None and fault.kind == "garbled":
            corrupt = bytearray(reply)
            corrupt[min(3, len(corrupt) - 3)] ^= 0x5A  # a data byte; the CRC now disagrees
            reply = bytes(corrupt)
        elif fault is not None and fault.kind == "truncated":
            reply = reply[: len(reply) // 2]
        delay = self.response_delay_s + (fault.delay_s if fault is not None and fault.kind == "slow" else 0.0)
        entry: list[int | None] = [t_rx, unit, None]
        self.exchanges.append(entry)
        if delay > 0:
            asyncio.get_running_loop().call_later(delay, self._send, reply, entry)
        else:
            self._send(reply, entry)

    def _send(self, reply: bytes, entry: list[int | None]) -> None:
        entry[2] = time.time_ns()
        self.link.write(reply)
