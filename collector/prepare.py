"""A flush's messages made ready for the warehouse, with no broker and no QuestDB in sight:

    admit -> sequence -> measurement controls -> warehouse columns

``admit`` runs on arrival (one message); ``Preparation.prepare`` runs per flush
(many messages). Judgements of a flush are provisional (its ``FlushToken``)
until the warehouse committed it; the caller commits or aborts the token.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from itertools import chain

import numpy as np
import structlog

from collector.admission import LATE_AFTER_NS, Accepted, Rejected, StationEvent, check_message, reject
from collector.analyzer_ranges import AnalyzerRanges
from collector.healing import gap_row
from collector.intake import PendingMessage
from collector.metrics import CollectorMetrics
from collector.qc.engine import QualityControl
from collector.registry import StationRegistry
from collector.revisions import RevisionFinder
from collector.sequence import DUPLICATE, NEW, FlushToken, SequenceTracker
from collector.sessions import SessionGuard
from store.commit import FlushRecords
from store.ilp_writer import IlpRow, ReadingColumns, ilp_row
from store.schema import BATCHES, STATION_EVENTS, TOUCHED_HOURS

log = structlog.get_logger("collector")

HOUR_NS = 3_600_000_000_000

Gap = tuple[str, int, int, int]  # station, first missing seq, last missing seq, when seen (ns)


@dataclass
class PreparedFlush:
    batch: list[PendingMessage]
    token: FlushToken
    new: list[PendingMessage]  # accepted, new batches: their readings are in ``columns``
    gaps: list[Gap]
    duplicates: int
    columns: ReadingColumns
    revisions: list[tuple[PendingMessage, IlpRow]] = field(default_factory=list)  # stored readings it changes


def admit(item: PendingMessage, registry: StationRegistry, sessions: SessionGuard | None = None) -> None:
    """Judge one message on arrival: accepted readings, a station event, or a reject."""
    try:
        # A stat per message (about 1 us): a station added, disabled or rotated
        # counts from the next message on, as it did when the flush checked.
        registry.reload_if_changed()
        item.outcome = check_message(item.topic, item.payload, registry, item.received_ns, sessions)
    except Exception as exc:  # a bug must not kill the network thread; the message is kept as a reject
        log.exception("check_failed", topic=item.topic, error=repr(exc))
        item.outcome = reject(
            item.topic, "", item.payload, item.received_ns, "internal_error", f"{type(exc).__name__}: {exc}"
        )
    item.readings = len(item.outcome.body) if isinstance(item.outcome, Accepted) else 0


class Preparation:
    def __init__(
        self,
        registry: StationRegistry,
        sequences: SequenceTracker,
        qc: QualityControl,
        metrics: CollectorMetrics,
        sessions: SessionGuard | None = None,
        revisions: RevisionFinder | None = None,  # None: no warehouse to look up, no revisions recorded
        ranges: AnalyzerRanges | None = None,  # the births' analyzer ranges; the qc's ThresholdSource reads them
    ) -> None:
        self.registry, self.sequences, self.qc, self.metrics = registry, sequences, qc, metrics
        self.sessions = sessions if sessions is not None else SessionGuard()
        self.revisions = revisions
        self.ranges = ranges

    def prepare(self, batch: list[PendingMessage]) -> PreparedFlush:
        """Sequence and flag a flush's messages and lay out their readings as columns.

        A message found reused or replayed becomes a reject; on any exception the flush's
        provisional judgements are aborted before it propagates.
        """
        self.registry.reload_if_changed()
        for item in batch:
            if item.outcome is None:
                item.outcome = check_message(item.topic, item.payload, self.registry, item.received_ns, self.sessions)
            if self.ranges is not None and isinstance(item.outcome, StationEvent) and item.outcome.birth is not None:
                self.ranges.learn(item.outcome.birth)  # before the flush's readings are flagged
        self.qc.reload_thresholds()
        token = self.sequences.begin_flush()
        try:
            new, gaps, duplicates = [], [], 0
            for item in batch:
                if not isinstance(item.outcome, Accepted):
                    continue
                body = item.outcome.body
                verdict = self.sequences.judge(
                    body.station, body.seq, item.outcome.payload_sha256, item.received_ns, token
                )
                if verdict.kind == NEW:
                    new.append(item)
                    if verdict.gap:
                        gaps.append((body.station, *verdict.gap, item.received_ns))
                elif verdict.kind == DUPLICATE:
                    duplicates += 1  # already committed: acknowledged, not rewritten
                else:
                    item.outcome = reject(
                        item.topic, body.station, item.payload, item.received_ns, verdict.kind, verdict.detail
                    )
            self.apply_measurement_controls(new)
            revisions = self.revisions.find(new) if self.revisions is not None and new else []
            columns = reading_columns(new)
        except BaseException:
            self.sequences.abort_flush(token)
            raise
        return PreparedFlush(batch, token, new, gaps, duplicates, columns, revisions)

    def apply_measurement_controls(self, new: list[PendingMessage]) -> None:
        """Flag every new reading (QARTOD flags, the deciding check and its cause), all messages in one pass."""
        todo = [i for i in new if i.qc is None]
        if not todo:
            return
        bodies = [i.outcome.body for i in todo]
        sizes = [len(b) for b in bodies]
        columns = tuple(tuple(chain.from_iterable(c)) for c in zip(*(b.columns() for b in bodies)))
        verdicts = self.qc.evaluate_columns([b.station for b in bodies], sizes, [i.received_ns for i in todo], columns)
        at = 0
        for item, n in zip(todo, sizes):
            item.qc = verdicts.slice(at, at + n)
            at += n
        deciding: Counter[tuple[str, int]] = Counter()
        fired_checks: Counter[str] = Counter()
        for i, fired in verdicts.fired():
            deciding[verdicts.check[i], int(verdicts.flag[i])] += 1
            fired_checks.update(fired)
        for (check, flag), count in deciding.items():
            self.metrics.flags.labels(check, str(flag)).inc(count)
        for check, count in fired_checks.items():
            self.metrics.checks_fired.labels(check).inc(count)


def reading_columns(items: list[PendingMessage]) -> ReadingColumns:
    """The readings of accepted, checked messages as one set of warehouse columns."""
    bodies = [i.outcome.body for i in items]
    sizes = [len(b) for b in bodies]

    def per_message(values: list) -> np.ndarray:
        return np.repeat(np.array(values, dtype=object), sizes)

    def joined(column: str) -> list:
        return list(chain.from_iterable(getattr(b, column) for b in bodies))

    ts = np.fromiter(chain.from_iterable(b.ts_ns for b in bodies), dtype=np.int64, count=sum(sizes))
    received = np.repeat(np.array([i.received_ns for i in items], dtype=np.int64), sizes)
    # A reading arriving long after it was measured is history, whichever side was offline.
    historical = np.repeat(np.array([b.historical for b in bodies], dtype=bool), sizes) | (
        ts < received - LATE_AFTER_NS
    )
    verdicts = [i.qc for i in items]
    if any(v is None for v in verdicts):
        # Only a caller that ran no measurement controls at all may write without them.
        if not all(v is None for v in verdicts):
            raise ValueError("some messages of this write have QC verdicts and some do not")
        verdicts = []
    return ReadingColumns(
        station=per_message([b.station for b in bodies]),
        seq=np.repeat(np.array([b.seq for b in bodies], dtype=np.int64), sizes),
        historical=historical,
        key_id=per_message([i.outcome.key_id for i in items]),
        received_ns=received,
        ts_ns=ts,
        device=joined("device"),
        parameter=joined("parameter"),
        value=joined("value"),
        unit=joined("unit"),
        status=joined("status"),
        cause=joined("cause"),
        qc_flag=np.concatenate([v.flag for v in verdicts]) if verdicts else None,
        qc_check=list(chain.from_iterable(v.check for v in verdicts)),
        qc_cause=list(chain.from_iterable(v.cause for v in verdicts)),
        qc_checks=list(chain.from_iterable(v.checks for v in verdicts)),
        source=per_message([b.source for b in bodies]),
        file_sha256=per_message([b.file_sha256 for b in bodies]),
    )


def flush_records(prepared: PreparedFlush) -> FlushRecords:
    """What a flush writes after its readings: ledger entries of the new batches still accepted
    (QuestDB may have refused some), rejects, station events and gaps."""
    batch = prepared.batch
    return FlushRecords(
        revisions=[row for item, row in prepared.revisions if isinstance(item.outcome, Accepted)],
        ledger=[ledger_row(i) for i in prepared.new if isinstance(i.outcome, Accepted)],
        rejects=[i.outcome.row for i in batch if isinstance(i.outcome, Rejected)],
        events=[event_row(i.outcome) for i in batch if isinstance(i.outcome, StationEvent)],
        gaps=[gap_row(*g) for g in prepared.gaps],
        touched=touched_rows([i for i in prepared.new if isinstance(i.outcome, Accepted)], time.time_ns()),
    )


def touched_rows(items: list[PendingMessage], written_ns: int) -> list[IlpRow]:
    """One ``touched_hours`` row per (station, hour) the committed readings fall in (hours labelled
    by their end): what the aggregator recomputes. ``written_ns`` is taken after the readings committed."""
    counts: Counter[tuple[str, int]] = Counter()
    for item in items:
        body = item.outcome.body
        ends = np.asarray(body.ts_ns, dtype=np.int64) // HOUR_NS * HOUR_NS + HOUR_NS
        hours, n = np.unique(ends, return_counts=True)
        for hour, count in zip(hours.tolist(), n.tolist()):
            counts[body.station, hour] += count
    return [
        ilp_row(TOUCHED_HOURS, written_ns, station=station, hour_end=hour, readings=count)
        for (station, hour), count in counts.items()
    ]


def ledger_row(item: PendingMessage) -> IlpRow:
    accepted = item.outcome
    body = accepted.body
    return ilp_row(
        BATCHES,
        body.sent_ns,
        station=body.station,
        key_id=accepted.key_id,
        seq=body.seq,
        payload_sha256=accepted.payload_sha256,
        readings=len(body),
        historical=body.historical,
        received_at=item.received_ns,
    )


def event_row(event: StationEvent) -> IlpRow:
    return ilp_row(
        STATION_EVENTS,
        event.received_ns,
        station=event.station,
        state=event.state,
        session=event.session,
        planned=event.planned,
        payload=event.payload,
    )
