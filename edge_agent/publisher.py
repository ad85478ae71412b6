"""Publishes sealed batches from the outbox and records the broker's PUBACKs.

A batch counts as delivered only when the broker's PUBACK for it arrives;
until then it stays unacknowledged in the outbox, and a restarted agent
sends the identical signed bytes again (the collector's DEDUP makes that
harmless). The number of batches in flight is bounded; when both lanes have
data, live and backlog batches alternate so a long backlog never starves
live data.

Liveness follows Sparkplug's bdSeq: every MQTT connection gets a session
number, the last will ("offline") and the birth ("online") carry it, so a
will that arrives late can never override a newer birth.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import defaultdict
from typing import Any

import paho.mqtt.client as mqtt
import structlog

from broker_bridge import session
from broker_bridge.catalog import STATUS
from broker_bridge.commands import ResendRequest
from broker_bridge.envelope import VerifyKey
from broker_bridge.json_message import MessageError
from broker_bridge.keys import SigningKey
from broker_bridge.receipts import Receipt, SignedReceipt
from broker_bridge.station_messages import (
    Birth,
    ResendReport,
    StationDescription,
    StationState,
    Status,
    Will,
    ranges_of,
    seal_station_message,
)
from broker_bridge.topics import command_topic, data_topic, receipt_topic, status_topic
from edge_agent.live_window import LiveWindow
from edge_agent.outbox import BACKLOG, LIVE, Outbox, SealedBatch

log = structlog.get_logger("edge_agent.publisher")

NO_MATCHING_SUBSCRIBERS = 0x10
# Session numbers: the outbox's durable counter (one step per agent start)
# times this, plus the connection number within the process: monotonic
# across reconnects and restarts without touching the disk from the network thread.
CONNECTIONS_PER_START = 1_000_000


class BatchPublisher:
    """Publishes one station's outbox.  ``key`` None: the outbox only holds batches sealed
    elsewhere (``Outbox.keep_sealed``, a relay) and nothing is sealed here.  ``connection``:
    share a ``SharedSession`` another object owns (a relay forwarding many stations over one
    session); the owner connects, sets its ``connected``, and feeds it the PUBACKs."""

    def __init__(
        self,
        outbox: Outbox,
        key: SigningKey | None,
        broker: session.BrokerAddress | None,
        *,
        window: int = 20,
        max_readings_per_batch: int = 1000,
        historical_after_s: float = 60.0,
        description: StationDescription | None = None,
        unheard_retry_s: float = 30.0,
        connection: SharedSession | None = None,
        collector_keys: dict[str, VerifyKey] | None = None,
        live_batch_s: float = 0.0,
    ) -> None:
        self.outbox = outbox
        self.key = key
        self.broker = broker
        self.station_id = outbox.station_id
        self.window = window
        self.max_readings_per_batch = max_readings_per_batch
        # A reading waiting inside its live window is not late: it turns historical only as long after the
        # window's end as it would have after its poll without one.
        self.historical_after_s = historical_after_s + live_batch_s
        #: seals the live lane: at once (0), or the polls of each live_batch_s window into one batch
        self.live = LiveWindow(outbox, live_batch_s, max_readings_per_batch)
        self.description = description
        self.topic = data_topic(self.station_id)
        self.status_topic = status_topic(self.station_id)
        self.command_topic = command_topic(self.station_id)
        self._resend_requests: queue.SimpleQueue[ResendRequest] = queue.SimpleQueue()
        self.resent_batches = 0
        # Receipts from the warehouse (broker_bridge/receipts.py), trusted only when one of these keys signed them.
        self.receipt_topic = receipt_topic(self.station_id)
        self.collector_keys = dict(collector_keys or {})
        self._receipts: queue.SimpleQueue[Receipt] = queue.SimpleQueue()
        self.resent_for_receipt = 0
        self.receipts_ignored = 0
        self.connected = threading.Event()
        # PUBACKs arrive on paho's network thread, which calls on_publish while
        # holding paho's own message lock; taking a lock of ours there would
        # deadlock against publish() on the agent thread. So the callback only
        # queues (mid, reason), and the agent thread, the only one that touches
        # _in_flight, resolves them after publish() has returned each mid.
        self._pubacks: queue.SimpleQueue[tuple[int, Any]] = queue.SimpleQueue()
        self._in_flight: dict[int, int] = {}  # mid -> seq
        # Batches the broker took but could route to nobody: no collector
        # session exists (yet, or any more), so the broker dropped them.
        self._retry_due: list[tuple[float, int]] = []
        self.unheard_retry_s = unheard_retry_s
        self._published_upto = 0  # highest seq handed to paho by this process
        self._last_lane = BACKLOG
        self._session_base = outbox.next_session() * CONNECTIONS_PER_START
        self._connection = 0
        self._failed_attempts = 0
        self._stopping = False  # set by stop(): the disconnect that follows is planned
        self.refused: list[tuple[int, str]] = []  # (seq, reason) the broker refused
        self._shared = connection
        if connection is not None:
            self._client, self.connected = connection.client, connection.connected
            return
        self._client = session.new_client(f"quantrac-agent-{self.station_id}")
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_message = self._on_command
        self._arm_will()

    @property
    def session_number(self) -> int:
        return self._session_base + self._connection

    def _arm_will(self) -> None:
        self._connection += 1
        will = Will(self.station_id, self.session_number)
        # Signed now, before the connection it belongs to: the broker publishes these bytes as they are.
        self._client.will_set(self.status_topic, self._signed(will), qos=STATUS.qos, retain=STATUS.retain)

    def _signed(self, message: Birth | Will | Status | ResendReport) -> bytes:
        """A status-topic message as it goes on the wire: signed with the station's key, like a batch."""
        return seal_station_message(message, self.key.key_id, self.key.private_key)

    # -- network thread -------------------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._failed_attempts += 1
            log.error("mqtt_connect_refused", station=self.station_id, reason=str(reason_code))
            return
        self._failed_attempts = 0
        self.connected.set()
        birth = Birth(self.station_id, self.session_number, time.time_ns(), self.description)
        client.publish(self.status_topic, self._signed(birth), qos=STATUS.qos, retain=STATUS.retain)
        client.subscribe(self.command_topic, qos=session.QOS)
        if self.collector_keys:
            client.subscribe(self.receipt_topic, qos=session.QOS)
        log.info(
            "mqtt_connected",
            station=self.station_id,
            session=self.session_number,
            session_present=flags.session_present,
        )

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connected.clear()
        if self._stopping:  # our own DISCONNECT on a planned stop (SIGTERM, Ctrl-C): nothing to reconnect
            log.info(
                "mqtt_disconnected_planned", station=self.station_id, session=self.session_number,
                reason=str(reason_code),
            )  # fmt: skip
            return
        log.warning("mqtt_disconnected", station=self.station_id, reason=str(reason_code))
        # The next connection is a new session: its will must not match this birth.
        self._arm_will()
        self._failed_attempts += 1
        session.jitter_before_reconnect(reason_code, self._failed_attempts)

    def _on_command(self, client, userdata, message) -> None:
        if message.topic == self.receipt_topic:
            self.take_receipt(message)
            return
        try:
            request = ResendRequest.parse(message.payload)
        except MessageError as exc:
            log.error(
                "bad_command", station=self.station_id, error=str(exc), payload=bytes(message.payload[:200]).hex()
            )
            return
        self._resend_requests.put(request.capped())

    def take_receipt(self, message) -> None:
        """A message from the receipt topic (network thread): verified, then applied by the next ``send``."""
        try:
            receipt = SignedReceipt.parse(bytes(message.payload)).verified(self.collector_keys)
            if receipt.station != self.station_id:
                raise MessageError("schema", "body.station", f"names {receipt.station}, not this station")
        except MessageError as exc:
            self.receipts_ignored += 1
            log.error(
                "receipt_ignored", station=self.station_id, reason=exc.reason, error=str(exc),
                payload=bytes(message.payload[:200]).hex(),
            )  # fmt: skip
            return
        self._receipts.put(receipt)

    def _on_connect_fail(self, client, userdata) -> None:
        self._failed_attempts += 1
        session.jitter_before_reconnect(session.UNEXPECTED, self._failed_attempts)

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        self._pubacks.put((mid, reason_code))

    # -- agent thread ---------------------------------------------------
    def start(self) -> None:
        session.connect_async(self._client, self.broker, session.connect_properties())
        self._client.loop_start()

    def stop(self) -> None:
        self._stopping = True
        if self.connected.is_set():
            # A planned stop is not a crash: say so ourselves, since the broker
            # sends no will after a clean DISCONNECT.
            goodbye = Will(self.station_id, self.session_number, planned=True)
            info = self._client.publish(self.status_topic, self._signed(goodbye), qos=STATUS.qos, retain=STATUS.retain)
            info.wait_for_publish(timeout=2)
        session.disconnect_and_stop(self._client)
        self.pump_acks()

    def publish_status(self, state: StationState) -> None:
        self._publish_station_message(Status(self.station_id, self.session_number, time.time_ns(), state))

    def _publish_station_message(self, message: Status | ResendReport) -> None:
        self._client.publish(self.status_topic, self._signed(message), qos=STATUS.qos, retain=STATUS.retain)

    def in_flight(self) -> int:
        return len(self._in_flight)

    def settled(self) -> bool:
        """Nothing to do until something new comes (a batch sealed, a PUBACK, a receipt, a re-send request),
        so a shared session's owner need not call ``send`` again until then: connected, nothing in flight,
        no retry or request waiting, and (with receipts) no batch waiting for its receipt, whose time-out
        would make it due."""
        return (
            self.connected.is_set()
            and not self._in_flight
            and not self._retry_due
            and self._resend_requests.empty()
            and self._receipts.empty()
            and not (self.collector_keys and self.outbox.awaiting_receipt())
        )

    def pump_acks(self) -> int:
        acks = []
        while True:
            try:
                acks.append(self._pubacks.get_nowait())
            except queue.Empty:
                break
        return self.resolve_acks(acks)

    def resolve_acks(self, acks: list[tuple[int, Any]]) -> int:
        """Record PUBACKs (mid, reason code): acknowledged batches are marked, the rest retried or reported."""
        seqs = []
        for mid, reason_code in acks:
            seq = self._in_flight.pop(mid, None)
            if seq is None:
                continue  # a status message
            if reason_code.value == NO_MATCHING_SUBSCRIBERS:
                log.warning(
                    "batch_reached_no_collector", station=self.station_id, seq=seq, retry_in_s=self.unheard_retry_s
                )
                self._retry_due.append((time.monotonic() + self.unheard_retry_s, seq))
            elif reason_code.is_failure:
                # Refused (e.g. not authorised): the batch stays unacknowledged in the
                # outbox, is reported in the status, and is retried after a restart.
                self.refused.append((seq, str(reason_code)))
                log.error("batch_refused_by_broker", station=self.station_id, seq=seq, reason=str(reason_code))
            else:
                seqs.append(seq)
        if seqs:
            self.outbox.mark_acked(seqs)
        return len(seqs)

    def pump(self) -> int:
        """Record PUBACKs, then fill the in-flight window: old unacknowledged batches first, then new ones."""
        self.pump_acks()
        return self.send()

    def send(self) -> int:
        """Fill the in-flight window (and answer re-send requests) without reading PUBACKs."""
        if not self.connected.is_set():
            return 0
        self.apply_receipts()
        sent = self._retry_unheard() + self._answer_resend_requests() + self._resend_overdue()
        while self.in_flight() < self.window:
            batch = self._next_batch()
            if batch is None:
                break
            self._publish(batch)
            sent += 1
        return sent

    def apply_receipts(self) -> int:
        """The warehouse's receipts that arrived: their batches are delivered."""
        delivered = 0
        while True:
            try:
                receipt = self._receipts.get_nowait()
            except queue.Empty:
                return delivered
            delivered += self.outbox.mark_receipted(receipt.watermark, receipt.ranges)

    def _resend_overdue(self) -> int:
        """PUBACKed batches no receipt covered in time (the broker may have lost them): send again, oldest first."""
        if not self.collector_keys:
            return 0
        room = self.window - self.in_flight()
        if room <= 0:
            return 0
        batches = self.outbox.overdue(limit=room)
        for batch in batches:
            self._publish(batch, resend=True)
        if batches:
            self.outbox.resent_for_receipt([b.seq for b in batches])
            self.resent_for_receipt += len(batches)
            log.warning(
                "batches_resent_without_receipt",
                station=self.station_id,
                first=batches[0].seq,
                last=batches[-1].seq,
                batches=len(batches),
            )
        return len(batches)

    def _answer_resend_requests(self) -> int:
        """Re-send kept batches the warehouse asks for; say which ones are no longer kept."""
        sent = 0
        while True:
            try:
                request = self._resend_requests.get_nowait()
            except queue.Empty:
                return sent
            first, last = request.from_seq, request.to_seq
            batches = self.outbox.batches_between(first, last)
            for batch in batches:
                self._publish(batch, resend=True)
            kept = {b.seq for b in batches}
            missing = [seq for seq in range(first, last + 1) if seq not in kept]
            sent += len(batches)
            self.resent_batches += len(batches)
            log.warning(
                "batches_resent_on_request",
                station=self.station_id,
                first=first,
                last=last,
                resent=len(batches),
                not_kept=len(missing),
            )
            self._publish_station_message(
                ResendReport(
                    self.station_id, self.session_number, time.time_ns(), first, last, len(batches), ranges_of(missing)
                )
            )

    def resend(self, batches: list[SealedBatch]) -> None:
        """Publish kept batches again now, whatever the window (a re-send request answered elsewhere)."""
        for batch in batches:
            self._publish(batch, resend=True)
        self.resent_batches += len(batches)

    def _retry_unheard(self) -> int:
        now = time.monotonic()
        due = [seq for when, seq in self._retry_due if when <= now]
        if not due:
            return 0
        self._retry_due = [(when, seq) for when, seq in self._retry_due if when > now]
        for seq in due:
            for batch in self.outbox.batches_between(seq, seq):
                self._publish(batch, resend=True)
        return len(due)

    def _next_batch(self) -> SealedBatch | None:
        resend = self.outbox.unacked(limit=1, after_seq=self._published_upto)
        if resend:
            return resend[0]
        if self.key is None:
            return None  # an outbox of batches sealed elsewhere: nothing to seal here
        # Alternate lanes when both have data; otherwise take whichever has.
        preferred = LIVE if self._last_lane == BACKLOG else BACKLOG
        for lane in (preferred, 1 - preferred):
            if lane == LIVE:
                batch = self.live.seal_next(self.key, self.historical_after_s)
            else:
                batch = self.outbox.seal_next(self.key, self.max_readings_per_batch, self.historical_after_s, lane=lane)
            if batch is not None:
                self._last_lane = lane
                return batch
        return None

    def _publish(self, batch: SealedBatch, resend: bool = False) -> None:
        info = self._client.publish(self.topic, batch.payload, qos=session.QOS)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            raise RuntimeError(f"paho refused to queue batch {batch.seq}: {mqtt.error_string(info.rc)}")
        # paho keeps a QoS 1 message it could not send yet and sends it
        # on reconnect, so NO_CONN still means "in flight".
        self._in_flight[info.mid] = batch.seq
        if self._shared is not None:
            self._shared.sent(info.mid, self)
        if not resend:
            self._published_upto = batch.seq
        log.debug("batch_published", station=self.station_id, seq=batch.seq, readings=batch.readings)


