"""Per-station sequence tracking: new batches, duplicates, replays, and gaps.

A station numbers its batches 1, 2, 3, ... and never reuses a number. The
collector keeps, per station, the highest number committed and the content
hash of recent ones; older numbers are looked up in the ``batches`` ledger
in QuestDB. Identical bytes seen again soon are a redelivery (accepted, not
rewritten); identical bytes seen again after the replay window are a replay;
different content under a used number is a forgery or a reset station.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import psycopg

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
        self.begin_flush()

    def seed(self) -> int:
        """Start from the ledger's highest sequence number per station."""
        if self.conninfo is None:
            return 0
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            rows = conn.execute("SELECT station, max(seq) FROM batches GROUP BY station").fetchall()
        self.highest.update({station: seq for station, seq in rows})
        return len(rows)

    def _stored(self, station: str, seq: int) -> tuple[str, int] | None:
        recent = self._recent.get(station)
        if recent is not None and seq in recent:
            return recent[seq]
        if self.conninfo is None or seq > self.highest.get(station, 0):
            return None
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            row = conn.execute(
                "SELECT payload_sha256, received_at::long FROM batches WHERE station = %s AND seq = %s LIMIT 1",
                (station, seq),
            ).fetchone()
        return None if row is None else (row[0], row[1])

    def begin_flush(self) -> None:
        """Judgements of one flush are provisional until the warehouse committed it."""
        self._pending: dict[tuple[str, int], tuple[str, int]] = {}
        self._pending_highest: dict[str, int] = {}

    def judge(self, station: str, seq: int, payload_sha256: str, received_ns: int) -> Verdict:
        stored = self._pending.get((station, seq)) or self._stored(station, seq)
        if stored is not None:
            stored_hash, first_received = stored
            if stored_hash != payload_sha256:
                return Verdict(SEQUENCE_REUSE, f"{station} already used seq {seq} for other content (sha256 {stored_hash[:16]}...)")
            if received_ns - first_received > self.replay_window_ns:
                age_days = (received_ns - first_received) / DAY_NS
                return Verdict(REPLAYED, f"{station} seq {seq} was stored {age_days:.1f} days ago; identical bytes, nothing written")
            return Verdict(DUPLICATE)
        highest = max(self.highest.get(station, 0), self._pending_highest.get(station, 0)) or None
        gap = None
        if self.track_gaps and highest is not None and seq > highest + 1:
            gap = (highest + 1, seq - 1)
        self._pending[(station, seq)] = (payload_sha256, received_ns)
        if seq > self._pending_highest.get(station, 0):
            self._pending_highest[station] = seq
        return Verdict(NEW, gap=gap)

    def commit_flush(self) -> None:
        for (station, seq), stored in self._pending.items():
            if seq > self.highest.get(station, 0):
                self.highest[station] = seq
            recent = self._recent.setdefault(station, OrderedDict())
            recent[seq] = stored
            while len(recent) > self.recent_per_station:
                recent.popitem(last=False)
        self.begin_flush()
