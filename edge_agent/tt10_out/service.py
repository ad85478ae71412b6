"""TT10 out: each finished cycle's file from the outbox, queued durably, uploaded oldest first.

Runs in a thread of its own beside the agent's poll loop (ftplib blocks; SFTP gets its own
event loop per session), with its own read-only connection to the outbox. Every ``tick_s``,
for every target of the station file:

1. each cycle that ended at least ``settle_s`` ago and is past the target's cursor is built
   from the outbox's readings of that cycle (``broker_bridge.tt10.cycles``: mean or each, the
   codec's writer) and queued together with the cursor's move, in one transaction; a cycle
   without readings moves the cursor only; one whose file cannot be written is recorded with
   the reason;
2. the target's unsent files go up oldest first over one session; each is marked sent after
   its rename on the server succeeded; the first failure stops the run and sets the oldest
   file's next try (back-off doubling from ``retry_min_s`` to ``retry_max_s``), so files
   always arrive in cycle order, however long the outage;
3. files sent more than ``retention_days`` ago are dropped.

A target seen for the first time starts at the current cycle (no back-fill of older outbox
data). After a restart the cursor says where it was: the cycles missed while the agent was
down are built from what the outbox holds.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import structlog

from broker_bridge.tt10.codec import Tt10WriteError
from broker_bridge.tt10.cycles import NS_PER_S, cycle_end, cycle_ends, cycle_file, cycle_window
from broker_bridge.tt10.local_time import utc_ns_to_stamp
from broker_bridge.tt10.names import FileNameError
from edge_agent.outbox import OutboxReader
from edge_agent.tt10_out.clients import PasswordFileError, UploadError, deliver, read_password
from edge_agent.tt10_out.queue import QueuedFile, Tt10Queue
from station_profiles.profile_model import StationConfig, Tt10Target

log = structlog.get_logger("edge_agent.tt10_out")

#: At most this many cycles are built per target and tick (a restart after days catches up over a few ticks).
MAX_CYCLES_PER_TICK = 288
MAX_FILES_PER_SESSION = 100


class Tt10OutError(ValueError):
    """A TT10 target that cannot work as configured (its password file); the message says the fix."""


def queue_path_for(outbox_path: Path) -> Path:
    """The queue lives beside the outbox: ``outbox.sqlite`` -> ``outbox.sqlite.tt10.sqlite``."""
    return Path(f"{outbox_path}.tt10.sqlite")


def remote_dir(target: Tt10Target, station_id: str, end_ns: int) -> str:
    """The target's folder for the cycle ending at ``end_ns``, its date fields in Vietnam local time."""
    stamp = utc_ns_to_stamp(end_ns)  # the one conversion to local time, the codec's
    return target.remote_dir.format(
        station=station_id,
        prefix=target.prefix or station_id,
        yyyy=stamp[0:4],
        MM=stamp[4:6],
        dd=stamp[6:8],
        HH=stamp[8:10],
    )


