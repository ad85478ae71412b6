"""Store-and-forward relay: a province's signed batches to the national broker, unchanged, via disk.

Province side: one persistent MQTT v5 session (manual ack) on the stations' data and status
topics.  A batch is acknowledged to the province broker only after it is committed into
that station's outbox (``edge_agent.outbox.Outbox.keep_sealed``: the exact payload bytes,
keyed by the station's own sequence number; a redelivery is a no-op).

National side: one persistent session, shared by one ``edge_agent.publisher.BatchPublisher``
per station (no key: they only publish what is kept).  A batch is marked sent on its
national PUBACK, as an agent's is, so whatever the agent's publisher and outbox learn
(warehouse receipts, re-send back-off) the relay inherits.  A national outage of days is
held on disk, within each outbox's retention and byte cap.

Re-send requests from the national collector (``cmd`` on national) are answered from the
relay's outboxes; the part it does not hold goes on to the station's ``cmd`` topic on the
province broker, and the station's own re-send report comes back through the status path.
Statuses are forwarded too (the latest per station, retained), acknowledged once held in memory:
a station repeats its status, a batch it never repeats.

Warehouse receipts from national (``receipt``): with the national collectors' public keys the
relay's publishers verify them and send again what no receipt covered in time, exactly as an
agent does (a national broker that loses what it acknowledged loses nothing); with
``pass_receipts`` the receipts also go on, unchanged and retained, to the station's receipt topic
on the province broker, so an agent whose only warehouse is national learns that its batches
arrived (it verifies the national collector's signature itself).
"""

from __future__ import annotations

import queue
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from broker_bridge import session
from broker_bridge.catalog import STATUS
from broker_bridge.commands import ResendRequest
from broker_bridge.envelope import EnvelopeError, VerifyKey
from broker_bridge.json_message import MessageError
from broker_bridge.station_messages import ranges_of
from broker_bridge.topics import (
    COMMAND_SUFFIX,
    DATA_SUFFIX,
    RECEIPT_SUFFIX,
    command_topic,
    data_topic,
    receipt_topic,
    status_topic,
)
from edge_agent.outbox import Outbox, RetentionPolicy
from edge_agent.publisher import BatchPublisher, SharedSession

log = structlog.get_logger("broker_bridge.forward")

RETENTION_EVERY_S = 60.0
PROGRESS_EVERY_S = 30.0


@dataclass(frozen=True)
class RelaySettings:
    stations: tuple[str, ...]
    province: session.BrokerAddress
    national: session.BrokerAddress
    outbox_dir: Path
    client_id: str = "quantrac-relay"
    retention: RetentionPolicy = field(default_factory=RetentionPolicy)  # per station, as an agent's
    window: int = 100  # batches in flight to national per station
    max_pending: int = 5000  # province messages held before their commit (also the Receive Maximum)
    commit_every_s: float = 0.05
    receipt_keys: dict[str, VerifyKey] = field(default_factory=dict)  # national collectors' keys: verify receipts
    pass_receipts: bool = False  # national receipts on to the province broker (retained), for the agents


@dataclass
class RelayCounts:
    kept_batches: int = 0
    kept_readings: int = 0
    redelivered: int = 0  # already kept: acknowledged, not stored twice
    refused: int = 0  # not one of the station's envelopes: logged, acknowledged, not forwarded
    statuses: int = 0
    resend_from_outbox: int = 0
    resend_passed_on: int = 0


