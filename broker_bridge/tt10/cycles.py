"""TT10 files per cycle: which readings a cycle holds, the cycle's mean, the period's status.

A station sends one file per cycle (5 minutes by default). The agent's TT10 out
(``edge_agent/tt10_out``) and the warehouse export (``quantrac export tt10``) both
build their files here, so both follow the same rules:

* **Cycles** are aligned to the epoch (so to the hour and to the Vietnamese day, since
  ``cycle_s`` divides a day) and labelled by their **end**: the cycle ending at ``E``
  holds the readings whose time, truncated to the second (TT10's resolution), lies in
  ``(E - cycle, E]``, as an hourly mean in (h-1, h] is labelled h. The file's name
  carries ``E``.
* ``each``: one line per reading at its own second. Two readings of one parameter in
  the same second: the first is written (a TT10 file cannot hold both).
* ``mean``: one line per parameter, at ``E``. The value is the arithmetic mean
  (``math.fsum``) of the cycle's readings with status ``00`` and a value; the line's
  status is ``00``. Without any such reading the period's status is the most frequent
  of the other readings' statuses (a ``00`` reading without a value counts as ``02``);
  a tie goes to the worse, ``02`` over ``01``; the value is then empty (a calibration
  or a fault is not a measurement), which TT10 allows with ``01`` and ``02``.
  The unit is the latest reading's; readings in another unit (a re-configured
  analyzer) are left out of that cycle's mean.
* Lines are sorted by time, then by parameter name, so every file of a station looks alike.

One parameter coming from two devices cannot be written (the file has no device
column): that is refused with the devices named.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, Protocol

from broker_bridge.tt10.codec import CANONICAL_LINE_ENDING, Tt10WriteError, write_file
from broker_bridge.tt10.names import NameForm
from vocabulary.status import CALIBRATING, DEVICE_ERROR, MEASURING

Mode = Literal["mean", "each"]
MODES: tuple[str, ...] = ("mean", "each")
NS_PER_S = 1_000_000_000
DAY_S = 86_400
_SEVERITY = {MEASURING: 0, CALIBRATING: 1, DEVICE_ERROR: 2}


class CycleReading(Protocol):
    parameter: str
    value: float | None
    unit: str
    ts_ns: int
    status: str


@dataclass(frozen=True, slots=True)
class Line:
    """One line of a cycle's file (what ``write_lines`` takes)."""

    parameter: str
    value: float | None
    unit: str
    ts_ns: int
    status: str


@dataclass(frozen=True, slots=True)
class CycleFile:
    end_ns: int  # the cycle's end (UTC ns), the time in the name
    name: str
    content: bytes
    lines: tuple[Line, ...]


def check_cycle(cycle_s: int) -> int:
    """A cycle must be whole seconds dividing a day, so cycles line up with hours and days."""
    if not isinstance(cycle_s, int) or cycle_s < 1 or DAY_S % cycle_s:
        raise ValueError(f"cycle {cycle_s!r} s must be a whole number of seconds dividing a day (60, 300, 3600, ...)")
    return cycle_s


def second_of(ts_ns: int) -> int:
    """The reading's time as TT10 writes it: truncated to the second."""
    return ts_ns - ts_ns % NS_PER_S


