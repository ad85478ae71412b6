"""The collector: MQTT in, checks, QuestDB out, acknowledgement last.

    intake (collector/intake.py)       MQTT callbacks; messages held, waiting or in flight; back-pressure
      -> preparation (prepare.py)      admit -> sequence -> measurement controls -> warehouse columns
      -> commit (store/commit.py)      readings, then ledger, rejects, station events, gaps
      -> intake.settled                acknowledged, in arrival order, on the connection that delivered

A message is acknowledged to the broker only after its readings (or its
reject record) are committed in QuestDB. Until then the broker still owns
it, so a crash of the collector or an outage of QuestDB loses nothing: the
persistent session redelivers, and DEDUP makes the rewrite harmless.

Flushes form a pipeline of two: while one flush's readings are committed on
the warehouse's readings thread, the next is prepared; it is committed after
the one before it (sequence numbers are provisional until then, ``FlushToken``).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass

import structlog

from broker_bridge import session
from broker_bridge.topics import command_topic
from collector.admission import reject
from collector.intake import FlushLimits, Intake, PendingMessage
from collector.metrics import CollectorMetrics, CollectorStats
from collector.prepare import PreparedFlush, Preparation, admit, flush_records, reading_columns
from collector.qc.engine import QualityControl
from collector.qc.state import SeriesState
from collector.qc.thresholds import ThresholdSource
from collector.registry import StationRegistry
from collector.sequence import DAY_NS, SequenceTracker
from store.commit import Warehouse
from store.ilp_writer import SerialisedRows, WarehouseRefused, WarehouseUnavailable
from store.queries import recent_readings, suspended_wal_tables

log = structlog.get_logger("collector")
SWITCH_INTERVAL_S = 0.0002


@dataclass(frozen=True)
class CollectorConfig:
    broker: session.BrokerAddress
    client_id: str
    registry_path: str
    ilp_conf: str
    pg_conninfo: str | None = None  # the batch ledger is read over SQL; None: in-memory only
    share_group: str | None = None
    replay_window_days: float = 7.0
    qc_thresholds_path: str | None = None  # overrides of collector/qc/defaults.yaml; reloaded on change
    qc_max_series: int = 40_000
    # How far back the windowed checks' history is rebuilt at start. The
    # defaults' longest window (a day-long flat line for Temp/Flow) would
    # read tens of millions of rows; 3 h covers every gas and dust window.
    qc_seed_lookback_s: float = 3 * 3600
    metrics_port: int | None = None  # Prometheus /metrics on 127.0.0.1:<port>
    wal_check_interval_s: float = 30.0
    flush_interval_s: float = 1.0  # the longest a message waits for its flush: bigger, fewer QuestDB transactions
    flush_max_messages: int = 10_000
    max_pending: int = 20_000  # hard cap on unacknowledged messages held in memory
    max_pending_bytes: int = 256 * 1024 * 1024  # ... and on their bytes (a payload may be 1 MiB)
    flush_max_bytes: int = 16 * 1024 * 1024  # payload bytes per flush: keeps every ILP request far below 100 MiB
    # Readings per flush: big enough that numpy and HTTP costs per flush vanish,
    # small enough that the broker keeps sending while a flush is committed.
    flush_max_readings: int = 200_000
    # Messages the broker may send before our acknowledgements: room for the next
    # flush to arrive while this one is committed (QuestDB is far cheaper per row
    # in big transactions). The collector's own bound is max_pending.
    receive_maximum: int = 20_000


@dataclass(slots=True)
class Sending:
    """The flush in flight: prepared, its readings' transaction under way on the readings thread."""

    prepared: PreparedFlush
    readings: Future


