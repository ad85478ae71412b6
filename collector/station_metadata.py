"""The registry's description of its stations, copied into the warehouse (``station_metadata``) after
every good load of the file, so readers learn names, places and intervals through ``store`` alone.

The copy is written from the collector's run loop, never from the MQTT thread that notices a changed
file: a warehouse that is down delays the copy (retried with back-off), never a message.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import structlog

from collector.registry import StationEntry, StationRegistry
from store.errors import WarehouseRefused, WarehouseUnavailable
from store.ilp_writer import WarehouseWriter
from store.station_queries import StationMetadata, write_station_metadata

log = structlog.get_logger("collector.station_metadata")


def metadata_of(entries: Mapping[str, StationEntry]) -> list[StationMetadata]:
    return [
        StationMetadata(
            station=e.station_id,
            enabled=e.enabled,
            kind=e.kind,
            name=e.name,
            province_code=e.province_code,
            facility=e.facility,
            latitude=e.latitude,
            longitude=e.longitude,
            intervals=dict(e.intervals),
        )
        for e in (entries[sid] for sid in sorted(entries))
    ]


class StationMetadataCopy:
    """Writes one row per station whenever the registry's ``generation`` moved past the one written."""

    def __init__(
        self,
        registry: StationRegistry,
        ilp_conf: str,
        clock_ns: Callable[[], int] = time.time_ns,
        retry_max_s: float = 30.0,
    ) -> None:
        self.registry = registry
        self.writer = WarehouseWriter(ilp_conf)  # its own connection: the flush's writers belong to its lock
        self.clock_ns = clock_ns
        self.retry_max_s = retry_max_s
        self.written_generation = 0  # the registry's generation last copied (0: none yet)
        self._refused_generation = 0
        self._retry_at = 0.0
        self._delay = 0.5

    def due(self) -> bool:
        generation = self.registry.generation
        return generation != self.written_generation and generation != self._refused_generation

    def sync(self) -> int:
        """Copy the registry if it was (re)loaded since the last copy; returns the rows written (0: nothing due,
        or the warehouse is down and the copy waits for the next call after the back-off)."""
        self.registry.reload_if_changed()  # also when no message arrives to notice an edit
        if not self.due() or time.monotonic() < self._retry_at:
            return 0
        generation = self.registry.generation
        rows = metadata_of(self.registry.entries())
        try:
            written = write_station_metadata(self.writer, self.clock_ns(), rows)
        except WarehouseUnavailable as exc:
            log.warning("station_metadata_not_written", error=str(exc), retry_in_s=self._delay, stations=len(rows))
            self._retry_at = time.monotonic() + self._delay
            self._delay = min(self._delay * 2, self.retry_max_s)
            return 0
        except WarehouseRefused as exc:  # the table's shape is not ours (an old warehouse): retrying cannot help
            self._refused_generation = generation
            log.error("station_metadata_refused", error=str(exc), stations=len(rows), generation=generation)
            return 0
        self.written_generation = generation
        self._delay, self._retry_at = 0.5, 0.0
        log.info("station_metadata_written", stations=written, generation=generation)
        return written

    def close(self) -> None:
        self.writer.close()
