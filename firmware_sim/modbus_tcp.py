"""Simulated analyzers served over Modbus TCP (pymodbus 3.16 server).

Each device of a station file becomes a :class:`SimulatedAnalyzer` that
serves its analyzer profile: every value sits at its wire address, encoded
with the profile's type, word order and the inverse of scale/offset. Devices
that share host:port are served by one server, one unit id each.

Values change: whenever a read request covers *all* registers (or the bit)
of a value, the analyzer draws a fresh value from its signal, encodes it into
its registers and appends what it served to the ground-truth log. A value
only partly inside a request is not refreshed and not logged (the master gets
half of the previous encoding, as from a real device). The status register
is served and logged the same way.

Ground-truth log: JSON lines, appended and flushed once per request::

    {"t_ns": 1732170000123456789, "station": "DEMO_AIR_01", "device": "aqms1",
     "unit_id": 1, "kind": "value", "parameter": "PM2,5", "value": 41.37,
     "status": "00", "cause": "", "fault": ""}
    {"t_ns": ..., "station": ..., "device": ..., "unit_id": 1, "kind": "status",
     "raw": 0, "bits": [], "status": "00", "cause": "", "fault": ""}

``t_ns`` is ``time.time_ns()`` when the request was served. ``value`` is the
engineering value exactly as a correct decoder computes it (after float32
rounding, integer rounding, then raw * scale + offset), or null when the
served raw value is a sentinel/NaN (then ``cause`` says "sentinel ...").
``status``/``cause`` on value lines are what the device's status register
said at that moment ("00"/"" when the profile has none); a sentinel adds its
own cause after the status cause ("zero calibration; sentinel -9999").

Undefined addresses answer exception 2 (illegal data address), except gaps of
up to the profile's ``max_read_gap`` between defined addresses, which read as
0. Writes answer exception 2. Unknown unit ids answer exception 11 (gateway
target failed to respond), or with ``unknown_unit="device_failure"`` exception 4
(server device failure), as some analyzers answer a unit id they do not serve.

Entry points: :class:`TcpServers` (used by firmware_sim.station's
:class:`StationSimulator`, which serves every transport), :func:`run_sim` (blocking, ends on SIGINT/SIGTERM) and
``python -m firmware_sim.modbus_tcp``. The analyzer itself (registers,
signals, status, faults, the truth log) is firmware_sim.analyzer.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog
from pymodbus.constants import ExcCodes
from pymodbus.datastore import ModbusServerContext
from pymodbus.exceptions import NoSuchIdException
from pymodbus.server import ModbusTcpServer

from station_profiles.loader import ConfigError

from .analyzer import SimulatedAnalyzer

log = structlog.get_logger("firmware_sim")


# What a request for a unit id no analyzer has gets: exception 11 (a gateway's answer: pymodbus's
# NoSuchIdException), or exception 4 (what some analyzers answer instead).
UNKNOWN_UNIT_REPLIES = ("gateway", "device_failure")


class _UnitStore(ModbusServerContext):
    """Datastore handed to pymodbus' server: unit id -> SimulatedAnalyzer.

    pymodbus 3.16 accepts a ModbusServerContext whose ``old_simulator`` flag
    is set and then only calls ``async_getValues``/``async_setValues``/
    ``device_ids`` on it, which gives us the exact (function, address, count)
    of every request. (SimDevice's ``action`` hook would not: for coils it is
    given the number of 16-bit words, not of bits.) ModbusServerContext's own
    __init__ is not called: it only logs a deprecation warning.

    Transport faults: ``slow`` sleeps here before answering; ``no_reply``,
    ``garbled`` and ``truncated`` are remembered per unit and applied to the
    reply's bytes by :meth:`trace_packet` (pymodbus' hook on every packet).
    """

    def __init__(  # pylint: disable=super-init-not-called
        self, analyzers: dict[int, SimulatedAnalyzer], unknown_unit: str = "gateway"
    ) -> None:
        if unknown_unit not in UNKNOWN_UNIT_REPLIES:
            raise ValueError(f"unknown_unit must be one of {', '.join(UNKNOWN_UNIT_REPLIES)}, got {unknown_unit!r}")
        self.analyzers = analyzers
        self.unknown_unit = unknown_unit
        self.simdevices = []
        self.old_simulator = True
        self._devices = {}  # type: ignore[assignment]
        self._reply_fault: dict[int, Any] = {}

    async def async_getValues(self, device_id: int, func_code: int, address: int, count: int = 1):  # noqa: N802
        analyzer = self.analyzers.get(device_id)
        if analyzer is None:
            if self.unknown_unit == "device_failure":
                return ExcCodes.DEVICE_FAILURE
            raise NoSuchIdException(f"no simulated analyzer at unit id {device_id}")
        fault = analyzer.take_transport_fault()
        if fault is not None and fault.kind == "no_reply":
            analyzer.log_unanswered(fault)
            self._reply_fault[device_id] = fault
            return [False] * count if func_code in (1, 2) else [0] * count
        if fault is not None and fault.kind == "slow":
            await asyncio.sleep(fault.delay_s)
        elif fault is not None:
            self._reply_fault[device_id] = fault
        return analyzer.read(func_code, address, count, transport_fault=fault)

    async def async_setValues(self, device_id: int, func_code: int, address: int, values):  # noqa: N802
        if device_id not in self.analyzers:
            raise NoSuchIdException(f"no simulated analyzer at unit id {device_id}")
        return ExcCodes.ILLEGAL_ADDRESS  # read-only analyzer

    def device_ids(self) -> list[int]:
        return list(self.analyzers)

    def trace_packet(self, sending: bool, data: bytes) -> bytes:
        if not sending or len(data) < 9:
            return data
        fault = self._reply_fault.pop(data[6], None)
        if fault is None:
            return data
        if fault.kind == "no_reply":
            return b""
        if fault.kind == "truncated":
            return data[: len(data) // 2]
        if fault.kind == "garbled" and data[7] in (1, 2, 3, 4) and data[8] >= 1:
            # A reply that contradicts the request: one register (or a byte of bits) short,
            # self-consistent (MBAP length and byte count agree), so only the master's
            # count check can see it. TCP has no CRC to catch it.
            cut = 2 if data[7] in (3, 4) and data[8] >= 2 else 1
            body = bytearray(data[:-cut])
            body[8] -= cut
            body[4:6] = (len(body) - 6).to_bytes(2, "big")
            return bytes(body)
        return data


class TcpServers:
    """One pymodbus server per host:port of a station's modbus_tcp devices."""

    def __init__(
        self,
        groups: dict[tuple[str, int], dict[int, SimulatedAnalyzer]],
        station_id: str,
        unknown_unit: str = "gateway",
    ) -> None:
        self.groups = groups
        self.unknown_unit = unknown_unit
        self._servers: dict[tuple[str, int], ModbusTcpServer] = {}
        self.log = log.bind(station=station_id)

    @property
    def running(self) -> bool:
        return bool(self._servers)

    async def start_endpoint(self, endpoint: tuple[str, int]) -> None:
        if endpoint in self._servers:
            return
        host, port = endpoint
        units = self.groups[endpoint]
        store = _UnitStore(units, self.unknown_unit)
        server = ModbusTcpServer(store, address=(host, port), trace_packet=store.trace_packet)
        try:
            await server.serve_forever(background=True)
        except RuntimeError as exc:
            raise OSError(f"cannot listen on {host}:{port} (port in use?): {exc}") from None
        self._servers[endpoint] = server
        self.log.info(
            "sim.listening",
            transport="modbus_tcp",
            host=host,
            port=port,
            devices={u: a.device_id for u, a in units.items()},
            device=",".join(a.device_id for a in units.values()),
        )

    async def stop_endpoint(self, endpoint: tuple[str, int]) -> None:
        server = self._servers.pop(endpoint, None)
        if server is not None:
            await server.shutdown()
            await asyncio.sleep(0)  # let the transports close

    async def start(self) -> None:
        try:
            for endpoint in self.groups:
                await self.start_endpoint(endpoint)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        for endpoint in list(self._servers):
            await self.stop_endpoint(endpoint)


