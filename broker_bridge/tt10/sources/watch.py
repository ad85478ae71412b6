"""Watch mode (``quantrac bridge tt10 watch DIR``): read the drop folders a province's existing FTP
server writes, without touching the stations or the server.

Every scan walks every station folder (``layout.py``), so the first scan after a start is the full
rescan that finds what was written while the watcher was down. A file is taken once it has not
been modified for ``settle_s`` (its mtime is that old) and reads back with the size and mtime it
had before reading; it is handed to the sink and only then remembered (``taken.py``), so it is
never taken twice and never missed. The watcher never moves, renames or deletes a file.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from broker_bridge.tt10.sources.layout import is_day_folder, is_tt10_name, may_descend, station_of
from broker_bridge.tt10.sources.taken import TakenMemory
from broker_bridge.tt10.sources.upload import Upload, UploadSink, take_all

log = structlog.get_logger("broker_bridge.tt10.sources.watch")

TAKE_TOGETHER = 100  # settled files handed to the sink at once (their fsyncs shared), then remembered


@dataclass(frozen=True)
class WatchSettings:
    root: Path  # the folder holding one folder per station
    memory: Path  # the SQLite file remembering what was taken
    settle_s: float = 10.0  # a file unmodified this long is finished
    interval_s: float = 5.0  # between scans
    stations: Mapping[str, str] = field(default_factory=dict)  # station folder -> station id (default: the name)


@dataclass
class ScanResult:
    taken: int = 0
    unsettled: int = 0
    failed: int = 0


class Watcher:
    def __init__(self, settings: WatchSettings, sink: UploadSink) -> None:
        self.settings = settings
        self.sink = sink
        self.source = f"watch:{settings.root}"
        self.memory = TakenMemory(settings.memory)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._warned: set[str] = set()

    def _files(self) -> Iterator[tuple[str, Path]]:
        """(station id, path) of every TT10 file in a layout below a station folder, sorted."""
        root = self.settings.root
        for entry in sorted(os.scandir(root), key=lambda e: e.name):
            if not entry.is_dir():
                continue
            station = station_of(entry.name, self.settings.stations)
            if station is None:
                if entry.name not in self._warned:
                    self._warned.add(entry.name)
                    log.warning("tt10_watch_folder_not_a_station", folder=entry.path, fix="map it under stations:")
                continue
            for path in self._walk(Path(entry.path), ()):
                yield station, path

    def _walk(self, folder: Path, parts: tuple[str, ...]) -> Iterator[Path]:
        for entry in sorted(os.scandir(folder), key=lambda e: e.name):
            if entry.is_dir(follow_symlinks=False):
                if may_descend((*parts, entry.name)):
                    yield from self._walk(Path(entry.path), (*parts, entry.name))
            elif entry.is_file(follow_symlinks=False) and is_day_folder(parts) and is_tt10_name(entry.name):
                yield Path(entry.path)

    def scan_once(self) -> ScanResult:
        result = ScanResult()
        settle_ns = int(self.settings.settle_s * 1e9)
        pending: list[tuple[Upload, int, int, str]] = []  # (upload, size, mtime, sha256): not yet with the sink
        for station, path in self._files():
            rel = path.relative_to(self.settings.root).as_posix()
            try:
                before = path.stat()
                if self.memory.seen(self.source, rel, before.st_size, before.st_mtime_ns):
                    continue
                if time.time_ns() - before.st_mtime_ns < settle_ns:
                    result.unsettled += 1
                    continue
                data = path.read_bytes()
                after = path.stat()
                if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns) or len(
                    data
                ) != after.st_size:
                    result.unsettled += 1  # written while read: next scan
                    continue
                sha = hashlib.sha256(data).hexdigest()
                if self.memory.has_hash(self.source, rel, sha):  # touched, same bytes: taken already
                    self.memory.remember(self.source, rel, after.st_size, after.st_mtime_ns, sha, station)
                    continue
                upload = Upload(
                    account=self.source,
                    station=station,
                    name=path.name,
                    path=rel,
                    data=data,
                    received_ns=after.st_mtime_ns,
                    transport="watch",
                    peer=str(self.settings.root),
                    interrupted=False,
                )
                pending.append((upload, after.st_size, after.st_mtime_ns, sha))
            except FileNotFoundError:
                continue  # removed by the province's server since the listing
            except Exception as exc:  # noqa: BLE001 - logged, not remembered: the next scan tries again
                result.failed += 1
                log.error("tt10_watch_not_taken", station=station, transport="watch", path=rel, error=repr(exc))
            if len(pending) >= TAKE_TOGETHER:
                self._hand_on(pending, result)
        self._hand_on(pending, result)
        self.memory.commit()
        return result

    def _hand_on(self, pending: list[tuple[Upload, int, int, str]], result: ScanResult) -> None:
        """The pending files to the sink together, then remembered; a sink that raises took none of them."""
        if not pending:
            return
        try:
            take_all(self.sink, [upload for upload, *_ in pending])
        except Exception as exc:  # noqa: BLE001 - logged, not remembered: the next scan tries again
            result.failed += len(pending)
            for upload, *_ in pending:
                log.error(
                    "tt10_watch_not_taken", station=upload.station, transport="watch", path=upload.path, error=repr(exc)
                )
        else:
            for upload, size, mtime_ns, sha in pending:
                result.taken += 1
                log.info(
                    "tt10_upload_taken",
                    account=self.source,
                    station=upload.station,
                    transport="watch",
                    path=upload.path,
                )
                self.memory.remember(self.source, upload.path, size, mtime_ns, sha, upload.station)
        pending.clear()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                result = self.scan_once()
                if result.taken or result.failed:
                    log.info("tt10_watch_scan", root=str(self.settings.root), **result.__dict__)
            except OSError as exc:  # the folder unmounted, say: wait and scan again
                log.error("tt10_watch_scan_failed", root=str(self.settings.root), error=repr(exc))
            self._stop.wait(self.settings.interval_s)

    def start(self) -> Watcher:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="tt10-watch", daemon=True)
        self._thread.start()
        log.info("tt10_watch_started", root=str(self.settings.root), settle_s=self.settings.settle_s)
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        self.memory.close()
        log.info("tt10_watch_stopped", root=str(self.settings.root))