class Tt10Out:
    def __init__(
        self, station: StationConfig, outbox_path: Path, queue_path: Path | None = None, *, tick_s: float = 1.0
    ) -> None:
        self.station = station
        self.station_id = station.id
        self.targets = list(station.tt10_out)
        self.tick_s = tick_s
        for target in self.targets:
            try:
                read_password(target.password_file)
            except PasswordFileError as exc:
                raise Tt10OutError(f"tt10_out {target.name}: {exc}") from exc
        self.queue = Tt10Queue(queue_path or queue_path_for(outbox_path))
        self.outbox_path = Path(outbox_path)
        self._reader: OutboxReader | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the thread ----------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"tt10-out-{self.station_id}", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        if self._reader is not None:
            self._reader.close()
        self.queue.close()

    def _run(self) -> None:
        log.info("tt10_out_starting", station=self.station_id, targets=[t.name for t in self.targets])
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception as exc:  # a tick that fails is logged and tried again; the thread never dies quietly
                log.error("tt10_out_tick_failed", station=self.station_id, error=repr(exc))
            self._stop.wait(self.tick_s)

    # -- one tick ------------------------------------------------------------
    def tick(self, now_ns: int | None = None) -> None:
        for target in self.targets:
            now = now_ns or time.time_ns()
            self.build_finished_cycles(target, now)
            self.upload_due(target, now)
            expired = self.queue.expire(target.name, target.retention_days, now)
            if expired:
                log.info("tt10_out_expired", station=self.station_id, target=target.name, files=expired)

    def build_finished_cycles(self, target: Tt10Target, now_ns: int) -> int:
        """Queue the files of the cycles finished since the cursor; returns how many cycles were handled."""
        finished_until = now_ns - int(target.settle_s * NS_PER_S) - NS_PER_S
        last = self.queue.last_cycle(target.name)
        if last is None:
            last = cycle_end(finished_until, target.cycle_s)
            if last > finished_until:
                last -= target.cycle_s * NS_PER_S
            self.queue.start_at(target.name, last)
            log.info("tt10_out_target_started", station=self.station_id, target=target.name, after_cycle_ns=last)
        ends = cycle_ends(last, finished_until, target.cycle_s)[:MAX_CYCLES_PER_TICK]
        for end in ends:
            self._build(target, end)
        return len(ends)

    def _build(self, target: Tt10Target, end: int) -> None:
        if self._reader is None:
            self._reader = OutboxReader(self.outbox_path)
        readings = self._reader.readings_between(*cycle_window(end, target.cycle_s))
        if target.devices:
            readings = [r for r in readings if r.device in target.devices]
        if not readings:
            self.queue.add_cycle(target.name, end)
            log.info("tt10_out_cycle_empty", station=self.station_id, target=target.name, cycle_end_ns=end)
            return
        folder = remote_dir(target, self.station_id, end)
        try:
            f = cycle_file(
                target.prefix or self.station_id,
                end,
                readings,
                mode=target.mode,
                form=target.name_form,
                decimals=target.decimals,
            )
        except (Tt10WriteError, FileNameError) as exc:
            self.queue.add_cycle(target.name, end, remote_dir=folder, error=str(exc))
            log.error(
                "tt10_out_cycle_unwritable",
                station=self.station_id,
                target=target.name,
                cycle_end_ns=end,
                error=str(exc),
            )
            return
        self.queue.add_cycle(target.name, end, name=f.name, remote_dir=folder, content=f.content, lines=len(f.lines))
        log.info(
            "tt10_out_queued",
            station=self.station_id,
            target=target.name,
            file=f.name,
            remote_dir=folder,
            lines=len(f.lines),
            readings=len(readings),
        )

    def upload_due(self, target: Tt10Target, now_ns: int) -> int:
        """Send the target's unsent files oldest first, if the oldest is due; returns how many were sent."""
        pending = self.queue.pending(target.name, MAX_FILES_PER_SESSION)
        if not pending or pending[0].next_try_ns > now_ns:
            return 0

        done: list[QueuedFile] = []

        def on_sent(f) -> None:
            self.queue.mark_sent(target.name, f.cycle_end_ns)
            done.append(f)
            log.info(
                "tt10_out_sent",
                station=self.station_id,
                target=target.name,
                file=f.name,
                remote_dir=f.remote_dir,
                attempts=f.attempts + 1,
            )

        try:
            deliver(target, pending, on_sent, should_stop=self._stop.is_set)
        except UploadError as exc:
            failed = pending[len(done)]
            delay_s = min(target.retry_min_s * 2 ** min(failed.attempts, 30), target.retry_max_s)
            self.queue.mark_failed(target.name, failed.cycle_end_ns, str(exc), now_ns + int(delay_s * NS_PER_S))
            log.warning(
                "tt10_out_upload_failed",
                station=self.station_id,
                target=target.name,
                file=failed.name,
                attempts=failed.attempts + 1,
                retry_in_s=delay_s,
                pending=len(pending) - len(done),
                error=str(exc),
            )
        return len(done)

    def status(self) -> dict[str, dict[str, int | None]]:
        """Per target: pending, sent, unwritable, oldest pending cycle (for the station status)."""
        return {t.name: self.queue.counts(t.name) for t in self.targets}
