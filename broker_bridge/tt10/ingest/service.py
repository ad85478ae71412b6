"""The service: the TT10 ingest sink as one process part, stream -> builder -> publish.

``IngestService.sink`` is what the sources call (``take``: archived and recorded, durable). The
worker thread (``run``) turns the ledger into batches (``Converter``) and publishes every station's
outbox over one persistent MQTT session with ``edge_agent``'s ``BatchPublisher`` (as the relay
does), a batch marked sent only on its PUBACK. Re-send requests on a station's ``cmd`` topic are
answered from its outbox. The file receipts go to QuestDB's ``tt10_files`` when ``ilp_conf`` is set.
"""

from __future__ import annotations

import queue
import threading
import time

import structlog

from broker_bridge import session
from broker_bridge.commands import ResendRequest
from broker_bridge.json_message import MessageError
from broker_bridge.keys import SigningKey
from broker_bridge.topics import COMMAND_SUFFIX, RECEIPT_SUFFIX, command_topic, receipt_topic
from broker_bridge.tt10.ingest.archive import Archive
from broker_bridge.tt10.ingest.convert import Converter
from broker_bridge.tt10.ingest.ledger import Ledger
from broker_bridge.tt10.ingest.reports import FileReporter
from broker_bridge.tt10.ingest.settings import IngestSettings
from broker_bridge.tt10.ingest.sink import Tt10Sink
from edge_agent.outbox import Outbox
from edge_agent.publisher import BatchPublisher, SharedSession

log = structlog.get_logger("broker_bridge.tt10.ingest")

RETENTION_EVERY_S = 3600.0
# Idle, the worker waits this long for news; sources, PUBACKs, receipts and requests wake it at once,
# so this only bounds how late a hold's end or the sweep comes (was 0.05 s: 20 idle rounds a second).
IDLE_WAIT_S = 0.5
# Under a trickle (the national load is 6.67 files/s) a round starts at most this often: the news of
# the rest of the interval (files, PUBACKs) waits for the next round and is done in it, rather than
# each file waking a round of its own (judge, seal, publish, report, sweep). A file waits at most this
# much longer for its batch. A round with at least BUSY_WORK items (a backlog) is followed at once.
ROUND_EVERY_S = 0.5
BUSY_WORK = 100
SWEEP_EVERY_S = 1.0  # the unsettled publishers' send() (retries, receipts' time-outs, a reconnect)
DAY_NS = 86_400 * 10**9


