"""Healing that does not give up: every recorded gap is asked for again, with back-off, until it is
filled or the station says it no longer holds the missing batches (then it is closed as "lost at
source", with the ranges, in ``sequence_gaps``: never silently).

Open gaps live in the warehouse (``sequence_gaps``, state ``open``), so a restarted collector reads
them back (``store.queries.open_gaps``) and asks again. A re-send request lost with a crashed broker
is therefore repeated. What is still missing of a gap is the gap's range minus what the warehouse
committed (``SequenceTracker.committed``); what the station no longer holds comes from its
``ResendReport``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from broker_bridge.station_messages import ResendReport
from collector.sequence import CommittedRanges, SequenceTracker
from store.ilp_writer import IlpRow, ilp_row
from store.schema import SEQUENCE_GAPS

log = structlog.get_logger("collector")

OPEN, FILLED, LOST_AT_SOURCE = "open", "filled", "lost_at_source"


@dataclass(frozen=True)
class HealingPolicy:
    first_retry_s: float = 30.0  # the first repeat of a re-send request; doubling per repeat
    max_retry_s: float = 600.0


@dataclass
class OpenGap:
    station: str
    first: int
    last: int
    seen_ns: int  # the row's key in sequence_gaps, with station and first
    next_ask: float  # monotonic
    retry_s: float
    not_kept: CommittedRanges = field(default_factory=CommittedRanges)  # what the station said it no longer holds
    asks: int = 0


def gap_row(
    station: str, first: int, last: int, seen_ns: int, state: str = OPEN, lost: int = 0, detail: str = ""
) -> IlpRow:
    return ilp_row(
        SEQUENCE_GAPS,
        seen_ns,
        station=station,
        first_missing=first,
        last_missing=last,
        state=state,
        lost=lost,
        detail=detail,
    )


class GapBook:
    """The open gaps, which to ask for again now, and the rows that close them."""

    def __init__(self, sequences: SequenceTracker, policy: HealingPolicy, clock: Callable[[], float] = time.monotonic):
        self.sequences, self.policy, self.clock = sequences, policy, clock
        self.gaps: list[OpenGap] = []
        self._closing: list[IlpRow] = []  # rows to write with the next flush (a rewrite is harmless: DEDUP)
        self._lock = threading.RLock()  # the flush thread settles; the run loop asks again while idle

    def load(self, rows: list[tuple[str, int, int, int]]) -> None:
        """Open gaps read from the warehouse at start: asked for at once (the last ask may have died with a broker)."""
        with self._lock:
            for station, first, last, seen_ns in rows:
                # Due now; the repeat after this ask comes first_retry_s later.
                self.gaps.append(OpenGap(station, first, last, seen_ns, self.clock(), self.policy.first_retry_s / 2))

    def recorded(self, station: str, first: int, last: int, seen_ns: int) -> None:
        """A gap just committed as open (and asked for once already)."""
        with self._lock:
            self.gaps.append(
                OpenGap(
                    station, first, last, seen_ns, self.clock() + self.policy.first_retry_s, self.policy.first_retry_s
                )
            )

    def report(self, report: ResendReport) -> None:
        with self._lock:
            for gap in self.gaps:
                if gap.station != report.station:
                    continue
                for first, last in report.not_kept:
                    low, high = max(first, gap.first), min(last, gap.last)
                    if low <= high:
                        gap.not_kept.add_range(low, high)

    def missing(self, gap: OpenGap) -> list[tuple[int, int]]:
        committed = self.sequences.committed.get(gap.station) or CommittedRanges()
        return committed.missing(gap.first, gap.last)

    def settle(self) -> None:
        """Close the gaps with nothing left to wait for: filled, or the rest is lost at source."""
        with self._lock:
            still_open = []
            for gap in self.gaps:
                holes = self.missing(gap)
                lost = [
                    (max(first, a), min(last, b)) for first, last in holes for a, b in gap.not_kept.ranges()
                    if a <= last and b >= first
                ]  # fmt: skip
                waiting = [h for first, last in holes for h in gap.not_kept.missing(first, last)]
                if waiting:
                    still_open.append(gap)
                    continue
                if not holes:
                    self._closing.append(gap_row(gap.station, gap.first, gap.last, gap.seen_ns, FILLED))
                    log.info("sequence_gap_filled", station=gap.station, first_missing=gap.first, last_missing=gap.last)
                    continue
                count = sum(last - first + 1 for first, last in lost)
                detail = "the station no longer holds " + ", ".join(f"{a}..{b}" for a, b in lost)
                self._closing.append(
                    gap_row(gap.station, gap.first, gap.last, gap.seen_ns, LOST_AT_SOURCE, count, detail)
                )
                log.error(
                    "sequence_gap_lost_at_source",
                    station=gap.station,
                    first_missing=gap.first,
                    last_missing=gap.last,
                    lost=count,
                    detail=detail,
                )
            self.gaps = still_open

    def due(self) -> list[tuple[str, int, int]]:
        """(station, first, last) to ask for again now: what is still missing and not known lost; back-off doubles."""
        with self._lock:
            now, asks = self.clock(), []
            for gap in self.gaps:
                if now < gap.next_ask:
                    continue
                for first, last in self.missing(gap):
                    asks += [(gap.station, a, b) for a, b in gap.not_kept.missing(first, last)]
                gap.asks += 1
                gap.retry_s = min(gap.retry_s * 2, self.policy.max_retry_s)
                gap.next_ask = now + gap.retry_s
            return asks

    def closing_rows(self) -> list[IlpRow]:
        with self._lock:
            return list(self._closing)

    def written(self, rows: list[IlpRow]) -> None:
        """Rows committed with a flush: no longer to write."""
        with self._lock:
            done = {id(row) for row in rows}
            self._closing = [row for row in self._closing if id(row) not in done]

    def open_count(self) -> int:
        with self._lock:
            return len(self.gaps)
