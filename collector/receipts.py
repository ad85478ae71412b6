"""Warehouse receipts to the stations, signed and published from a thread of their own.

After each commit the flush only notes which stations it committed (cheap, under the flush lock);
every ``interval_s`` this thread takes a snapshot of those stations' committed ranges under the
same lock, then signs and publishes one retained receipt per station outside it. Signing and
publishing inside the flush, on paho's network thread, cost a third of the collector's readings/s
with 1,000 stations (bench/bench_collector.py --receipts compare). A receipt waits at most
``interval_s``; the agent's time-out before it sends again is 30 s.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

import structlog

from broker_bridge.keys import SigningKey
from broker_bridge.receipts import receipt_of
from broker_bridge.topics import receipt_topic

log = structlog.get_logger("collector.receipts")


class ReceiptPublisher:
    def __init__(
        self,
        key: SigningKey,
        committed_ranges: Callable[[str], list[tuple[int, int]]],
        lock: threading.Lock | threading.RLock,
        publish: Callable[[str, bytes], None],
        interval_s: float = 2.0,
        now_ns: Callable[[], int] | None = None,
    ) -> None:
        import time

        self.key = key
        self._ranges = committed_ranges
        self._lock = lock  # the flush lock: committed ranges change under it
        self._publish = publish
        self.interval_s = interval_s
        self._now_ns = now_ns or time.time_ns
        self._pending: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.published = 0

    def committed(self, stations: Iterable[str]) -> None:
        """Called under the flush lock after a commit: these stations get a receipt soon."""
        self._pending.update(stations)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="receipts", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """The last receipts first: what was committed is told before the collector goes."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        self.publish_pending()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.publish_pending()
            except Exception as exc:  # a receipt is a courtesy the agent can wait for; the data path must go on
                log.error("receipts_failed", error=repr(exc))

    def publish_pending(self) -> int:
        with self._lock:
            stations, self._pending = self._pending, set()
            snapshot = {station: self._ranges(station) for station in stations}
        now = self._now_ns()
        for station, ranges in snapshot.items():
            receipt = receipt_of(station, ranges, now)
            self._publish(receipt_topic(station), receipt.signed(self.key).encode())
        self.published += len(snapshot)
        return len(snapshot)
