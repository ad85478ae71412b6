"""Per-station sequence tracking: new batches, duplicates, replays, and gaps.

A station numbers its batches 1, 2, 3, ... and never reuses a number. The
collector keeps, per station, the highest number committed and the content
hash of recent ones; older numbers are looked up in the ``batches`` ledger
in QuestDB. Identical bytes seen again soon are a redelivery (accepted, not
rewritten); identical bytes seen again after the replay window are a replay;
different content under a used number is a forgery or a reset station.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from store.queries import ledger_entry, ledger_highest_seq, ledger_ranges

NEW, DUPLICATE, REPLAYED, SEQUENCE_REUSE = "new", "duplicate", "replayed", "sequence_reuse"
DAY_NS = 86_400 * 10**9


@dataclass(frozen=True)
class Verdict:
    kind: str
    detail: str = ""
    gap: tuple[int, int] | None = None  # (first missing, last missing)


class SequenceTracker:
    def __init__(
        self,
        conninfo: str | None,
        *,
        track_gaps: bool = True,
        replay_window_ns: int = 7 * DAY_NS,
        recent_per_station: int = 4096,
    ) -> None:
        self.conninfo = conninfo
        # With a shared subscription each collector sees only part of a
        # station's stream, so its own view of gaps would be wrong.
        self.track_gaps = track_gaps
        self.replay_window_ns = replay_window_ns
        self.recent_per_station = recent_per_station
        self.highest: dict[str, int] = {}
        self._recent: dict[str, OrderedDict[int, tuple[str, int]]] = {}
        self._open: list[FlushToken] = []
        # What the warehouse holds per station, for receipts and healing: from the ledger at start,
        # then every batch this collector saw committed (new, or found stored already).
        self.committed: dict[str, CommittedRanges] = {}

    def seed(self) -> int:
        """Start from the ledger: the highest sequence number and the committed ranges per station."""
        if self.conninfo is None:
            return 0
        highest = ledger_highest_seq(self.conninfo)
        self.highest.update(highest)
        self.merge_ledger(ledger_ranges(self.conninfo))
        return len(highest)

    def merge_ledger(self, ranges: Iterable[tuple[str, int, int]]) -> None:
        """Add (station, first, last) ranges the ledger holds (other collectors of a share group commit too)."""
        for station, first, last in ranges:
            self.committed.setdefault(station, CommittedRanges()).add_range(first, last)

    def committed_ranges(self, station: str) -> list[tuple[int, int]]:
        ranges = self.committed.get(station)
        return ranges.ranges() if ranges is not None else []

    def _stored(self, station: str, seq: int) -> tuple[str, int] | None:
        recent = self._recent.get(station)
        if recent is not None and seq in recent:
            return recent[seq]
        if self.conninfo is None or seq > self.highest.get(station, 0):
            return None
        return ledger_entry(self.conninfo, station, seq)

    def begin_flush(self) -> FlushToken:
        """Judgements of one flush are provisional until the warehouse committed it.

        Several flushes may be open at once (one being committed while the
        next is judged): a judgement sees every open flush's provisional
        numbers, and flushes commit or abort oldest first.
        """
        token = FlushToken()
        self._open.append(token)
        return token

    def judge(self, station: str, seq: int, payload_sha256: str, received_ns: int, token: FlushToken) -> Verdict:
        stored = None
        for open_flush in self._open:
            stored = open_flush.seen.get((station, seq))
            if stored is not None:
                break
        stored = stored or self._stored(station, seq)
        if stored is not None:
            stored_hash, first_received = stored
            if stored_hash != payload_sha256:
                return Verdict(
                    SEQUENCE_REUSE, f"{station} already used seq {seq} for other content (sha256 {stored_hash[:16]}...)"
                )
            if received_ns - first_received > self.replay_window_ns:
                age_days = (received_ns - first_received) / DAY_NS
                return Verdict(
                    REPLAYED,
                    f"{station} seq {seq} was stored {age_days:.1f} days ago; identical bytes, nothing written",
                )
            token.stored.append((station, seq))
            return Verdict(DUPLICATE)
        highest = max([self.highest.get(station, 0)] + [f.highest.get(station, 0) for f in self._open]) or None
        gap = None
        if self.track_gaps and highest is not None and seq > highest + 1:
            gap = (highest + 1, seq - 1)
        token.seen[(station, seq)] = (payload_sha256, received_ns)
        if seq > token.highest.get(station, 0):
            token.highest[station] = seq
        return Verdict(NEW, gap=gap)

    def commit_flush(self, token: FlushToken) -> None:
        if self._open[0] is not token:
            raise RuntimeError("flushes must commit oldest first")
        self._open.pop(0)
        for (station, seq), stored in token.seen.items():
            if seq > self.highest.get(station, 0):
                self.highest[station] = seq
            recent = self._recent.setdefault(station, OrderedDict())
            recent[seq] = stored
            while len(recent) > self.recent_per_station:
                recent.popitem(last=False)
        for station, seq in (*token.seen, *token.stored):
            self.committed.setdefault(station, CommittedRanges()).add(seq)

    def abort_flush(self, token: FlushToken) -> None:
        """Forget a flush that did not commit, and every younger one (they were judged against it)."""
        if token in self._open:
            del self._open[self._open.index(token) :]


class FlushToken:
    """One flush's provisional judgements: (station, seq) -> (sha256, first received), highest seq per station."""

    __slots__ = ("seen", "highest", "stored")

    def __init__(self) -> None:
        self.seen: dict[tuple[str, int], tuple[str, int]] = {}
        self.highest: dict[str, int] = {}
        self.stored: list[tuple[str, int]] = []  # (station, seq) found committed already (duplicates)

    def stations(self) -> set[str]:
        return {station for station, _ in (*self.seen, *self.stored)}


class CommittedRanges:
    """A station's committed sequence numbers as merged inclusive ranges (a batch arrives next to the last)."""

    __slots__ = ("_firsts", "_lasts")

    def __init__(self) -> None:
        self._firsts: list[int] = []
        self._lasts: list[int] = []

    def add(self, seq: int) -> None:
        if self._lasts and self._lasts[-1] + 1 == seq:  # the common case: the next batch
            self._lasts[-1] = seq
            return
        self.add_range(seq, seq)

    def add_range(self, first: int, last: int) -> None:
        lo = bisect.bisect_left(self._lasts, first - 1)  # the first range that ends at or after first - 1
        hi = bisect.bisect_right(self._firsts, last + 1)  # ranges from lo to hi touch or overlap [first, last]
        if lo < hi:
            first, last = min(first, self._firsts[lo]), max(last, self._lasts[hi - 1])
        self._firsts[lo:hi] = [first]
        self._lasts[lo:hi] = [last]

    def __contains__(self, seq: int) -> bool:
        i = bisect.bisect_left(self._lasts, seq)
        return i < len(self._lasts) and self._firsts[i] <= seq

    def missing(self, first: int, last: int) -> list[tuple[int, int]]:
        """The sub-ranges of [first, last] not committed."""
        holes, at = [], first
        i = bisect.bisect_left(self._lasts, first)
        while at <= last and i < len(self._firsts):
            if self._firsts[i] > at:
                holes.append((at, min(last, self._firsts[i] - 1)))
            at = max(at, self._lasts[i] + 1)
            i += 1
        if at <= last:
            holes.append((at, last))
        return holes

    def ranges(self) -> list[tuple[int, int]]:
        return list(zip(self._firsts, self._lasts))