class SharedSession:
    """One MQTT connection that several stations' publishers share (the relay, the TT10 bridge).

    The owner connects ``client``, sets and clears ``connected``, and has ``client.on_publish``
    call ``puback`` (network thread). Each publisher records here the mid of every batch it hands
    to paho (``sent``, on the owner's thread), so ``resolve`` finds a PUBACK's publisher in O(1):
    a mid -> station map rebuilt over every publisher at each round with PUBACKs cost the TT10
    bridge's steady loop its largest share (2,000 publishers, one PUBACK a file)."""

    def __init__(self, client: mqtt.Client, connected: threading.Event) -> None:
        self.client = client
        self.connected = connected
        self._pubacks: queue.SimpleQueue[tuple[int, Any]] = queue.SimpleQueue()
        # mid -> the publisher whose batch it is, from publish until its PUBACK (the owner's thread only)
        self._owners: dict[int, BatchPublisher] = {}

    def puback(self, mid: int, reason_code: Any) -> None:
        """paho's on_publish (network thread): queued only, for the reason ``BatchPublisher._pubacks`` says."""
        self._pubacks.put((mid, reason_code))

    def sent(self, mid: int, publisher: BatchPublisher) -> None:
        self._owners[mid] = publisher

    def in_flight(self) -> int:
        return len(self._owners)

    def resolve(self) -> set[str]:
        """The PUBACKs that came, each to the publisher that sent that mid. Returns the stations that
        got one (room in their window)."""
        by_publisher: dict[BatchPublisher, list[tuple[int, Any]]] = defaultdict(list)
        while True:
            try:
                mid, reason_code = self._pubacks.get_nowait()
            except queue.Empty:
                break
            publisher = self._owners.pop(mid, None)
            if publisher is not None:  # None: a message no publisher sent (a status)
                by_publisher[publisher].append((mid, reason_code))
        for publisher, acks in by_publisher.items():
            publisher.resolve_acks(acks)
        return {p.station_id for p in by_publisher}
