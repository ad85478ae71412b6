"""The flush pipeline: prepare the next flush while the one before it commits.

Two flushes at most are under way: one whose readings' transaction runs on the
warehouse's readings thread, and the next, being prepared. A flush settles
(ledger, rejects, events, gaps, then acknowledgements) only after the one
before it, so the sequence tracker's provisional numbers (``FlushToken``)
commit oldest first. Whichever thread holds the lock steps the pipeline: the
MQTT network thread under load, the collector's run loop otherwise.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

import structlog

from collector.admission import reject
from collector.intake import Intake, PendingMessage
from collector.metrics import CollectorMetrics
from collector.prepare import Preparation, PreparedFlush, flush_records, reading_columns
from store.commit import FlushRecords, Warehouse
from store.ilp_writer import SerialisedRows, WarehouseRefused, WarehouseUnavailable

log = structlog.get_logger("collector")


@dataclass(slots=True)
class Sending:
    """The flush in flight: prepared, its readings' transaction under way on the readings thread."""

    prepared: PreparedFlush
    readings: Future


class FlushPipeline:
    def __init__(
        self,
        intake: Intake,
        preparation: Preparation,
        warehouse: Warehouse,
        metrics: CollectorMetrics,
        ask_for_resend: Callable[[str, int, int], None],
        after_settle: Callable[[], None],
        extra_gap_rows: Callable[[], list] = list,
        flush_committed: Callable[[PreparedFlush, FlushRecords], None] | None = None,
    ) -> None:
        self.intake, self.preparation, self.warehouse, self.metrics = intake, preparation, warehouse, metrics
        self.sequences = preparation.sequences
        self._ask_for_resend, self._after_settle = ask_for_resend, after_settle
        # Healing and receipts (collector/service.py): gap rows to write with a flush (closed gaps),
        # and what to do once a flush is committed (receipts to its stations).
        self._extra_gap_rows, self._flush_committed = extra_gap_rows, flush_committed
        self._sending: Sending | None = None
        self._lock = threading.Lock()  # one step at a time, whichever thread runs it

    @property
    def lock(self) -> threading.Lock:
        """Held while the pipeline steps: work on the sequence state outside a step takes it too."""
        return self._lock

    def readings_committed(self) -> bool:
        """The flush in flight has its readings in QuestDB and waits for its ledger and acknowledgements."""
        return self._sending is not None and self._sending.readings.done()

    def step(self, force: bool = False, sync: bool = False) -> None:
        """One step of the flush pipeline, by whichever thread holds the flush lock: prepare the next
        due messages, settle the flush in flight (ledger, acknowledgements), then send the new one's
        readings in the background (or at once, with ``sync``)."""
        with self._lock:
            batch = self.intake.take(force)
            if not batch:
                if self._sending is not None and (force or sync or self.readings_committed()):
                    self._finish_sending()
                return
            try:
                prepared, readings = self._prepare(batch)
            except WarehouseUnavailable:
                self.intake.give_back(batch)
                raise
            except Exception as exc:
                # A message that breaks the preparation: settle what is in flight, then go message by message.
                try:
                    self._finish_sending()
                except BaseException:
                    self.intake.give_back(batch)
                    raise
                log.exception("flush_failed_isolating", messages=len(batch), error=repr(exc))
                self.flush_isolating(batch)
                return
            try:
                settled = self._finish_sending()
            except BaseException:
                self.sequences.abort_flush(prepared.token)
                self.intake.give_back(batch)
                raise
            if not settled:
                # The flush in flight went message by message; this one was judged against its
                # provisional numbers, so it is given back and prepared again (QC verdicts are kept).
                self.sequences.abort_flush(prepared.token)
                self.intake.give_back(batch)
                return
            self._sending = Sending(prepared, self.warehouse.send_readings(readings))
            self._sending.readings.add_done_callback(self.intake.wake)
            if sync:
                self._finish_sending()

    def _finish_sending(self) -> bool:
        """Settle the flush in flight, if any. False: it had to be isolated message by message."""
        sending, self._sending = self._sending, None
        if sending is None:
            return True
        prepared = sending.prepared
        settled = True
        try:
            with self.metrics.flush_seconds.time():
                self._settle(prepared, sending.readings)
        except WarehouseUnavailable:
            self.sequences.abort_flush(prepared.token)
            self.intake.give_back(prepared.batch)
            raise
        except Exception as exc:
            self.sequences.abort_flush(prepared.token)
            log.exception("flush_failed_isolating", messages=len(prepared.batch), error=repr(exc))
            self.flush_isolating(prepared.batch)
            settled = False
        self._after_settle()
        return settled

    def flush_isolating(self, batch: list[PendingMessage]) -> None:
        """A message that breaks the flush must not stop the collector, nor hold up the others.

        An unexpected error (a bug, or a row the warehouse refuses that no
        check foresaw) sends the batch through message by message; the one
        that still fails becomes a reject with the error, so it is kept,
        acknowledged, and never redelivered into a crash loop. Whatever is not
        settled when QuestDB turns out to be down waits again.
        """
        try:
            self._flush(batch)
        except WarehouseUnavailable:
            self.intake.give_back(batch)
            raise
        except Exception as exc:
            log.exception("flush_failed_isolating", messages=len(batch), error=repr(exc))
            for n, item in enumerate(batch):
                try:
                    try:
                        self._flush([item])
                    except WarehouseUnavailable:
                        raise
                    except Exception as single:
                        log.exception("message_breaks_flush", topic=item.topic, error=repr(single))
                        item.outcome = reject(
                            item.topic,
                            "",
                            item.payload,
                            item.received_ns,
                            "internal_error",
                            f"{type(single).__name__}: {single}",
                        )
                        self._flush([item])
                except BaseException:
                    self.intake.give_back(batch[n:])
                    raise

    def _flush(self, batch: list[PendingMessage]) -> None:
        """One flush start to end, in this thread (the isolation path)."""
        prepared, readings = self._prepare(batch)
        try:
            self._settle(prepared, readings)
        except BaseException:
            self.sequences.abort_flush(prepared.token)
            raise

    def _prepare(self, batch: list[PendingMessage]) -> tuple[PreparedFlush, SerialisedRows]:
        prepared = self.preparation.prepare(batch)
        try:
            return prepared, self.warehouse.serialise_readings(prepared.columns)
        except BaseException:
            self.sequences.abort_flush(prepared.token)
            raise

    def _settle(self, prepared: PreparedFlush, readings: Future | SerialisedRows) -> None:
        """Commit the flush (waiting for its readings' transaction, or making it), then acknowledge."""
        written, records = self.warehouse.commit(
            readings,
            refused=lambda exc: self._write_one_by_one(prepared.new, str(exc)),
            records=lambda: self._records(prepared),
        )
        self.sequences.commit_flush(prepared.token)
        self.metrics.flushes.inc()
        self.metrics.readings.inc(written)
        self.metrics.duplicates.inc(prepared.duplicates)
        self.metrics.events.inc(len(records.events))
        self.metrics.gaps.inc(len(prepared.gaps))
        self.metrics.write_lag.set((time.time_ns() - prepared.batch[0].received_ns) / 1e9)
        for station, first, last, _ in prepared.gaps:
            log.warning(
                "sequence_gap", station=station, first_missing=first, last_missing=last, missing=last - first + 1
            )
            self._ask_for_resend(station, first, last)
        for row in records.rejects:
            self.metrics.rejects.labels(row.reason).inc()
            log.warning("message_rejected", station=row.claimed_station, reason=row.reason, detail=row.detail)
        if self._flush_committed is not None:
            self._flush_committed(prepared, records)
        self.intake.settled(prepared.batch)

    def _records(self, prepared: PreparedFlush) -> FlushRecords:
        records = flush_records(prepared)
        records.gaps += self._extra_gap_rows()
        return records

    def _write_one_by_one(self, accepted: list[PendingMessage], error: str) -> int:
        """QuestDB refused the batch: find the messages it refuses and turn them into rejects."""
        log.error("warehouse_refused_batch", error=error, messages=len(accepted))
        written = 0
        for item in accepted:
            try:
                written += self.warehouse.write_readings(reading_columns([item]))
            except WarehouseRefused as exc:
                item.outcome = reject(
                    item.topic, item.outcome.body.station, item.payload, item.received_ns, "warehouse_refused", str(exc)
                )
        return written
