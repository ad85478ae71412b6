"""Each station's analyzer measuring ranges, as its newest birth states them.

The agent's birth (``broker_bridge.station_messages.StationDescription.ranges``) carries every
value's measuring range from its device's analyzer profile; the measurement controls fail a
reading outside it (flag 4, ``gross_range``, the cause naming the profile), while the operator's
range stays suspect (collector/qc/README.md). The preparation step learns the births of each
flush before it flags the flush's readings; at start the collector reads back each station's
newest stored birth (``store.queries.newest_births``), so the ranges survive a restart. A
station whose birth was never seen gets the operator's thresholds only.

A birth from an older session than the one already learnt (a late retained copy) changes
nothing; a newer birth replaces the station's ranges, also with none (an agent without ranges,
or a bare publisher).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import structlog

from broker_bridge.json_message import MessageError
from broker_bridge.station_messages import Birth, MeasuringRange, parse_station_message

log = structlog.get_logger("collector")

RangeKey = tuple[str, str, str, str]  # station, device, parameter, unit


class AnalyzerRanges:
    """Station -> its newest birth's ranges; ``current()`` is what ``ThresholdSource`` applies.

    ``current()`` returns the same mapping until a range changes (the thresholds compare it by
    identity, as they do the registry's kinds, and apply it at their next reload, in the same
    flush). A change costs the station's own ranges, not all of them: the mapping is a new view of
    one dict updated in place. Not thread-safe: the flush loop is its caller.
    """

    def __init__(self) -> None:
        self._stations: dict[str, tuple[int, tuple[MeasuringRange, ...]]] = {}
        self._by_key: dict[RangeKey, tuple[float, float, str]] = {}
        self._current: Mapping[RangeKey, tuple[float, float, str]] = MappingProxyType(self._by_key)

    def current(self) -> Mapping[RangeKey, tuple[float, float, str]]:
        return self._current

    def learn(self, birth: Birth, quiet: bool = False) -> bool:
        """Take the ranges of a verified birth; True when the ranges in force changed."""
        ranges = birth.description.ranges if birth.description is not None else ()
        known = self._stations.get(birth.station)
        if known is not None and known[0] > birth.session:
            return False  # a will or birth of an older connection never overrides a newer one
        self._stations[birth.station] = (birth.session, ranges)
        if known is not None and known[1] == ranges:
            return False
        for r in known[1] if known is not None else ():
            self._by_key.pop((birth.station, r.device, r.parameter, r.unit), None)
        for r in ranges:
            self._by_key[birth.station, r.device, r.parameter, r.unit] = (r.low, r.high, r.profile)
        self._current = MappingProxyType(self._by_key)  # a new identity: the thresholds apply it
        if quiet:
            return True
        log.info(
            "analyzer_ranges_learnt",
            station=birth.station,
            session=birth.session,
            ranges=len(ranges),
            profiles=sorted({r.profile for r in ranges}),
        )
        return True

    def seed(self, births: Mapping[str, str]) -> int:
        """After a restart: station -> the JSON body of its newest stored birth. Returns how many
        stations have ranges. A stored body that does not parse (written by a collector that
        verified it under another contract) is logged and left out, never fatal."""
        for station, payload in births.items():
            try:
                message = parse_station_message(payload.encode("utf-8"))
            except MessageError as exc:
                log.warning("stored_birth_unreadable", station=station, error=str(exc))
                continue
            if isinstance(message, Birth) and message.station == station:
                self.learn(message, quiet=True)  # one line for all: the caller's analyzer_ranges_seeded
        return sum(1 for _session, ranges in self._stations.values() if ranges)

    def __len__(self) -> int:
        return len(self._current)
