"""A whole simulated station: every device of a station file, on its own transport.

* ``modbus_tcp`` devices: pymodbus TCP servers (modbus_tcp.py), one per
  host:port, one unit id per analyzer.
* ``modbus_rtu`` devices: one simulated RS-485 bus per ``port`` (modbus_rtu.py),
  every slave of that port on it under its unit id.
* ``serial_ascii`` devices: one simulated instrument per ``port`` (serial_ascii.py).

Serial devices live on pseudo-terminals. The path the station file names
(``port: /tmp/quantrac-sim/bus0``) becomes a symlink to the pty's slave side,
so the agent, started with the *same* station file, opens the simulator
there. The directory is created if needed; a path the simulator may not
write (e.g. under /dev) fails at start with the path and the fix.

All devices write one ground-truth log (see firmware_sim/README.md).
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog

from station_profiles.loader import load_station
from station_profiles.profile_model import ModbusRtuDevice, ModbusTcpDevice, SerialAsciiDevice, StationConfig

from .analyzer import SimulatedAnalyzer, TruthLog
from .faults import Fault
from .modbus_rtu import RtuBusSimulator
from .modbus_tcp import TcpServers
from .serial_ascii import AsciiDeviceSimulator, SimulatedAsciiAnalyzer

log = structlog.get_logger("firmware_sim")


class StationSimulator:
    """Serves every device of a station (TCP servers, RTU buses, ASCII devices)."""

    def __init__(
        self,
        station: StationConfig,
        truth_path: str | os.PathLike[str] | None = None,
        *,
        seed: int = 0,
        host: str | None = None,
        response_delay_s: float = 0.0,
        unknown_unit: str = "gateway",
    ) -> None:
        self.station = station
        self.truth = TruthLog(truth_path)
        self.host_override = host
        self.analyzers: dict[str, SimulatedAnalyzer | SimulatedAsciiAnalyzer] = {}
        groups: dict[tuple[str, int], dict[int, SimulatedAnalyzer]] = {}
        slaves: dict[str, dict[int, SimulatedAnalyzer]] = {}
        self.ascii: dict[str, AsciiDeviceSimulator] = {}
        self._where: dict[str, Any] = {}
        for device in station.devices:
            profile = station.profile_for(device.id)
            if isinstance(device, SerialAsciiDevice):
                a = SimulatedAsciiAnalyzer(station.id, device.id, profile, seed=seed, truth=self.truth)
                self.analyzers[device.id] = a
                self.ascii[device.port] = AsciiDeviceSimulator(
                    device.port, a, station.id, response_delay_s=response_delay_s
                )
                self._where[device.id] = self.ascii[device.port]
                continue
            analyzer = SimulatedAnalyzer(station.id, device.id, device.unit_id, profile, seed=seed, truth=self.truth)
            self.analyzers[device.id] = analyzer
            if isinstance(device, ModbusTcpDevice):
                endpoint = (host or device.host, device.port)
                groups.setdefault(endpoint, {})[device.unit_id] = analyzer
                self._where[device.id] = endpoint
            elif isinstance(device, ModbusRtuDevice):
                slaves.setdefault(device.port, {})[device.unit_id] = analyzer
        self.tcp = TcpServers(groups, station.id, unknown_unit=unknown_unit)
        self.buses: dict[str, RtuBusSimulator] = {
            port: RtuBusSimulator(port, units, station.id, response_delay_s=response_delay_s)
            for port, units in slaves.items()
        }
        for port, units in slaves.items():
            for analyzer in units.values():
                self._where[analyzer.device_id] = self.buses[port]
        self.log = log.bind(station=station.id)
        self._running = False

    # -- what is where ------------------------------------------------------------
    @property
    def endpoints(self) -> list[tuple[str, int]]:
        return list(self.tcp.groups)

    @property
    def serial_ports(self) -> dict[str, str | None]:
        """Station-file port path -> the pty behind it now (None while disconnected)."""
        out: dict[str, str | None] = {}
        for port, sim in [*self.buses.items(), *self.ascii.items()]:
            out[port] = sim.link.slave_path if sim.link.connected else None
        return out

    @property
    def running(self) -> bool:
        return self._running

    def analyzer(self, device_id: str) -> Any:
        return self.analyzers[device_id]

    def bus(self, device_id: str) -> RtuBusSimulator:
        where = self._where[device_id]
        if not isinstance(where, RtuBusSimulator):
            raise KeyError(f"{device_id} is not on a Modbus RTU bus")
        return where

    # -- controls (see firmware_sim.faults) -----------------------------------------
    def set_status(self, device_id: str, raw: int | None) -> None:
        self.analyzers[device_id].set_status(raw)  # type: ignore[union-attr]

    def set_bits(self, device_id: str, values: Any) -> None:
        self.analyzers[device_id].set_bits(values)  # type: ignore[union-attr]

    def set_flags(self, device_id: str, flags: dict[str, str] | None = None, letters: str | None = None) -> None:
        self.analyzers[device_id].set_flags(flags, letters)  # type: ignore[union-attr]

    def force_raw(self, device_id: str, parameter: str, raw: Any) -> None:
        self.analyzers[device_id].force_raw(parameter, raw)

    def set_fault(self, device_id: str, kind: str, **params: Any) -> Fault:
        return self.analyzers[device_id].set_fault(kind, **params)

    def clear_fault(self, device_id: str, kind: str | None = None, parameter: str | None = None) -> None:
        self.analyzers[device_id].clear_fault(kind, parameter)

    async def disconnect(self, device_id: str) -> None:
        """The device's link goes away: a TCP server stops (connections dropped),
        a serial port's pty closes (every slave on that bus with it)."""
        where = self._where[device_id]
        if isinstance(where, tuple):
            await self.tcp.stop_endpoint(where)
        else:
            await where.stop()
        self.log.info("sim.disconnected", device=device_id)

    async def reconnect(self, device_id: str) -> None:
        where = self._where[device_id]
        if isinstance(where, tuple):
            await self.tcp.start_endpoint(where)
        else:
            await where.start()
        self.log.info("sim.reconnected", device=device_id)

    # -- life -----------------------------------------------------------------------
    async def start(self) -> None:
        if self._running:
            return
        try:
            await self.tcp.start()
            for sim in [*self.buses.values(), *self.ascii.values()]:
                try:
                    await sim.start()
                except OSError as exc:
                    raise OSError(
                        f"cannot create the simulated serial port {sim.link.link_path}: {exc.strerror or exc} "
                        "(fix: name a writable path in the station file, e.g. port: /tmp/quantrac-sim/bus0)"
                    ) from None
        except BaseException:
            await self.stop()
            raise
        self._running = True
        self.log.info(
            "sim.ready",
            tcp=[f"{h}:{p}" for h, p in self.endpoints],
            serial=self.serial_ports,
            device=",".join(self.analyzers),
        )

    async def stop(self) -> None:
        """Stop serving (connections dropped, ptys closed); start() may be called again."""
        was_running = self._running or self.tcp.running
        await self.tcp.stop()
        for sim in [*self.buses.values(), *self.ascii.values()]:
            await sim.stop()
        self._running = False
        if was_running:
            self.log.info("sim.stopped")

    async def aclose(self) -> None:
        await self.stop()
        self.truth.close()

    async def __aenter__(self) -> StationSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


async def serve_station(
    station: StationConfig,
    truth_path: str | os.PathLike[str] | None,
    *,
    seed: int = 0,
    stop_event: asyncio.Event | None = None,
    started: asyncio.Event | None = None,
) -> None:
    """Serve ``station`` until ``stop_event`` is set (forever if None)."""
    sim = StationSimulator(station, truth_path, seed=seed)
    async with sim:
        if started is not None:
            started.set()
        await (stop_event or asyncio.Event()).wait()


def run_station_sim(
    station_file: str | os.PathLike[str],
    truth_path: str | os.PathLike[str],
    port_overrides: dict[str, int] | None = None,
    *,
    seed: int = 0,
    profiles_dirs: Sequence[Path] = (),
) -> None:
    """Serve every device of a station file until SIGINT/SIGTERM (blocking); profile names are looked
    up in the station file's folder, ``profiles_dirs``, /etc/quantrac/profiles and the built-in ones.

    Raises ConfigError for a bad station file and OSError if a TCP port cannot
    be bound or a serial path cannot be created.
    """
    station = load_station(station_file, profiles_dirs)
    if port_overrides:
        station = station.with_port_overrides(port_overrides)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await serve_station(station, truth_path, seed=seed, stop_event=stop)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    asyncio.run(main())
