"""What every source shares about one poll, Modbus or serial ASCII: the reports
``quantrac agent doctor`` shows, isolating a device that stopped answering, and
the wire contract's limit on a cause text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MAX_CAUSE = 256  # the wire contract's limit (broker_bridge.envelope)


class DeviceSource:
    """What every source is: one device of one station, read by the profile the station file names."""

    transport: str

    def __init__(self, station_id: str, device: Any, profile: Any) -> None:
        # A device handed another model's profile would decode every register wrongly and plausibly.
        if device.profile != profile.profile:
            raise ValueError(f"device {device.id} uses profile {device.profile!r}, got {profile.profile!r}")
        self.station_id = station_id
        self.device = device
        self.profile = profile
        self.timeout_s = float(device.timeout_s)


def clip(cause: str) -> str:
    return cause if len(cause) <= MAX_CAUSE else cause[: MAX_CAUSE - 3] + "..."


def join(*causes: str) -> str:
    return "; ".join(c for c in causes if c)


@dataclass
class RequestReport:
    """One request of a poll, for diagnostics (``quantrac agent doctor``)."""

    table: str
    address: int
    count: int
    latency_s: float | None = None
    cause: str | None = None  # None: answered
    exception_code: int | None = None
    data: list[Any] | None = None
    attempts: int = 0


@dataclass
class PollReport:
    requests: list[RequestReport] = field(default_factory=list)
    raw: dict[str, list[Any]] = field(default_factory=dict)  # point key -> registers/bits
    line: str | None = None  # serial ASCII: the reply line as received
    skipped: str | None = None  # why the device was not asked (isolated)


class Isolation:
    """Keeps a dead device from costing its bus a timeout every cycle.

    After ``after`` polls in a row without a usable answer the device is
    isolated: it is then tried only on every ``every``-th poll cycle, until it
    answers again. The other polls return its values as None / "02" at once.
    """

    def __init__(self, after: int, every: int) -> None:
        self.after = after
        self.every = every
        self.failed_polls = 0
        self.isolated = False
        self._skipped = 0
        self.last_cause = ""

    def should_try(self) -> bool:
        if not self.isolated:
            return True
        self._skipped += 1
        if self._skipped >= self.every:
            self._skipped = 0
            return True
        return False

    def skipped_cause(self) -> str:
        return (
            f"device isolated after {self.failed_polls} polls without an answer, "
            f"tried every {self.every} polls (last: {self.last_cause})"
        )

    def record(self, failure: str | None) -> str | None:
        """Note one poll's outcome; returns "isolated" / "recovered" when that changes."""
        if failure is None:
            self.failed_polls = 0
            self._skipped = 0
            if self.isolated:
                self.isolated = False
                return "recovered"
            return None
        self.failed_polls += 1
        self.last_cause = failure
        if not self.isolated and self.failed_polls >= self.after:
            self.isolated = True
            self._skipped = 0
            return "isolated"
        return None
