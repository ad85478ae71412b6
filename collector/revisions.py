"""Revisions: a later batch that changes an already stored reading is recorded, never a silent overwrite.

The warehouse keeps one row per (station, device, parameter, ts) and DEDUP UPSERT keeps the newest,
so before a flush is written the collector finds the readings whose key is already stored with
another value or status and records the old and the new (``reading_revisions``).

Looking up every reading would cost a query per flush for nothing: a live reading is newer than
anything the station has stored. Only a reading no newer than the station's newest reading seen
(stored at start-up, or accepted since) can have a stored twin; only those are looked up, in the
warehouse (once its readings' WAL is applied) and in the flushes not yet visible there.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable

from collector.intake import PendingMessage
from store.ilp_writer import IlpRow, WarehouseUnavailable, ilp_row
from store.queries import QueryError, newest_reading_ts, readings_applied, stored_readings
from store.schema import READING_REVISIONS

Stored = tuple[float | None, str, int, int]  # value, status, qc flag, seq
WAL_APPLY_WAIT_S = 10.0


class RevisionFinder:
    def __init__(self, conninfo: str) -> None:
        self.conninfo = conninfo
        self.newest: dict[str, int] = {}  # station -> newest reading ts seen; seed() reads the warehouse's
        self._unseen: list[PendingMessage] = []  # the previous flush's messages: maybe not visible in QuestDB yet

    def seed(self) -> int:
        """Each station's newest stored reading, read at start (not in the constructor: a collector
        started while QuestDB is down waits for it instead of exiting). Returns the stations seeded."""
        try:
            stored = newest_reading_ts(self.conninfo)
        except QueryError as exc:
            raise WarehouseUnavailable(f"cannot read the newest readings: {exc}") from exc
        for station, ts in stored.items():
            self.newest[station] = max(ts, self.newest.get(station, ts))
        return len(stored)

    def find(self, items: list[PendingMessage]) -> list[tuple[PendingMessage, IlpRow]]:
        """The revisions the new, checked messages ``items`` make (each with the message that makes it)."""
        candidates = []
        for item in items:
            body = item.outcome.body
            newest = self.newest.get(body.station)
            if newest is not None and min(body.ts_ns) <= newest:
                candidates.append(item)
            latest = max(body.ts_ns)
            if newest is None or latest > newest:
                self.newest[body.station] = latest
        earlier, self._unseen = self._unseen, list(items)
        if not candidates:
            return []
        stored = self._stored(candidates)
        batches = {(i.outcome.body.station, i.outcome.body.seq) for i in items}
        # The previous flush (it may still be committing), but not a batch prepared again now.
        _overlay(stored, [i for i in earlier if (i.outcome.body.station, i.outcome.body.seq) not in batches])
        looked_up = set(map(id, candidates))
        revisions = []
        for item in items:  # in arrival order: a message may revise one of the same flush
            if id(item) in looked_up:
                revisions.extend((item, row) for row in _revisions_of(item, stored))
            _overlay(stored, [item])
        return revisions

    def _stored(self, candidates: list[PendingMessage]) -> dict[tuple, Stored]:
        deadline = time.monotonic() + WAL_APPLY_WAIT_S
        try:
            while not readings_applied(self.conninfo):
                if time.monotonic() > deadline:
                    raise WarehouseUnavailable(f"readings' WAL not applied after {WAL_APPLY_WAIT_S} s")
                time.sleep(0.02)
            stored: dict[tuple, Stored] = {}
            for station, low, high in _ranges(candidates):
                for device, parameter, ts, value, status, qc_flag, seq in stored_readings(
                    self.conninfo, station, low, high
                ):
                    stored[station, device, parameter, ts] = (_value(value), status, qc_flag, seq)
            return stored
        except QueryError as exc:
            raise WarehouseUnavailable(f"cannot look up stored readings: {exc}") from exc


def _ranges(items: list[PendingMessage]) -> Iterable[tuple[str, int, int]]:
    spans: dict[str, tuple[int, int]] = {}
    for item in items:
        body = item.outcome.body
        low, high = spans.get(body.station, (min(body.ts_ns), max(body.ts_ns)))
        spans[body.station] = (min(low, *body.ts_ns), max(high, *body.ts_ns))
    return ((station, low, high) for station, (low, high) in spans.items())


def _value(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else value  # QuestDB's NULL double is NaN


def _flags(item: PendingMessage) -> list[int]:
    return [int(f) for f in item.qc.flag] if item.qc is not None else [0] * len(item.outcome.body)


def _overlay(stored: dict[tuple, Stored], items: list[PendingMessage]) -> None:
    """What these messages write, over what is stored: they are newer."""
    for item in items:
        body = item.outcome.body
        for ts, device, parameter, value, status, flag in zip(
            body.ts_ns, body.device, body.parameter, body.value, body.status, _flags(item)
        ):
            stored[body.station, device, parameter, ts] = (value, status, flag, body.seq)


def _revisions_of(item: PendingMessage, stored: dict[tuple, Stored]) -> Iterable[IlpRow]:
    body = item.outcome.body
    for ts, device, parameter, value, status, flag in zip(
        body.ts_ns, body.device, body.parameter, body.value, body.status, _flags(item)
    ):
        old = stored.get((body.station, device, parameter, ts))
        if old is None or old[3] == body.seq:  # new, or this very batch written before (a retried flush)
            continue
        old_value, old_status, old_flag, old_seq = old
        if old_value == value and old_status == status:
            continue  # the same reading again (a historical copy): nothing changes
        yield ilp_row(
            READING_REVISIONS,
            ts,
            station=body.station,
            device=device,
            parameter=parameter,
            old_value=old_value,
            old_status=old_status,
            old_qc_flag=old_flag,
            old_seq=old_seq,
            new_value=value,
            new_status=status,
            new_qc_flag=flag,
            new_seq=body.seq,
            revised_at=item.received_ns,
        )
