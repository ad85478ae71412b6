"""The collector: MQTT in, checks, QuestDB out, acknowledgement last.

A message is acknowledged to the broker only after its readings (or its
reject record) are committed in QuestDB. Until then the broker still owns
it, so a crash of the collector or an outage of QuestDB loses nothing: the
persistent session redelivers, and DEDUP makes the rewrite harmless.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import Counter, deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from itertools import chain, islice

import numpy as np

import paho.mqtt.client as mqtt
import structlog

from broker_bridge import session
from broker_bridge.topics import command_topic, data_subscription, status_subscription
from collector.admission import LATE_AFTER_NS, Accepted, Rejected, StationEvent, check_message, reject
from collector.metrics import CollectorMetrics, CollectorStats
from collector.qc.engine import QualityControl
from collector.qc.flags import QcColumns
from collector.qc.state import SeriesState
from collector.qc.thresholds import ThresholdSource
from collector.registry import StationRegistry
from collector.sequence import DAY_NS, DUPLICATE, NEW, FlushToken, SequenceTracker
from store.commit import FlushRecords, Warehouse
from store.ilp_writer import IlpRow, ReadingColumns, SerialisedRows, WarehouseRefused, WarehouseUnavailable, ilp_row
from store.schema import BATCHES, SEQUENCE_GAPS, STATION_EVENTS
from store.queries import recent_readings, suspended_wal_tables

log = structlog.get_logger("collector")
SWITCH_INTERVAL_S = 0.0002


@dataclass(slots=True)
class PendingMessage:
    generation: int  # which broker connection delivered it; mids are only valid there
    mid: int
    qos: int
    topic: str
    payload: bytes
    received_ns: int
    outcome: Accepted | StationEvent | Rejected | None = None
    qc: QcColumns | None = None  # the measurement controls' verdicts, kept so a retried flush never re-runs them
    arrived: float = field(default_factory=time.monotonic)
    readings: int = 0  # of the message as checked on arrival (the outcome may still become a reject)


@dataclass
class PreparedFlush:
    """A flush whose messages are judged and flagged and whose readings are serialised,
    waiting for (or in) its QuestDB transaction."""

    batch: list[PendingMessage]
    token: FlushToken
    new: list[PendingMessage]  # accepted, new batches: their readings are in ``readings``
    gaps: list[tuple[str, int, int, int]]
    duplicates: int
    readings: SerialisedRows
    payload_bytes: int
    reading_count: int
    sending: Future | None = None


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


class Collector:
    def __init__(self, config: CollectorConfig) -> None:
        self.config = config
        self.registry = StationRegistry(config.registry_path)
        self.warehouse = Warehouse(config.ilp_conf)
        self._inflight: PreparedFlush | None = None
        self.sequences = SequenceTracker(
            config.pg_conninfo,
            track_gaps=config.share_group is None,
            replay_window_ns=int(config.replay_window_days * DAY_NS),
        )
        self.qc = QualityControl(ThresholdSource(config.qc_thresholds_path), SeriesState(max_series=config.qc_max_series))
        self.metrics = CollectorMetrics()
        self._next_wal_check = 0.0
        self._pending: deque[PendingMessage] = deque()
        self._pending_bytes = 0
        self._pending_readings = 0  # of accepted messages, as checked on arrival
        self._flush_lock = threading.Lock()  # one flush at a time, whichever thread runs it
        self._warehouse_down_until = 0.0  # monotonic; until then only the run loop flushes, with back-off
        # The run loop steps in only for messages nobody flushed a little after they were due.
        self._linger_s = config.flush_interval_s * 1.5
        self._cond = threading.Condition()
        self._generation = 0
        self._disconnects = 0
        self._stop = threading.Event()
        self.connected = threading.Event()
        self._client = session.new_client(config.client_id, manual_ack=True)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message

    @property
    def stats(self) -> CollectorStats:
        return self.metrics.stats()

    # -- network thread -------------------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("mqtt_connect_refused", reason=str(reason_code), client_id=self.config.client_id)
            return
        with self._cond:
            self._generation += 1
        self._disconnects = 0
        # Subscribing again on a resumed session is harmless and covers the
        # case where the broker lost it.
        client.subscribe(
            [
                (data_subscription(self.config.share_group), session.QOS),
                (status_subscription(self.config.share_group), session.QOS),
            ]
        )
        self.connected.set()
        log.info("mqtt_connected", session_present=flags.session_present, client_id=self.config.client_id)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connected.clear()
        log.warning("mqtt_disconnected", reason=str(reason_code), client_id=self.config.client_id)
        self._disconnects += 1
        session.jitter_before_reconnect(reason_code, self._disconnects)

    def _on_message(self, client, userdata, message: mqtt.MQTTMessage) -> None:
        item = PendingMessage(
            self._generation, message.mid, message.qos, message.topic, bytes(message.payload), time.time_ns()
        )
        item.outcome = self._check(item)
        item.readings = len(item.outcome.body) if isinstance(item.outcome, Accepted) else 0
        if self._full() and self._warehouse_up():
            self._flush_inline()
        with self._cond:
            # Mosquitto does not reliably honour Receive Maximum once acks
            # flow, so the collector bounds its own memory: holding the
            # network thread here stops reading the socket. Only while
            # QuestDB is down does it wait: the run loop retries with back-off.
            while self._full_locked() and not self._stop.is_set():
                self._cond.wait(timeout=0.5)
            self._pending.append(item)
            self._pending_bytes += len(item.payload)
            self._pending_readings += item.readings
            self.metrics.messages.inc()
            self.metrics.unacked.set(len(self._pending))
            # Nobody is woken per message: the run loop looks on its own schedule.
            due = self._due_locked(time.monotonic(), len(self._inflight.batch) if self._inflight is not None else 0)
        if due and self._warehouse_up():
            self._flush_inline()

    def _flush_inline(self) -> None:
        """Flush on the network thread, which then does all the work alone.

        Python threads share one interpreter lock: while the run loop computed
        a flush, this thread (which gives the lock up for every socket call)
        waited for it again and again, and that wait bounded the whole
        collector. Under load the network thread therefore flushes itself; the
        run loop flushes what lingers when messages stop, and takes over with
        back-off while QuestDB is down.
        """
        try:
            self._flush_due()
        except WarehouseUnavailable as exc:
            self._warehouse_down_until = time.monotonic() + 0.5  # the run loop retries, with back-off
            self.metrics.flush_failures.inc()
            log.warning("warehouse_unavailable", error=str(exc), client_id=self.config.client_id, where="network thread")
        except Exception as exc:  # an exception here would end paho's loop; the run loop retries the messages
            self._warehouse_down_until = time.monotonic() + 0.5
            log.exception("inline_flush_failed", error=repr(exc), client_id=self.config.client_id)

    def _check(self, item: PendingMessage) -> Accepted | StationEvent | Rejected:
        try:
            # A stat per message (about 1 us): a station added, disabled or rotated
            # counts from the next message on, as it did when the flush checked.
            self.registry.reload_if_changed()
            return check_message(item.topic, item.payload, self.registry, item.received_ns)
        except Exception as exc:  # a bug must not kill the network thread; the message is kept as a reject
            log.exception("check_failed", topic=item.topic, error=repr(exc))
            return reject(item.topic, "", item.payload, item.received_ns, "internal_error", f"{type(exc).__name__}: {exc}")

    # -- flush loop (caller's thread) -------------------------------------
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
        session.connect_async(
            self._client, self.config.broker, session.connect_properties(receive_maximum=self.config.receive_maximum)
        )
        self._client.loop_start()

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._client.disconnect()
        self._client.loop_stop()
        self.warehouse.close()

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
                log.warning("warehouse_unavailable", error=str(exc), retry_in_s=backoff, held=len(self._pending))
                stop.wait(backoff)

    def _wait_for_work(self) -> str | None:
        """"flush": messages waited past their flush time with nobody flushing them (no new
        message arrived to trigger the network thread, or QuestDB is down); "settle": the
        readings in flight are committed and wait for their ledger and acknowledgements."""
        with self._cond:
            now = time.monotonic()
            skip = len(self._inflight.batch) if self._inflight is not None else 0
            waiting = len(self._pending) > skip
            if waiting and (not self._warehouse_up() or now >= self._pending[skip].arrived + self._linger_s):
                return "flush"
            if self._inflight is not None and self._inflight.sending is not None and self._inflight.sending.done():
                return "settle"
            wait = self._pending[skip].arrived + self._linger_s - now if waiting else self.config.flush_interval_s
            self._cond.wait(timeout=max(wait, 0.01))
            return None

    def _wake(self, _future: Future | None = None) -> None:
        with self._cond:
            self._cond.notify_all()

    def _flush_due(self, force: bool = False, sync: bool = False) -> None:
        """One step of the flush pipeline, by whichever thread holds the flush lock: judge, flag and
        serialise the next due messages, settle the flush in flight (ledger, acknowledgements),
        then send the new one's readings in the background (or at once, with ``sync``)."""
        with self._flush_lock:
            with self._cond:
                skip = len(self._inflight.batch) if self._inflight is not None else 0
                due = len(self._pending) > skip and (force or self._due_locked(time.monotonic(), skip))
                batch = self._take_batch_locked(skip) if due else []
            if not batch:
                if self._inflight is not None and (force or sync or self._inflight.sending.done()):
                    self._finish_inflight()
                return
            try:
                prepared = self._prepare(batch)
            except WarehouseUnavailable:
                raise
            except Exception as exc:
                # A message that breaks the preparation: settle what is in flight, then go message by message.
                self._finish_inflight()
                log.exception("flush_failed_isolating", messages=len(batch), error=repr(exc))
                self._flush_isolating(batch)
                return
            try:
                settled = self._finish_inflight()
            except BaseException:
                self.sequences.abort_flush(prepared.token)
                raise
            if not settled:
                # The flush in flight went message by message; this one was judged against its
                # provisional numbers, so it is dropped and prepared again (QC verdicts are kept).
                self.sequences.abort_flush(prepared.token)
                return
            prepared.sending = self.warehouse.send_readings(prepared.readings)
            prepared.sending.add_done_callback(self._wake)
            self._inflight = prepared
            if sync:
                self._finish_inflight()

    def _finish_inflight(self) -> bool:
        """Settle the flush in flight, if any. False: it had to be isolated message by message."""
        prepared, self._inflight = self._inflight, None
        if prepared is None:
            return True
        settled = True
        try:
            with self.metrics.flush_seconds.time():
                self._settle(prepared)
        except WarehouseUnavailable:
            self.sequences.abort_flush(prepared.token)
            raise
        except Exception as exc:
            self.sequences.abort_flush(prepared.token)
            log.exception("flush_failed_isolating", messages=len(prepared.batch), error=repr(exc))
            self._flush_isolating(prepared.batch)
            settled = False
        self._watch_wal()
        return settled

    # -- pending bookkeeping (callers hold self._cond) ---------------------------
    def _warehouse_up(self) -> bool:
        return time.monotonic() >= self._warehouse_down_until

    def _full(self) -> bool:
        with self._cond:
            return self._full_locked()

    def _full_locked(self) -> bool:
        return len(self._pending) >= self.config.max_pending or self._pending_bytes >= self.config.max_pending_bytes

    def _due_locked(self, now: float, skip: int = 0) -> bool:
        """A flush is due (of the messages after the ``skip`` in flight): a full flush is pending,
        memory is at its bound, or the oldest message waited ``flush_interval_s``. QuestDB pays
        per transaction (each one merges into its partitions), so a trickle of tiny flushes costs
        it several times the rows' work."""
        if len(self._pending) <= skip:
            return False
        inflight = self._inflight if skip else None
        readings = self._pending_readings - (inflight.reading_count if inflight else 0)
        size = self._pending_bytes - (inflight.payload_bytes if inflight else 0)
        return (
            self._full_locked()
            or readings >= self.config.flush_max_readings
            or len(self._pending) - skip >= min(self.config.flush_max_messages, self.config.max_pending)
            or size >= min(self.config.flush_max_bytes, self.config.max_pending_bytes)
            or now >= self._pending[skip].arrived + self.config.flush_interval_s
        )

    def _take_batch_locked(self, skip: int = 0) -> list[PendingMessage]:
        batch, size, readings = [], 0, 0
        for item in islice(self._pending, skip, None):
            if batch and (
                len(batch) >= self.config.flush_max_messages
                or size + len(item.payload) > self.config.flush_max_bytes
                or readings >= self.config.flush_max_readings
            ):
                break
            batch.append(item)
            size += len(item.payload)
            readings += item.readings
        return batch

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

    def _flush_isolating(self, batch: list[PendingMessage]) -> None:
        """A message that breaks the flush must not stop the collector, nor hold up the others.

        An unexpected error (a bug, or a row the warehouse refuses that no
        check foresaw) sends the batch through message by message; the one
        that still fails becomes a reject with the error, so it is kept,
        acknowledged, and never redelivered into a crash loop.
        """
        try:
            self._flush(batch)
        except WarehouseUnavailable:
            raise
        except Exception as exc:
            log.exception("flush_failed_isolating", messages=len(batch), error=repr(exc))
            for item in batch:
                try:
                    self._flush([item])
                except WarehouseUnavailable:
                    raise
                except Exception as single:
                    log.exception("message_breaks_flush", topic=item.topic, error=repr(single))
                    item.outcome = reject(item.topic, "", item.payload, item.received_ns, "internal_error",
                                          f"{type(single).__name__}: {single}")
                    self._flush([item])

    def _flush(self, batch: list[PendingMessage]) -> None:
        """One flush start to end, in this thread (the isolation path)."""
        prepared = self._prepare(batch)
        try:
            self._settle(prepared)
        except BaseException:
            self.sequences.abort_flush(prepared.token)
            raise

    def _prepare(self, batch: list[PendingMessage]) -> PreparedFlush:
        self.registry.reload_if_changed()
        self.qc.reload_thresholds()
        for item in batch:
            if item.outcome is None:
                item.outcome = check_message(item.topic, item.payload, self.registry, item.received_ns)
        token = self.sequences.begin_flush()
        try:
            new, gaps, duplicates = [], [], 0
            for item in batch:
                if not isinstance(item.outcome, Accepted):
                    continue
                body = item.outcome.body
                verdict = self.sequences.judge(body.station, body.seq, item.outcome.payload_sha256, item.received_ns, token)
                if verdict.kind == NEW:
                    new.append(item)
                    if verdict.gap:
                        gaps.append((body.station, *verdict.gap, item.received_ns))
                elif verdict.kind == DUPLICATE:
                    duplicates += 1  # already committed: acknowledged, not rewritten
                else:
                    item.outcome = reject(item.topic, body.station, item.payload, item.received_ns, verdict.kind, verdict.detail)
            self._apply_measurement_controls(new)
            readings = self.warehouse.serialise_readings(reading_columns(new))
        except BaseException:
            self.sequences.abort_flush(token)
            raise
        return PreparedFlush(
            batch, token, new, gaps, duplicates, readings,
            payload_bytes=sum(len(i.payload) for i in batch), reading_count=sum(i.readings for i in batch),
        )

    def _settle(self, prepared: PreparedFlush) -> None:
        """Wait for (or make) the readings' transaction, then write the rest and acknowledge."""
        batch, gaps, duplicates = prepared.batch, prepared.gaps, prepared.duplicates
        written, records = self.warehouse.commit(
            prepared.sending if prepared.sending is not None else prepared.readings,
            refused=lambda exc: self._write_one_by_one(prepared.new, str(exc)),
            records=lambda: flush_records(batch, prepared.new, gaps),
        )
        rejected = records.rejects
        events = records.events
        self.sequences.commit_flush(prepared.token)
        self.metrics.flushes.inc()
        self.metrics.readings.inc(written)
        self.metrics.duplicates.inc(duplicates)
        self.metrics.events.inc(len(events))
        self.metrics.gaps.inc(len(gaps))
        self.metrics.write_lag.set((time.time_ns() - batch[0].received_ns) / 1e9)
        for station, first, last, _ in gaps:
            log.warning("sequence_gap", station=station, first_missing=first, last_missing=last, missing=last - first + 1)
            # The station keeps what it sent for 60 days: ask for the missing batches.
            request = {"resend": {"from_seq": first, "to_seq": last}}
            self._client.publish(command_topic(station), json.dumps(request), qos=session.QOS)
        for row in rejected:
            self.metrics.rejects.labels(row.reason).inc()
            log.warning("message_rejected", station=row.claimed_station, reason=row.reason, detail=row.detail)
        with self._cond:
            for _ in batch:
                done = self._pending.popleft()
                self._pending_bytes -= len(done.payload)
                self._pending_readings -= done.readings
            self.metrics.unacked.set(len(self._pending))
            generation = self._generation
            self._cond.notify_all()
        # PUBACKs go out in arrival order, and only on the connection that
        # delivered the message: after a reconnect the broker redelivers.
        for item in batch:
            if item.generation == generation:
                self._client.ack(item.mid, item.qos)

    def _apply_measurement_controls(self, new: list[PendingMessage]) -> None:
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