def _configure_logging(level: int = logging.INFO) -> None:
    """JSON lines on stderr, unless the application configured structlog already."""
    if structlog.is_configured():
        return
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(level),
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )


def run_sim(
    station_file: Path,
    truth_path: Path,
    port_overrides: dict[str, int] | None = None,
    *,
    seed: int = 0,
    profiles_dirs: Sequence[Path] = (),
) -> None:
    """Serve every device of a station file (Modbus TCP, Modbus RTU and serial
    ASCII; see firmware_sim.station) until SIGINT/SIGTERM. Raises ConfigError
    for a bad station file and OSError if a port cannot be bound."""
    from firmware_sim.station import run_station_sim

    _configure_logging()
    run_station_sim(station_file, truth_path, port_overrides, seed=seed, profiles_dirs=profiles_dirs)


def _parse_override(text: str) -> tuple[str, int]:
    device, sep, port = text.partition("=")
    if not sep or not device or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected DEVICE=PORT, e.g. aqms1=15020, got {text!r}")
    return device, int(port)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m firmware_sim.modbus_tcp",
        description=(
            "Serve a station file's analyzers "
            "(Modbus TCP servers, Modbus RTU buses and serial ASCII devices on pseudo-terminals)."
        ),
    )
    parser.add_argument("--station", required=True, type=Path, help="station file (station_profiles/stations/*.yaml)")
    parser.add_argument("--truth", required=True, type=Path, help="ground-truth JSON-lines log to append to")
    parser.add_argument(
        "--port-override",
        action="append",
        default=[],
        type=_parse_override,
        metavar="DEVICE=PORT",
        help="serve a device on another port (repeatable)",
    )
    parser.add_argument(
        "--profiles-dir",
        action="append",
        default=[],
        type=Path,
        help="a folder of analyzer profiles searched for the names the station file uses (repeatable; after the"
        " station file's folder, before /etc/quantrac/profiles and the built-in ones)",
    )
    parser.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    args = parser.parse_args(argv)
    try:
        run_sim(args.station, args.truth, dict(args.port_override), seed=args.seed, profiles_dirs=args.profiles_dir)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    except KeyError as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 2
    except ValueError as exc:  # e.g. a port override for a serial device
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