def cycle_end(ts_ns: int, cycle_s: int) -> int:
    """The end of the cycle holding a reading taken at ``ts_ns``."""
    step = check_cycle(cycle_s) * NS_PER_S
    return -(-second_of(ts_ns) // step) * step


def cycle_window(end_ns: int, cycle_s: int) -> tuple[int, int]:
    """[low, high) in ns of the raw reading times the cycle ending at ``end_ns`` holds."""
    step = check_cycle(cycle_s) * NS_PER_S
    if end_ns % step:
        raise ValueError(f"{end_ns} ns is not the end of a {cycle_s} s cycle")
    return end_ns - step + NS_PER_S, end_ns + NS_PER_S


def cycle_ends(after_ns: int, until_ns: int, cycle_s: int) -> range:
    """The ends E of the cycles with ``after_ns < E <= until_ns``."""
    step = check_cycle(cycle_s) * NS_PER_S
    first = (after_ns // step + 1) * step
    return range(first, until_ns + 1, step)


def split_cycles(readings: Iterable[CycleReading], cycle_s: int) -> dict[int, list[CycleReading]]:
    """Readings by the end of their cycle, in order of the ends."""
    cycles: dict[int, list[CycleReading]] = {}
    for r in readings:
        cycles.setdefault(cycle_end(r.ts_ns, cycle_s), []).append(r)
    return dict(sorted(cycles.items()))


def period_status(statuses: Iterable[str]) -> str:
    """The status of a period from its readings' statuses (a reading without a value: pass ``02``).

    ``00`` when any ``00`` exists, else the most frequent other; a tie goes to the worse.
    """
    counts = Counter(statuses)
    if not counts:
        raise ValueError("a period without readings has no status")
    if counts.get(MEASURING):
        return MEASURING
    return max(counts, key=lambda s: (counts[s], _SEVERITY.get(s, 3)))


def mean_lines(readings: Iterable[CycleReading], end_ns: int) -> list[Line]:
    """One line per parameter at ``end_ns``: the mean of its 00 readings, or the period's status without a value."""
    by_parameter = _by_parameter(readings)
    lines = []
    for parameter, group in sorted(by_parameter.items()):
        unit = max(group, key=lambda r: r.ts_ns).unit
        same_unit = [r for r in group if r.unit == unit]
        measured = [r.value for r in same_unit if r.status == MEASURING and r.value is not None]
        if measured:
            lines.append(Line(parameter, math.fsum(measured) / len(measured), unit, end_ns, MEASURING))
        else:
            status = period_status(
                DEVICE_ERROR if r.value is None and r.status == MEASURING else r.status for r in same_unit
            )
            lines.append(Line(parameter, None, unit, end_ns, status))
    return lines


def each_lines(readings: Iterable[CycleReading]) -> list[Line]:
    """One line per reading at its second, oldest first (then by parameter); a repeat within a second is left out."""
    _by_parameter(readings := list(readings))  # refuses one parameter from two devices
    seen: set[tuple[str, int]] = set()
    lines = []
    for r in sorted(readings, key=lambda r: (second_of(r.ts_ns), r.parameter)):  # stable: a repeat keeps its order
        key = (r.parameter, second_of(r.ts_ns))
        if key in seen:
            continue
        seen.add(key)
        status = DEVICE_ERROR if r.value is None and r.status == MEASURING else r.status
        lines.append(Line(r.parameter, r.value, r.unit, key[1], status))
    return lines


def cycle_file(
    prefix: str,
    end_ns: int,
    readings: Iterable[CycleReading],
    *,
    mode: Mode = "mean",
    form: NameForm = "tinh_coso_tram",
    decimals: int | None = None,
    line_ending: str = CANONICAL_LINE_ENDING,
) -> CycleFile:
    """The file of the cycle ending at ``end_ns`` (its readings already chosen, e.g. by ``split_cycles``)."""
    if mode not in MODES:
        raise Tt10WriteError(f"mode {mode!r} is not one of {MODES}")
    lines = tuple(mean_lines(readings, end_ns) if mode == "mean" else each_lines(readings))
    name, content = write_file(prefix, end_ns, lines, form=form, decimals=decimals, line_ending=line_ending)
    return CycleFile(end_ns, name, content, lines)


def _by_parameter(readings: Iterable[CycleReading]) -> dict[str, list[CycleReading]]:
    groups: dict[str, list[CycleReading]] = {}
    devices: dict[str, str | None] = {}
    for r in readings:
        device = getattr(r, "device", None)
        first = devices.setdefault(r.parameter, device)
        if first != device:
            raise Tt10WriteError(
                f"parameter {r.parameter} comes from devices {first} and {device}; a TT10 file has one line per "
                "parameter and time: choose the devices to send (devices: [...] / --device)"
            )
        groups.setdefault(r.parameter, []).append(r)
    return groups


__all__ = [
    "MODES",
    "CycleFile",
    "Line",
    "Mode",
    "check_cycle",
    "cycle_end",
    "cycle_ends",
    "cycle_file",
    "cycle_window",
    "each_lines",
    "mean_lines",
    "period_status",
    "second_of",
    "split_cycles",
]
