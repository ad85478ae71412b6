"""How far a station's session number may grow: only by what its own signed messages prove.

Readers of ``station_events`` take a station's state from its highest
session (a late will never overrides a newer birth), so one message with a
huge session would decide the station's state for good. Signatures keep
everyone without the station's key out; this bound keeps a single signed
message (a bug, a tool, a stolen key) from doing it: a status-topic message
may raise the station's session by at most ``MAX_SESSION_JUMP`` above the
highest session of its messages accepted so far, seeded at start from the
warehouse. docs/security.md has the rule and what it costs an attacker.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

from broker_bridge.station_messages import MAX_SESSION_JUMP


class SessionGuard:
    """The highest proven session per station. Thread-safe: the network thread admits, the flush re-checks."""

    def __init__(self, max_jump: int = MAX_SESSION_JUMP) -> None:
        self.max_jump = max_jump
        self._highest: dict[str, int] = {}
        self._lock = threading.Lock()

    def seed(self, highest: Mapping[str, int]) -> int:
        """Take the warehouse's highest stored session per station; returns how many stations."""
        with self._lock:
            for station, session in highest.items():
                if session > self._highest.get(station, 0):
                    self._highest[station] = session
        return len(highest)

    def admit(self, station: str, session: int) -> str | None:
        """Why ``session`` is refused for ``station``, or None: then it is the station's proven highest
        when higher. Call only for a verified, well-formed message of that station."""
        with self._lock:
            highest = self._highest.get(station, 0)
            if session > highest + self.max_jump:
                return (
                    f"session {session} jumps more than {self.max_jump} above {station}'s highest proven session "
                    f"{highest}"
                )
            if session > highest:
                self._highest[station] = session
            return None

    def highest(self, station: str) -> int | None:
        with self._lock:
            return self._highest.get(station)