class Collector:
    def __init__(self, config: CollectorConfig) -> None:
        self.config = config
        self.metrics = CollectorMetrics()
        self.registry = StationRegistry(config.registry_path)
        self.sequences = SequenceTracker(
            config.pg_conninfo,
            track_gaps=config.share_group is None,
            replay_window_ns=int(config.replay_window_days * DAY_NS),
        )
        self.qc = QualityControl(ThresholdSource(config.qc_thresholds_path), SeriesState(max_series=config.qc_max_series))
        self.preparation = Preparation(self.registry, self.sequences, self.qc, self.metrics)
        self.warehouse = Warehouse(config.ilp_conf)
        limits = FlushLimits(
            config.flush_interval_s, config.flush_max_messages, config.flush_max_bytes, config.flush_max_readings,
            config.max_pending, config.max_pending_bytes,
        )
        self.intake = Intake(
            config.broker, config.client_id, config.share_group, config.receive_maximum, limits, self.metrics,
            admit=lambda item: admit(item, self.registry), flush_here=self._flush_inline,
        )
        self.connected = self.intake.connected
        self._sending: Sending | None = None
        self._flush_lock = threading.Lock()  # one flush at a time, whichever thread runs it
        self._warehouse_down_until = 0.0  # monotonic; until then only the run loop flushes, with back-off
        # The run loop steps in only for messages nobody flushed a little after they were due.
        self._linger_s = config.flush_interval_s * 1.5
        self._next_wal_check = 0.0
        self._stop = threading.Event()

    @property
    def stats(self) -> CollectorStats:
        return self.metrics.stats()

    def start(self) -> None:
        # paho's network thread gives up the GIL several times per message (select,
        # then a recv per packet part) and must wait to get it back while the flush
        # loop computes: with CPython's default 5 ms switch interval that wait, not
        # the work, bounded the collector to a few hundred messages a second.
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        if self.config.metrics_port is not None:
            self.metrics.serve(self.config.metrics_port)
        seeded = self.sequences.seed()
        log.info("sequence_state_seeded", stations=seeded, client_id=self.config.client_id)
        if self.config.pg_conninfo is not None:
            lookback = min(self.qc.thresholds.lookback_s(), self.config.qc_seed_lookback_s)
            rows = self.qc.seed(recent_readings(self.config.pg_conninfo, lookback))
            log.info("qc_history_seeded", readings=rows, lookback_s=lookback, client_id=self.config.client_id)
        self.intake.start()

    def stop(self) -> None:
        self._stop.set()
        self.intake.stop()
        self.warehouse.close()

    # -- who flushes: the network thread under load, the run loop otherwise -------------
    def _flush_inline(self) -> None:
        """Flush on the network thread, which then does all the work alone.

        Python threads share one interpreter lock: while the run loop computed
        a flush, this thread (which gives the lock up for every socket call)
        waited for it again and again, and that wait bounded the whole
        collector. Under load the network thread therefore flushes itself; the
        run loop flushes what lingers when messages stop, and takes over with
        back-off while QuestDB is down.
        """
        if not self._warehouse_up():
            return
        try:
            self._flush_due()
        except WarehouseUnavailable as exc:
            self._warehouse_down_until = time.monotonic() + 0.5  # the run loop retries, with back-off
            self.metrics.flush_failures.inc()
            log.warning("warehouse_unavailable", error=str(exc), client_id=self.config.client_id, where="network thread")
        except Exception as exc:  # an exception here would end paho's loop; the run loop retries the messages
            self._warehouse_down_until = time.monotonic() + 0.5
            log.exception("inline_flush_failed", error=repr(exc), client_id=self.config.client_id)

    def run(self, stop: threading.Event | None = None) -> None:
        """Flush until ``stop`` is set; then leave the unflushed messages unacknowledged."""
        stop = stop or threading.Event()
        backoff = 0.0
        while not stop.is_set() and not self._stop.is_set():
            work = self._wait_for_work()
            if work is None:
                continue
            try:
                # While QuestDB is down, one flush at a time: its failure must come back here, to the back-off.
                self._flush_due(force=work == "flush", sync=not self._warehouse_up())
                backoff = 0.0
                self._warehouse_down_until = 0.0
            except WarehouseUnavailable as exc:
                self.metrics.flush_failures.inc()
                backoff = min(max(backoff * 2, 0.5), 10.0)
                self._warehouse_down_until = time.monotonic() + backoff
                log.warning("warehouse_unavailable", error=str(exc), retry_in_s=backoff, held=self.intake.held())
                stop.wait(backoff)

    def _wait_for_work(self) -> str | None:
        """"flush": messages waited past their flush time with nobody flushing them (no new
        message arrived to trigger the network thread, or QuestDB is down); "settle": the
        readings in flight are committed and wait for their ledger and acknowledgements."""
        with self.intake.cond:
            now = time.monotonic()
            oldest = self.intake.oldest_waiting()
            if oldest is not None and (not self._warehouse_up() or now >= oldest + self._linger_s):
                return "flush"
            if self._sending is not None and self._sending.readings.done():
                return "settle"
            wait = oldest + self._linger_s - now if oldest is not None else self.config.flush_interval_s
            self.intake.cond.wait(timeout=max(wait, 0.01))
            return None

    def _warehouse_up(self) -> bool:
        return time.monotonic() >= self._warehouse_down_until

    # -- the flush pipeline ---------------------------------------------------------------
    def _flush_due(self, force: bool = False, sync: bool = False) -> None:
        """One step of the flush pipeline, by whichever thread holds the flush lock: prepare the next
        due messages, settle the flush in flight (ledger, acknowledgements), then send the new one's
        readings in the background (or at once, with ``sync``)."""
        with self._flush_lock:
            batch = self.intake.take(force)
            if not batch:
                if self._sending is not None and (force or sync or self._sending.readings.done()):
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
                self._flush_isolating(batch)
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
            self._flush_isolating(prepared.batch)
            settled = False
        self._watch_wal()
        return settled

    def _flush_isolating(self, batch: list[PendingMessage]) -> None:
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
                        item.outcome = reject(item.topic, "", item.payload, item.received_ns, "internal_error",
                                              f"{type(single).__name__}: {single}")
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
            records=lambda: flush_records(prepared),
        )
        self.sequences.commit_flush(prepared.token)
        self.metrics.flushes.inc()
        self.metrics.readings.inc(written)
        self.metrics.duplicates.inc(prepared.duplicates)
        self.metrics.events.inc(len(records.events))
        self.metrics.gaps.inc(len(prepared.gaps))
        self.metrics.write_lag.set((time.time_ns() - prepared.batch[0].received_ns) / 1e9)
        for station, first, last, _ in prepared.gaps:
            log.warning("sequence_gap", station=station, first_missing=first, last_missing=last, missing=last - first + 1)
            self._ask_for_resend(station, first, last)
        for row in records.rejects:
            self.metrics.rejects.labels(row.reason).inc()
            log.warning("message_rejected", station=row.claimed_station, reason=row.reason, detail=row.detail)
        self.intake.settled(prepared.batch)

    def _ask_for_resend(self, station: str, first: int, last: int) -> None:
        # The station keeps what it sent for 60 days: ask for the missing batches.
        request = {"resend": {"from_seq": first, "to_seq": last}}
        self.intake.publish(command_topic(station), json.dumps(request))

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

    def _watch_wal(self) -> None:
        if self.config.pg_conninfo is None or time.monotonic() < self._next_wal_check:
            return
        self._next_wal_check = time.monotonic() + self.config.wal_check_interval_s
        try:
            tables = suspended_wal_tables(self.config.pg_conninfo)
        except Exception as exc:  # the watch must not stop the data path; it says why it could not look
            log.warning("wal_check_failed", error=repr(exc))
            return
        self.metrics.suspended_tables.set(len(tables))
        for table in tables:
            log.critical(
                "wal_table_suspended", table=table.name, writer_txn=table.writer_txn, sequencer_txn=table.sequencer_txn,
                fix=f"rows written to {table.name} are invisible until: ALTER TABLE {table.name} RESUME WAL",
            )