class Relay:
    def __init__(self, settings: RelaySettings) -> None:
        self.settings = settings
        self.stations = tuple(dict.fromkeys(settings.stations))
        outbox_dir = Path(settings.outbox_dir)
        self.outboxes = {s: Outbox(outbox_dir / f"{s}.sqlite", s, settings.retention) for s in self.stations}
        self.counts = RelayCounts()
        self._incoming: queue.SimpleQueue[tuple[int, str, int, int, bytes]] = queue.SimpleQueue()
        self._commands: queue.SimpleQueue[tuple[str, ResendRequest]] = queue.SimpleQueue()
        self._generation = 0  # province connection number: mids of an older one are never acknowledged
        self._statuses: dict[str, bytes] = {}  # latest per station, not yet published to national
        self._status_lock = threading.Lock()
        self.province_connected = threading.Event()
        self.national_connected = threading.Event()

        self._province = session.new_client(settings.client_id, manual_ack=True)
        self._province.on_connect = self._on_province_connect
        self._province.on_disconnect = lambda c, u, f, rc, p: self._disconnected(
            self.province_connected, "province", rc
        )
        self._province.on_message = self._on_province_message
        self._national = session.new_client(settings.client_id)
        self._national.on_connect = self._on_national_connect
        self._national.on_disconnect = lambda c, u, f, rc, p: self._disconnected(
            self.national_connected, "national", rc
        )
        self._shared = SharedSession(self._national, self.national_connected)
        self._national.on_publish = lambda c, u, mid, rc, p: self._shared.puback(mid, rc)
        self._national.on_message = self._on_national_message
        self.publishers = {
            s: BatchPublisher(
                box,
                None,
                None,
                window=settings.window,
                connection=self._shared,
                collector_keys=settings.receipt_keys,
            )
            for s, box in self.outboxes.items()
        }

    # -- network threads --------------------------------------------------
    def _disconnected(self, flag: threading.Event, side: str, reason_code) -> None:
        flag.clear()
        log.warning("relay_disconnected", side=side, reason=str(reason_code))

    def _on_province_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("relay_connect_refused", side="province", reason=str(reason_code))
            return
        self._generation += 1
        topics = [(t, session.QOS) for s in self.stations for t in (data_topic(s), status_topic(s))]
        client.subscribe(topics)
        self.province_connected.set()
        log.info("relay_connected", side="province", session_present=flags.session_present, stations=len(self.stations))

    def _on_province_message(self, client, userdata, message) -> None:
        self._incoming.put((self._generation, message.topic, message.mid, message.qos, bytes(message.payload)))

    def _on_national_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("relay_connect_refused", side="national", reason=str(reason_code))
            return
        topics = [command_topic(s) for s in self.stations]
        if self.settings.receipt_keys or self.settings.pass_receipts:
            topics += [receipt_topic(s) for s in self.stations]
        client.subscribe([(topic, session.QOS) for topic in topics])
        self.national_connected.set()
        log.info("relay_connected", side="national", session_present=flags.session_present)

    def _on_national_message(self, client, userdata, message) -> None:
        parts = message.topic.split("/")
        station = parts[2] if len(parts) == 4 and parts[2] in self.outboxes else None
        if station is not None and parts[3] == RECEIPT_SUFFIX:
            self._on_national_receipt(station, message)
            return
        if station is None or parts[3] != COMMAND_SUFFIX:
            log.error("relay_unexpected_message", topic=message.topic)
            return
        try:
            request = ResendRequest.parse(message.payload)
        except MessageError as exc:
            log.error("relay_bad_command", station=station, error=str(exc))
            return
        self._commands.put((station, request.capped()))

    def _on_national_receipt(self, station: str, message) -> None:
        if self.settings.receipt_keys:
            self.publishers[station].take_receipt(message)  # verified there; a bad one is logged and ignored
        if self.settings.pass_receipts and not message.retain:
            # unchanged: the agent verifies the national collector's signature, not the relay's word
            self._province.publish(receipt_topic(station), bytes(message.payload), qos=session.QOS, retain=True)

    # -- the relay thread -------------------------------------------------
    def start(self) -> None:
        session.connect_async(
            self._province,
            self.settings.province,
            session.connect_properties(receive_maximum=min(self.settings.max_pending, 65_535)),
        )
        session.connect_async(self._national, self.settings.national, session.connect_properties())
        self._province.loop_start()
        self._national.loop_start()

    def stop(self) -> None:
        for client in (self._province, self._national):
            session.disconnect_and_stop(client)
        self._resolve_pubacks()
        for box in self.outboxes.values():
            box.close()

    def run(self, stop: threading.Event) -> None:
        last_retention = last_progress = time.monotonic()
        while not stop.is_set():
            busy = self.step()
            now = time.monotonic()
            if now - last_retention >= RETENTION_EVERY_S:
                last_retention = now
                for box in self.outboxes.values():
                    box.enforce_retention()
            if now - last_progress >= PROGRESS_EVERY_S:
                last_progress = now
                log.info("relay_progress", held_unsent=self.held_unsent(), **vars(self.counts))
            if not busy:
                stop.wait(self.settings.commit_every_s)

    def step(self) -> bool:
        """One round: commit what arrived and acknowledge it, then publish to national. True when busy."""
        took = self._take_incoming()
        acked = self._resolve_pubacks()
        answered = self._answer_commands()
        self._publish_statuses()
        sent = sum(publisher.send() for publisher in self.publishers.values())
        return bool(took or acked or answered or sent)

    def _take_incoming(self) -> int:
        messages = []
        while len(messages) < self.settings.max_pending:
            try:
                messages.append(self._incoming.get_nowait())
            except queue.Empty:
                break
        if not messages:
            return 0
        batches: dict[str, list[bytes]] = defaultdict(list)
        for _, topic, _, _, payload in messages:
            station, suffix = topic.split("/")[2], topic.split("/")[3]
            if suffix == DATA_SUFFIX:
                batches[station].append(payload)
            else:
                with self._status_lock:
                    self._statuses[station] = payload
                self.counts.statuses += 1
        for station, payloads in batches.items():
            self._keep(station, payloads)
        # Committed (fsynced): now the province broker may forget them.
        generation = self._generation
        for message_generation, _, mid, qos, _ in messages:
            if message_generation == generation and qos > 0:
                self._province.ack(mid, qos)
        return len(messages)

    def _keep(self, station: str, payloads: list[bytes]) -> None:
        box = self.outboxes[station]
        try:
            kept = box.keep_sealed(payloads)
        except (EnvelopeError, ValueError):
            kept = []
            for payload in payloads:  # find the bad one(s); keep the others
                try:
                    kept += box.keep_sealed([payload])
                except (EnvelopeError, ValueError) as exc:
                    self.counts.refused += 1
                    log.error("relay_refused_payload", station=station, error=str(exc), bytes=len(payload))
        self.counts.kept_batches += len(kept)
        self.counts.kept_readings += sum(b.readings for b in kept)
        self.counts.redelivered += len(payloads) - len(kept)

    def _resolve_pubacks(self) -> int:
        return len(self._shared.resolve())

    def _answer_commands(self) -> int:
        answered = 0
        while True:
            try:
                station, request = self._commands.get_nowait()
            except queue.Empty:
                return answered
            answered += 1
            batches = self.outboxes[station].batches_between(request.from_seq, request.to_seq)
            self.publishers[station].resend(batches)
            kept = {b.seq for b in batches}
            missing = ranges_of([seq for seq in range(request.from_seq, request.to_seq + 1) if seq not in kept])
            for first, last in missing:
                self._province.publish(command_topic(station), ResendRequest(first, last).encode(), qos=session.QOS)
            self.counts.resend_from_outbox += len(batches)
            self.counts.resend_passed_on += sum(last - first + 1 for first, last in missing)
            log.warning(
                "relay_resend_request",
                station=station,
                first=request.from_seq,
                last=request.to_seq,
                from_outbox=len(batches),
                passed_to_station=missing,
            )

    def _publish_statuses(self) -> None:
        if not self.national_connected.is_set():
            return
        with self._status_lock:
            pending, self._statuses = self._statuses, {}
        for station, payload in pending.items():
            self._national.publish(status_topic(station), payload, qos=STATUS.qos, retain=STATUS.retain)

    # -- status -----------------------------------------------------------
    def held_unsent(self) -> int:
        return sum(box.counts()["unacked_batches"] for box in self.outboxes.values())

    def held_unsent_readings(self) -> int:
        return sum(box.counts()["unacked_readings"] for box in self.outboxes.values())