def flush_records(batch: list[PendingMessage], new: list[PendingMessage], gaps: list[tuple[str, int, int, int]]) -> FlushRecords:
    """What a flush writes after its readings: ledger entries of the new batches still accepted
    (QuestDB may have refused some), rejects, station events and gaps."""
    return FlushRecords(
        ledger=[ledger_row(i) for i in new if isinstance(i.outcome, Accepted)],
        rejects=[i.outcome.row for i in batch if isinstance(i.outcome, Rejected)],
        events=[event_row(i.outcome) for i in batch if isinstance(i.outcome, StationEvent)],
        gaps=[gap_row(*g) for g in gaps],
    )


def ledger_row(item: PendingMessage) -> IlpRow:
    accepted = item.outcome
    body = accepted.body
    return ilp_row(
        BATCHES, body.sent_ns, station=body.station, key_id=accepted.key_id, seq=body.seq,
        payload_sha256=accepted.payload_sha256, readings=len(body), historical=body.historical, received_at=item.received_ns,
    )


def event_row(event: StationEvent) -> IlpRow:
    return ilp_row(
        STATION_EVENTS, event.received_ns, station=event.station, state=event.state, session=event.session,
        planned=event.planned, payload=event.payload,
    )


def gap_row(station: str, first: int, last: int, seen_ns: int) -> IlpRow:
    return ilp_row(SEQUENCE_GAPS, seen_ns, station=station, first_missing=first, last_missing=last)


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
    historical = np.repeat(np.array([b.historical for b in bodies], dtype=bool), sizes) | (ts < received - LATE_AFTER_NS)
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
    )
