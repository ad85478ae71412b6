"""Group commit: every poller's readings in one transaction per window.

A poller awaits ``append`` and continues only once its readings are on disk.
Commits happen at most once per window (default 200 ms): an append after a
quiet spell is committed at once, while under load everything appended
within a window goes into one transaction with one fsync. An fsync per
reading is what made Telegraf's disk buffer time out (#18085).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import structlog

from broker_bridge.envelope import Reading
from edge_agent.outbox import Outbox

log = structlog.get_logger("edge_agent.group_commit")


class GroupCommitter:
    def __init__(self, outbox: Outbox, window_s: float = 0.2, max_readings: int = 50_000) -> None:
        if not 0 <= window_s <= 5:
            raise ValueError(f"commit window {window_s} s is outside 0..5 s")
        self.outbox = outbox
        self.window_s = window_s
        self.max_readings = max_readings  # commit early rather than hold a huge group in memory
        self._groups: list[tuple[Sequence[Reading], bool]] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._pending_readings = 0
        self._timer: asyncio.TimerHandle | None = None
        self._last_commit = float("-inf")
        self.commits = 0
        self.readings_committed = 0

    async def append(self, readings: Sequence[Reading], historical: bool = False) -> None:
        if not readings:
            return
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._groups.append((readings, historical))
        self._waiters.append(done)
        self._pending_readings += len(readings)
        if self._pending_readings >= self.max_readings:
            self.commit_now()
        elif self._timer is None:
            delay = max(0.0, self._last_commit + self.window_s - time.monotonic())
            self._timer = loop.call_later(delay, self.commit_now)
        await done

    def commit_now(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        groups, waiters = self._groups, self._waiters
        self._groups, self._waiters, self._pending_readings = [], [], 0
        if not groups:
            return
        self._last_commit = time.monotonic()
        try:
            count = self.outbox.append_groups(groups)
        except Exception as exc:  # every waiter must learn that its readings are not durable
            log.error("outbox_commit_failed", station=self.outbox.station_id, error=str(exc))
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(exc)
            return
        self.commits += 1
        self.readings_committed += count
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
