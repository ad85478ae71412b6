"""The collector: MQTT in, checks, QuestDB out, acknowledgement last. This module is the wiring:

    intake (collector/intake.py)       MQTT callbacks; messages held, waiting or in flight; back-pressure
      -> preparation (prepare.py)      admit -> sequence -> measurement controls -> warehouse columns
      -> commit (store/commit.py)      readings, then ledger, rejects, station events, gaps
      -> intake.settled                acknowledged, in arrival order, on the connection that delivered

stepped by the flush pipeline (flush.py), from the MQTT network thread under
load and from ``Collector.run`` when messages linger or QuestDB is down.

A message is acknowledged to the broker only after its readings (or its
reject record) are committed in QuestDB. Until then the broker still owns
it, so a crash of the collector or an outage of QuestDB loses nothing: the
persistent session redelivers, and DEDUP makes the rewrite harmless.

"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass

import structlog

from broker_bridge import session
from broker_bridge.broker_health import BrokerHealth
from broker_bridge.commands import ResendRequest
from broker_bridge.json_message import MessageError
from broker_bridge.keys import SigningKey
from broker_bridge.station_messages import Birth, ResendReport, parse_station_message
from broker_bridge.topics import command_topic
from collector.admission import StationEvent
from collector.analyzer_ranges import AnalyzerRanges
from collector.flush import FlushPipeline
from collector.healing import GapBook, HealingPolicy
from collector.intake import FlushLimits, Intake
from collector.metrics import CollectorMetrics, CollectorStats
from collector.prepare import Preparation, PreparedFlush, admit
from collector.qc.engine import QualityControl
from collector.qc.state import SeriesState
from collector.qc.thresholds import ThresholdSource
from collector.receipts import ReceiptPublisher
from collector.registry import StationRegistry
from collector.revisions import RevisionFinder
from collector.sequence import DAY_NS, SequenceTracker
from collector.sessions import SessionGuard
from collector.station_metadata import StationMetadataCopy
from store.commit import FlushRecords, Warehouse
from store.ilp_writer import WarehouseUnavailable
from store.payload_store import PayloadStore
from store.queries import (
    highest_station_sessions,
    ledger_ranges,
    newest_births,
    open_gaps,
    recent_readings,
    suspended_wal_tables,
)
from store.schema import ensure_schema

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
    # Where the whole bytes of rejected payloads over REJECT_HEAD_BYTES go (files named by SHA-256);
    # None: such a reject keeps its first REJECT_HEAD_BYTES, its size and hash only.
    reject_store: str | None = None
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
    # The collector's own key signs its receipts to the stations (broker_bridge/receipts.py); None: no receipts.
    receipt_key: SigningKey | None = None
    # Receipts go out this often, one per station that committed since (collector/receipts.py).
    receipt_interval_s: float = 2.0
    healing: HealingPolicy = HealingPolicy()
    # With a share group the other collectors commit part of each station's stream: their part is
    # learnt from the ledger this often, so receipts cover it too.
    ledger_refresh_s: float = 10.0
    startup_retry_max_s: float = 30.0  # back-off cap while QuestDB is not there yet at start


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
        self.analyzer_ranges = AnalyzerRanges()  # from the births; read back from station_events at start
        self.qc = QualityControl(
            ThresholdSource(
                config.qc_thresholds_path,
                station_kinds=self.registry.kinds,
                analyzer_ranges=self.analyzer_ranges.current,
            ),
            SeriesState(max_series=config.qc_max_series),
        )
        self.metrics.watch_config_file(config.registry_path, self.registry)
        self.station_metadata = StationMetadataCopy(self.registry, config.ilp_conf)
        if config.qc_thresholds_path is not None:
            self.metrics.watch_config_file(config.qc_thresholds_path, self.qc.thresholds)
        self.sessions = SessionGuard()
        self.preparation = Preparation(
            self.registry,
            self.sequences,
            self.qc,
            self.metrics,
            self.sessions,
            RevisionFinder(config.pg_conninfo) if config.pg_conninfo is not None else None,
            self.analyzer_ranges,
        )
        self.healing = GapBook(self.sequences, config.healing)
        self.warehouse = Warehouse(
            config.ilp_conf, PayloadStore(config.reject_store) if config.reject_store is not None else None
        )
        limits = FlushLimits(
            config.flush_interval_s,
            config.flush_max_messages,
            config.flush_max_bytes,
            config.flush_max_readings,
            config.max_pending,
            config.max_pending_bytes,
        )
        self.intake = Intake(
            config.broker,
            config.client_id,
            config.share_group,
            config.receive_maximum,
            limits,
            self.metrics,
            admit=lambda item: admit(item, self.registry, self.sessions),
            flush_here=self._flush_inline,
            broker_health=BrokerHealth(broker="local", registry=self.metrics.registry),
        )
        self.pipeline = FlushPipeline(
            self.intake,
            self.preparation,
            self.warehouse,
            self.metrics,
            ask_for_resend=self._ask_for_resend,
            after_settle=self._after_settle,
            extra_gap_rows=self.healing.closing_rows,
            flush_committed=self._flush_committed,
        )
        key = config.receipt_key
        self.receipts = (
            ReceiptPublisher(
                key,
                self.sequences.committed_ranges,
                self.pipeline.lock,
                lambda topic, payload: self.intake.publish(topic, payload, retain=True),
                config.receipt_interval_s,
            )
            if key is not None
            else None
        )
        self._next_ledger_refresh = 0.0
        self.connected = self.intake.connected
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
        if self.receipts is not None:
            self.receipts.start()
        # QuestDB may not be up yet (a host boot, a restart of both): wait for it, never exit.
        conninfo = self.config.pg_conninfo
        if conninfo is not None:
            self._until_warehouse("ensure_schema", lambda: ensure_schema(conninfo))
        self.station_metadata.sync()  # the registry as loaded at start; each reload again, from the run loop
        if self.preparation.revisions is not None:
            newest = self._until_warehouse("seed_revisions", self.preparation.revisions.seed)
            log.info("revision_state_seeded", stations=newest, client_id=self.config.client_id)
        seeded = self._until_warehouse("seed_sequences", self.sequences.seed)
        log.info("sequence_state_seeded", stations=seeded, client_id=self.config.client_id)
        if conninfo is not None:
            if self.sequences.track_gaps:
                gaps = self._until_warehouse("read_open_gaps", lambda: open_gaps(conninfo))
                self.healing.load(gaps)
                log.info("open_gaps_loaded", gaps=len(gaps), client_id=self.config.client_id)
            stations = self._until_warehouse(
                "seed_station_sessions", lambda: self.sessions.seed(highest_station_sessions(conninfo))
            )
            log.info("station_sessions_seeded", stations=stations, client_id=self.config.client_id)
            births = self._until_warehouse("read_newest_births", lambda: newest_births(conninfo))
            ranged = self.analyzer_ranges.seed(births)
            self.qc.reload_thresholds()
            log.info(
                "analyzer_ranges_seeded", stations=ranged, ranges=len(self.analyzer_ranges),
                client_id=self.config.client_id,
            )  # fmt: skip
            lookback = min(self.qc.thresholds.lookback_s(), self.config.qc_seed_lookback_s)
            rows = self._until_warehouse("seed_qc_history", lambda: self.qc.seed(recent_readings(conninfo, lookback)))
            log.info("qc_history_seeded", readings=rows, lookback_s=lookback, client_id=self.config.client_id)
        self.intake.start()

    def _until_warehouse(self, what: str, action):
        delay = 0.5
        while True:
            try:
                return action()
            except WarehouseUnavailable as exc:
                log.warning(
                    "warehouse_unavailable_at_start", step=what, error=str(exc), retry_in_s=delay,
                    client_id=self.config.client_id,
                )  # fmt: skip
                if self._stop.wait(delay):
                    raise
                delay = min(delay * 2, self.config.startup_retry_max_s)

    def request_stop(self) -> None:
        """From a signal handler: end ``start``'s wait for QuestDB and the run loop."""
        self._stop.set()

    def stop(self) -> None:
        self._stop.set()
        if self.receipts is not None:
            self.receipts.stop()
        self.intake.stop()
        self.warehouse.close()
        self.station_metadata.close()

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
            self.pipeline.step()
        except WarehouseUnavailable as exc:
            self._warehouse_down_until = time.monotonic() + 0.5  # the run loop retries, with back-off
            self.metrics.flush_failures.inc()
            log.warning(
                "warehouse_unavailable", error=str(exc), client_id=self.config.client_id, where="network thread"
            )
        except Exception as exc:  # an exception here would end paho's loop; the run loop retries the messages
            self._warehouse_down_until = time.monotonic() + 0.5
            log.exception("inline_flush_failed", error=repr(exc), client_id=self.config.client_id)

    def run(self, stop: threading.Event | None = None) -> None:
        """Flush until ``stop`` is set; then leave the unflushed messages unacknowledged."""
        stop = stop or threading.Event()
        backoff = 0.0
        while not stop.is_set() and not self._stop.is_set():
            self.station_metadata.sync()  # one stat of the registry file, unless it was (re)loaded
            work = self._wait_for_work()
            if work is None:
                with self.pipeline.lock:  # also while no message arrives: the station may be back, the ask lost
                    self._ask_again()
                continue
            try:
                # While QuestDB is down, one flush at a time: its failure must come back here, to the back-off.
                self.pipeline.step(force=work == "flush", sync=not self._warehouse_up())
                backoff = 0.0
                self._warehouse_down_until = 0.0
            except WarehouseUnavailable as exc:
                self.metrics.flush_failures.inc()
                backoff = min(max(backoff * 2, 0.5), 10.0)
                self._warehouse_down_until = time.monotonic() + backoff
                log.warning("warehouse_unavailable", error=str(exc), retry_in_s=backoff, held=self.intake.held())
                stop.wait(backoff)

    def _wait_for_work(self) -> str | None:
        """ "flush": messages waited past their flush time with nobody flushing them (no new
        message arrived to trigger the network thread, or QuestDB is down); "settle": the
        readings in flight are committed and wait for their ledger and acknowledgements."""
        with self.intake.cond:
            now = time.monotonic()
            oldest = self.intake.oldest_waiting()
            if oldest is not None and (not self._warehouse_up() or now >= oldest + self._linger_s):
                return "flush"
            if self.pipeline.readings_committed():
                return "settle"
            wait = oldest + self._linger_s - now if oldest is not None else self.config.flush_interval_s
            self.intake.cond.wait(timeout=max(wait, 0.01))
            return None

    def _warehouse_up(self) -> bool:
        return time.monotonic() >= self._warehouse_down_until

    def _ask_for_resend(self, station: str, first: int, last: int) -> None:
        # The station keeps what it sent for 60 days: ask for the missing batches.
        self.intake.publish(command_topic(station), ResendRequest(first, last).encode())

    # -- after a commit: healing and receipts (under the flush lock) ------------------------------------
    def _flush_committed(self, prepared: PreparedFlush, records: FlushRecords) -> None:
        self.healing.written(records.gaps)
        for station, first, last, seen_ns in prepared.gaps:
            self.healing.recorded(station, first, last, seen_ns)
        stations = prepared.token.stations()
        for item in prepared.batch:
            if not isinstance(item.outcome, StationEvent) or item.outcome.state != "online":
                continue
            try:
                message = parse_station_message(item.outcome.payload.encode("utf-8"))
            except MessageError:
                continue  # stored as it came; admission let it through, so nothing to heal or answer
            if isinstance(message, ResendReport):
                self.healing.report(message)
            elif isinstance(message, Birth):
                stations.add(message.station)  # a station (re)connected: tell it how far we got
        self.healing.settle()
        self._publish_receipts(stations)

    def _publish_receipts(self, stations: set[str]) -> None:
        if self.receipts is not None:
            self.receipts.committed(stations)

    def _after_settle(self) -> None:
        self._ask_again()
        if self.config.share_group is not None and self.config.pg_conninfo is not None:
            if time.monotonic() >= self._next_ledger_refresh:
                self._next_ledger_refresh = time.monotonic() + self.config.ledger_refresh_s
                try:
                    self.sequences.merge_ledger(ledger_ranges(self.config.pg_conninfo))
                    # The other members' births (the status topic is shared too): their analyzer ranges.
                    window = max(60, int(self.config.ledger_refresh_s * 6))
                    self.analyzer_ranges.seed(newest_births(self.config.pg_conninfo, within_s=window))
                except WarehouseUnavailable as exc:  # the receipts wait; the data path must not
                    log.warning("ledger_refresh_failed", error=str(exc), client_id=self.config.client_id)
        self._watch_wal()

    def _ask_again(self) -> None:
        for station, first, last in self.healing.due():
            log.warning("sequence_gap_asked_again", station=station, first_missing=first, last_missing=last)
            self._ask_for_resend(station, first, last)

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
                "wal_table_suspended",
                table=table.name,
                writer_txn=table.writer_txn,
                sequencer_txn=table.sequencer_txn,
                fix=f"rows written to {table.name} are invisible until: ALTER TABLE {table.name} RESUME WAL",
            )
