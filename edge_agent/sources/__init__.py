"""Inputs of the edge agent, one folder per transport (Telegraf-style).

Each input folder holds ``source.py`` (the implementation), ``sample.yaml``
(a station file using it) and exports one class that satisfies
:class:`Source`. :func:`make_source` picks the class from a device's
``transport``.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from broker_bridge.envelope import Reading
from edge_agent.sources.serial_line import SerialLines
from station_profiles.profile_model import AnalyzerProfile, StationConfig


@runtime_checkable
class Source(Protocol):
    """What the agent's poll loop needs from an input."""

    transport: str

    @property
    def device_id(self) -> str: ...

    async def poll(self) -> list[Reading]:
        """One Reading per value of the device's profile; never raises for device faults."""
        ...

    async def close(self) -> None: ...


TRANSPORTS = ("modbus_tcp", "modbus_rtu", "serial_ascii")


def make_source(station_id: str, device: object, profile: AnalyzerProfile, lines: SerialLines | None = None) -> Source:
    """Build the input for one device of a station file.

    Serial devices get their port's :class:`SerialLine` from ``lines``, so
    every device on one port shares it (pass the same registry for all
    devices of a station; without one each source opens its port alone).
    """
    transport = getattr(device, "transport", None)
    if transport == "modbus_tcp":
        from edge_agent.sources.modbus_tcp import ModbusTcpSource

        return ModbusTcpSource(station_id, device, profile)  # type: ignore[arg-type]
    if transport in ("modbus_rtu", "serial_ascii"):
        line = (lines or SerialLines(station_id)).line_for(device)
        if transport == "modbus_rtu":
            from edge_agent.sources.modbus_rtu import ModbusRtuSource

            return ModbusRtuSource(station_id, device, profile, line)  # type: ignore[arg-type]
        from edge_agent.sources.serial_ascii import SerialAsciiSource

        return SerialAsciiSource(station_id, device, profile, line)  # type: ignore[arg-type]
    raise ValueError(f"no input for transport {transport!r}; known: {', '.join(TRANSPORTS)}")


def sources_for_station(station: StationConfig, lines: SerialLines | None = None) -> list[Source]:
    """One source per device of a loaded station (see station_profiles.loader.load_station);
    devices on one serial port share one line."""
    lines = lines or SerialLines(station.id)
    return [make_source(station.id, d, station.profile_for(d.id), lines) for d in station.devices]


__all__ = ["TRANSPORTS", "SerialLines", "Source", "make_source", "sources_for_station"]