class IngestService:
    def __init__(self, settings: IngestSettings, key: SigningKey) -> None:
        self.settings = settings
        self.key = key
        self.archive = Archive(settings.archive_dir)
        self.ledger = Ledger(settings.ledger_path)
        self.wake = threading.Event()
        self.sink = Tt10Sink(self.archive, self.ledger, self.wake)
        # Outboxes and publishers are opened on the worker thread (SQLite connections stay on theirs).
        self.outboxes: dict[str, Outbox] = {}
        self.publishers: dict[str, BatchPublisher] = {}
        self.converter = Converter(settings, self.archive, self.ledger, key, self._outbox)
        self.reporter = FileReporter(settings.ilp_conf) if settings.ilp_conf else None
        self.connected = threading.Event()
        self._commands: queue.SimpleQueue[tuple[str, ResendRequest]] = queue.SimpleQueue()
        self._client = session.new_client(settings.client_id)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._client.on_message = self._on_command
        self._shared = SharedSession(self._client, self.connected)
        self._opened_existing = False
        self._due: set[str] = set()  # stations with something new for their publisher this round (worker thread)
        self._woken: queue.SimpleQueue[str] = queue.SimpleQueue()  # the same, from the network thread (receipts)
        # Publishers that may have work without news (in flight, a retry or a receipt's time-out waiting,
        # disconnected): the sweep visits these, not all 2,000. A settled one comes back with news.
        self._unsettled: set[str] = set()
        self._swept = 0.0

    # -- network thread --------------------------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("tt10_bridge_connect_refused", reason=str(reason_code))
            return
        stations = list(self.publishers)
        if stations:
            client.subscribe([(topic, session.QOS) for s in stations for topic in self._topics_of(s)])
        self.connected.set()
        self.wake.set()  # the unsettled publishers can send again
        log.info("tt10_bridge_connected", session_present=flags.session_present, stations=len(stations))

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        self._shared.puback(mid, reason_code)
        self.wake.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connected.clear()
        log.warning("tt10_bridge_disconnected", reason=str(reason_code))

    def _topics_of(self, station: str) -> list[str]:
        """What the bridge reads for a station: re-send requests, and the warehouse's receipts when it has keys."""
        return [command_topic(station)] + ([receipt_topic(station)] if self.settings.receipt_keys else [])

    def _on_command(self, client, userdata, message) -> None:
        parts = message.topic.split("/")
        if len(parts) == 4 and parts[3] == RECEIPT_SUFFIX:
            publisher = self.publishers.get(parts[2])
            if publisher is not None:
                publisher.take_receipt(message)  # verified there; applied by its next send()
                self._woken.put(parts[2])
                self.wake.set()
            return
        station = parts[2] if len(parts) == 4 and parts[3] == COMMAND_SUFFIX else None
        try:
            request = ResendRequest.parse(message.payload)
        except MessageError as exc:
            log.error("tt10_bridge_bad_command", station=station, error=str(exc))
            return
        if station is not None:
            self._commands.put((station, request.capped()))
            self.wake.set()

    # -- worker thread ---------------------------------------------------------
    def start(self) -> None:
        session.connect_async(self._client, self.settings.broker, session.connect_properties())
        self._client.loop_start()

    def stop(self) -> None:
        """After ``run`` returned (it closes the outboxes on its own thread)."""
        session.disconnect_and_stop(self._client)
        if self.reporter is not None:
            self.reporter.close()
        self.ledger.close()

    def run(self, stop: threading.Event) -> None:
        """The worker, until ``stop`` is set; a batch whose PUBACK had not come is sent again next time."""
        last_retention = 0.0
        try:
            while not stop.is_set():
                self.wake.clear()  # before the round: news during it makes the wait below return at once
                started = time.monotonic()
                work = self.step()
                if time.monotonic() - last_retention >= RETENTION_EVERY_S:
                    last_retention = time.monotonic()
                    self.enforce_retention()
                if work < BUSY_WORK:
                    stop.wait(max(0.0, started + ROUND_EVERY_S - time.monotonic()))  # news gathers meanwhile
                    self.wake.wait(IDLE_WAIT_S)
        finally:
            self._resolve_pubacks()
            for box in self.outboxes.values():
                box.close()

    def step(self) -> int:
        """One round: judge, hold, seal; record PUBACKs; answer re-send requests; publish; report.
        Returns the work done (files, PUBACKs, batches sent, receipts written): 0 when idle."""
        if not self._opened_existing:
            self._opened_existing = True
            for path in sorted(self.settings.outbox_dir.glob("*.sqlite")):
                self._outbox(path.stem)  # batches left unsent by the last run go out first
        work = self.converter.step()
        work += self._resolve_pubacks() + self._answer_commands()
        while not self._woken.empty():
            self._due.add(self._woken.get_nowait())
        due, self._due = self._due, set()
        now = time.monotonic()
        if now - self._swept >= SWEEP_EVERY_S:
            self._swept = now
            due |= self._unsettled
        for station in due:
            publisher = self.publishers.get(station)
            if publisher is None:
                continue
            work += publisher.send()
            if publisher.settled():
                self._unsettled.discard(station)
            else:
                self._unsettled.add(station)
        if self.reporter is not None:
            work += self.reporter.report(self.ledger)
        return work

    def _outbox(self, station: str) -> Outbox:
        self._due.add(station)  # sealed into (or opened with batches left): send
        box = self.outboxes.get(station)
        if box is None:
            box = Outbox(self.settings.outbox_dir / f"{station}.sqlite", station, self.settings.outbox_retention)
            self.outboxes[station] = box
            self.publishers[station] = BatchPublisher(
                box,
                None,
                None,
                window=self.settings.window,
                connection=self._shared,
                collector_keys=dict(self.settings.receipt_keys),
            )
            self._client.subscribe([(topic, session.QOS) for topic in self._topics_of(station)])
        return box

    def _resolve_pubacks(self) -> int:
        stations = self._shared.resolve()
        self._due |= stations  # room in their window
        return len(stations)

    def _answer_commands(self) -> int:
        answered = 0
        while True:
            try:
                station, request = self._commands.get_nowait()
            except queue.Empty:
                return answered
            if station not in self.publishers:
                continue
            batches = self.outboxes[station].batches_between(request.from_seq, request.to_seq)
            self.publishers[station].resend(batches)
            self._due.add(station)
            answered += 1
            log.warning(
                "tt10_bridge_resent_on_request", station=station, first=request.from_seq, last=request.to_seq,
                resent=len(batches),
            )  # fmt: skip

    def enforce_retention(self, now_ns: int | None = None) -> int:
        """Files older than the retention (finished and reported) leave the ledger and the archive."""
        now_ns = now_ns or time.time_ns()
        for box in self.outboxes.values():
            box.enforce_retention(now_ns)
        gone = self.ledger.prune(now_ns - int(self.settings.retention_days * DAY_NS))
        for sha256 in gone:
            self.archive.remove(sha256)
        if gone:
            log.info("tt10_archive_pruned", files=len(gone), retention_days=self.settings.retention_days)
        return len(gone)

    def unsent(self) -> int:
        return sum(box.counts()["unacked_batches"] for box in self.outboxes.values())
