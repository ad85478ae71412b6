"""Modbus TCP input (one analyzer per source, one persistent connection)."""

from edge_agent.sources.modbus_tcp.source import ModbusTcpSource

__all__ = ["ModbusTcpSource"]
