"""MQTT in: messages held until their flush is committed, then acknowledged.

A message is either *waiting* (arrived, not yet in a flush) or *in flight*
(taken into a flush that is being prepared or committed). Flushes take the
oldest waiting messages; a flush that does not commit gives its messages
back, to the front, in arrival order. The memory bound counts both.

PUBACKs go out in arrival order, and only on the connection that delivered
the message: after a reconnect the broker redelivers.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from operator import attrgetter

import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.subscribeoptions import SubscribeOptions

from broker_bridge import session
from broker_bridge.broker_health import BrokerHealth
from broker_bridge.topics import data_subscription, status_subscription
from collector.admission import Accepted, Rejected, StationEvent
from collector.metrics import CollectorMetrics
from collector.qc.flags import QcColumns

log = structlog.get_logger("collector")


# Data: never a retained message (MQTT v5 Retain Handling 2, "do not send"), whatever the broker holds:
# batches are never retained by the contract, and a retained one would be re-delivered, and re-rejected,
# at every subscribe. Status: retained birth and will are how the collector learns each station's state
# at its first start, so they are sent, but only when the subscription is new (Retain Handling 1): a
# resumed persistent session does not get every station's last word again at each reconnect.
DATA_OPTIONS = SubscribeOptions(qos=session.QOS, retainHandling=SubscribeOptions.RETAIN_DO_NOT_SEND)
STATUS_OPTIONS = SubscribeOptions(qos=session.QOS, retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB)


def subscriptions(share_group: str | None) -> list[tuple[str, SubscribeOptions]]:
    return [(data_subscription(share_group), DATA_OPTIONS), (status_subscription(share_group), STATUS_OPTIONS)]


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
    order: int = 0  # arrival number: a flush given back returns to its place


@dataclass(frozen=True)
class FlushLimits:
    interval_s: float  # the longest a message waits for its flush
    max_messages: int
    max_bytes: int
    max_readings: int
    max_pending: int  # messages held (waiting and in flight)
    max_pending_bytes: int


class Intake:
    """The broker connection and the messages it delivered that are not acknowledged yet.

    ``admit(item)`` judges each message on arrival (network thread); ``flush_here()`` is
    called on the network thread when a flush is due or memory is full (the collector
    flushes inline under load, see ``Collector._flush_inline``).
    """

    def __init__(
        self,
        broker: session.BrokerAddress,
        client_id: str,
        share_group: str | None,
        receive_maximum: int,
        limits: FlushLimits,
        metrics: CollectorMetrics,
        admit: Callable[[PendingMessage], None],
        flush_here: Callable[[], None],
        broker_health: BrokerHealth | None = None,
    ) -> None:
        self.broker, self.client_id, self.share_group = broker, client_id, share_group
        self.receive_maximum = receive_maximum
        self.limits = limits
        self.metrics = metrics
        self._admit, self._flush_here = admit, flush_here
        self._waiting: deque[PendingMessage] = deque()
        self._waiting_bytes = 0
        self._waiting_readings = 0  # of accepted messages, as checked on arrival
        self._in_flight = 0
        self._in_flight_bytes = 0
        self._arrivals = 0
        self.cond = threading.Condition()  # guards the above; the flush loop waits on it
        self._generation = 0
        self._disconnects = 0
        self._stopping = threading.Event()
        self.connected = threading.Event()
        self._client = session.new_client(client_id, manual_ack=True)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        # The broker's own $SYS counters (dropped messages above all) arrive on a callback of their own:
        # they are QoS 0 broker notices, never data to acknowledge.
        self._broker_health = broker_health
        if broker_health is not None:
            broker_health.attach(self._client)

    # -- connection ---------------------------------------------------------
    def start(self) -> None:
        session.connect_async(
            self._client, self.broker, session.connect_properties(receive_maximum=self.receive_maximum)
        )
        self._client.loop_start()

    def stop(self) -> None:
        self._stopping.set()
        with self.cond:
            self.cond.notify_all()
        session.disconnect_and_stop(self._client)

    def publish(self, topic: str, payload: bytes | str, retain: bool = False) -> None:
        self._client.publish(topic, payload, qos=session.QOS, retain=retain)

    @property
    def generation(self) -> int:
        return self._generation

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("mqtt_connect_refused", reason=str(reason_code), client_id=self.client_id)
            return
        with self.cond:
            self._generation += 1
        self._disconnects = 0
        # Subscribing again on a resumed session is harmless and covers the
        # case where the broker lost it.
        client.subscribe(subscriptions(self.share_group))
        if self._broker_health is not None:
            self._broker_health.subscribe(client)
        self.connected.set()
        log.info("mqtt_connected", session_present=flags.session_present, client_id=self.client_id)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connected.clear()
        if self._stopping.is_set():  # our own DISCONNECT on a planned stop
            log.info("mqtt_disconnected_planned", reason=str(reason_code), client_id=self.client_id)
            return
        log.warning("mqtt_disconnected", reason=str(reason_code), client_id=self.client_id)
        self._disconnects += 1
        session.jitter_before_reconnect(reason_code, self._disconnects)

    def _on_message(self, client, userdata, message: mqtt.MQTTMessage) -> None:
        item = PendingMessage(
            self._generation, message.mid, message.qos, message.topic, bytes(message.payload), time.time_ns()
        )
        self._admit(item)
        # A look without the lock (one less acquisition per message, which under load means one less
        # wait for the interpreter lock): a stale answer moves a flush by a message, and the bound is
        # enforced under the lock below.
        if self._full_locked():
            self._flush_here()
        with self.cond:
            # Mosquitto does not reliably honour Receive Maximum once acks
            # flow, so the collector bounds its own memory: holding the
            # network thread here stops reading the socket. Only while
            # QuestDB is down does it wait: the run loop retries with back-off.
            while self._full_locked() and not self._stopping.is_set():
                self.cond.wait(timeout=0.5)
            self._hold_locked(item)
            # Nobody is woken per message: the run loop looks on its own schedule.
            due = self._due_locked(time.monotonic())
        if due:
            self._flush_here()

    # -- held messages ------------------------------------------------------
    def hold(self, item: PendingMessage) -> None:
        """Keep a message until its flush settles (what the network thread does on arrival)."""
        with self.cond:
            self._hold_locked(item)

    def _hold_locked(self, item: PendingMessage) -> None:
        self._arrivals += 1
        item.order = self._arrivals
        self._waiting.append(item)
        self._waiting_bytes += len(item.payload)
        self._waiting_readings += item.readings
        self.metrics.messages.inc()
        self.metrics.unacked.set(len(self._waiting) + self._in_flight)

    def full(self) -> bool:
        with self.cond:
            return self._full_locked()

    def _full_locked(self) -> bool:
        held = len(self._waiting) + self._in_flight
        return (
            held >= self.limits.max_pending
            or self._waiting_bytes + self._in_flight_bytes >= self.limits.max_pending_bytes
        )

    def _due_locked(self, now: float) -> bool:
        """A flush is due: a full flush is waiting, memory is at its bound, or the oldest message
        waited ``interval_s``. QuestDB pays per transaction (each one merges into its partitions),
        so a trickle of tiny flushes costs it several times the rows' work."""
        if not self._waiting:
            return False
        limits = self.limits
        return (
            self._full_locked()
            or self._waiting_readings >= limits.max_readings
            or len(self._waiting) >= min(limits.max_messages, limits.max_pending)
            or self._waiting_bytes >= min(limits.max_bytes, limits.max_pending_bytes)
            or now >= self._waiting[0].arrived + limits.interval_s
        )

    def take(self, force: bool = False) -> list[PendingMessage]:
        """The oldest waiting messages, up to one flush's limits, if a flush is due (or ``force``);
        they are in flight until ``settled`` or ``give_back``."""
        with self.cond:
            if not self._waiting or not (force or self._due_locked(time.monotonic())):
                return []
            batch, size, readings = [], 0, 0
            limits = self.limits
            for item in self._waiting:
                if batch and (
                    len(batch) >= limits.max_messages
                    or size + len(item.payload) > limits.max_bytes
                    or readings >= limits.max_readings
                ):
                    break
                batch.append(item)
                size += len(item.payload)
                readings += item.readings
            for _ in batch:
                self._waiting.popleft()
            self._waiting_bytes -= size
            self._waiting_readings -= readings
            self._in_flight += len(batch)
            self._in_flight_bytes += size
            return batch

    def give_back(self, batch: list[PendingMessage]) -> None:
        """A flush that did not commit: its messages wait again, in arrival order, at the front."""
        if not batch:
            return
        with self.cond:
            self._in_flight -= len(batch)
            self._in_flight_bytes -= sum(len(i.payload) for i in batch)
            self._waiting_bytes += sum(len(i.payload) for i in batch)
            self._waiting_readings += sum(i.readings for i in batch)
            self._waiting = deque(sorted([*batch, *self._waiting], key=attrgetter("order")))
            self.cond.notify_all()

    def settled(self, batch: list[PendingMessage]) -> None:
        """The flush is committed: release its messages and acknowledge them."""
        with self.cond:
            self._in_flight -= len(batch)
            self._in_flight_bytes -= sum(len(i.payload) for i in batch)
            self.metrics.unacked.set(len(self._waiting) + self._in_flight)
            generation = self._generation
            self.cond.notify_all()
        for item in batch:
            if item.generation == generation:
                self._client.ack(item.mid, item.qos)

    def oldest_waiting(self) -> float | None:
        """When the oldest waiting message arrived (monotonic), or None; callers hold ``cond``."""
        return self._waiting[0].arrived if self._waiting else None

    def wake(self, *_args) -> None:
        with self.cond:
            self.cond.notify_all()

    def held(self) -> int:
        """Messages not acknowledged yet, waiting or in flight."""
        with self.cond:
            return len(self._waiting) + self._in_flight
