"""Serial ASCII input (a poll command, one reply line, parsed by the profile)."""

from edge_agent.sources.serial_ascii.source import SerialAsciiSource

__all__ = ["SerialAsciiSource"]
