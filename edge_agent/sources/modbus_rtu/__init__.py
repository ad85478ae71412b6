"""Modbus RTU input (several slaves per serial port, one exchange at a time per port)."""

from edge_agent.sources.modbus_rtu.source import ModbusRtuSource

__all__ = ["ModbusRtuSource"]
