"""Faults on demand, shared by every simulator.

A fault is switched on with ``set_fault(device_id, kind, ...)`` and off with
``clear_fault(device_id, kind)`` (or after ``count`` requests). Kinds:

============== ============================================================
calibration    the status says calibrating (the first "01" condition of the
               profile whose cause contains ``which``) and every value is
               held at what it was when the window opened
device_error   the status says a device fault (the first "02" condition
               whose cause contains ``which``); values keep coming
stuck          ``parameter`` repeats its last raw value
spike          ``parameter`` is served ``factor`` times its signal value
burnout        ``parameter`` (a 4-20 mA loop value) reads 0 mA: an open loop
no_reply       requests are not answered at all
garbled        the reply is corrupted (RTU: bad CRC; ASCII: bad checksum, or
               a broken line when the profile has no checksum; TCP: a reply
               whose byte count does not match)
truncated      only the first half of the reply is sent
slow           the reply is sent ``delay_s`` late
============== ============================================================

``disconnect``/``reconnect`` are separate calls on the station simulator:
TCP servers stop/start, a serial port's pty disappears and a new one appears
behind the same path (a USB adapter unplugged and plugged back).

Every ground-truth line carries ``fault``: the kinds that shaped it, comma
separated ("" when none).
"""

from __future__ import annotations

from dataclasses import dataclass

VALUE_FAULTS = frozenset({"calibration", "device_error", "stuck", "spike", "burnout"})
TRANSPORT_FAULTS = frozenset({"no_reply", "garbled", "truncated", "slow"})
FAULT_KINDS = VALUE_FAULTS | TRANSPORT_FAULTS


@dataclass
class Fault:
    kind: str
    parameter: str | None = None  # stuck, spike, burnout
    which: str = ""  # calibration / device_error: part of the cause to pick
    factor: float = 10.0  # spike
    delay_s: float = 2.0  # slow
    count: int | None = None  # requests it lasts (None: until cleared)

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {self.kind!r}; known: {', '.join(sorted(FAULT_KINDS))}")
        if self.kind in ("stuck", "spike", "burnout") and not self.parameter:
            raise ValueError(f"fault {self.kind} needs parameter=")
        if self.count is not None and self.count < 1:
            raise ValueError("count must be >= 1 (or None: until cleared)")


class FaultSet:
    """The faults active on one simulated device."""

    def __init__(self) -> None:
        self._faults: dict[tuple[str, str | None], Fault] = {}

    def add(self, fault: Fault) -> None:
        self._faults[(fault.kind, fault.parameter)] = fault

    def remove(self, kind: str | None = None, parameter: str | None = None) -> list[Fault]:
        gone = [
            f
            for key, f in self._faults.items()
            if (kind is None or key[0] == kind) and (parameter is None or key[1] == parameter)
        ]
        for f in gone:
            del self._faults[(f.kind, f.parameter)]
        return gone

    def get(self, kind: str, parameter: str | None = None) -> Fault | None:
        return self._faults.get((kind, parameter))

    def active(self) -> list[Fault]:
        return list(self._faults.values())

    def take_transport(self) -> Fault | None:
        """The transport fault for the next request (counted down), if any."""
        for f in list(self._faults.values()):
            if f.kind in TRANSPORT_FAULTS:
                self._use(f)
                return f
        return None

    def use(self, fault: Fault) -> None:
        self._use(fault)

    def _use(self, f: Fault) -> None:
        if f.count is not None:
            f.count -= 1
            if f.count <= 0:
                self._faults.pop((f.kind, f.parameter), None)
