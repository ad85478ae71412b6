"""The broker's own health: Mosquitto's ``$SYS/broker/...`` counters as Prometheus gauges.

Mosquitto drops QoS 1 messages past ``max_queued_messages``/``max_queued_bytes`` (and a
bridge drops what it cannot queue) with no error to anyone but this counter, so a
collector that watches it learns of a loss the moment it happens instead of from a gap.
Topic names are those of Mosquitto 2.0.11 (Debian 12: ``strings /usr/sbin/mosquitto``,
src/sys_tree.c); the broker publishes them every ``sys_interval`` (10 s by default),
retained, at QoS 0. Reading them needs ``topic read $SYS/#`` (the generated ACL gives
it to collector users).

Use from the collector (one MQTT client is enough, ``message_callback_add`` routes
these topics away from the data path)::

    health = BrokerHealth(registry=metrics.registry)   # before connect
    health.attach(client)                              # routes $SYS/broker/# to health.observe
    health.subscribe(client)                           # in on_connect (QoS 0: never queued)
"""

from __future__ import annotations

from dataclasses import dataclass

import paho.mqtt.client as mqtt
import structlog
from prometheus_client import CollectorRegistry, Gauge

log = structlog.get_logger("broker_bridge.broker_health")

SYS_PREFIX = "$SYS/broker/"
DROPPED = "$SYS/broker/publish/messages/dropped"


@dataclass(frozen=True)
class SysCounter:
    topic: str
    metric: str
    help: str


SYS_COUNTERS: tuple[SysCounter, ...] = (
    SysCounter(DROPPED, "quantrac_broker_messages_dropped", "messages the broker dropped (queue limits, since start)"),
    SysCounter(
        "$SYS/broker/store/messages/count", "quantrac_broker_stored_messages", "messages held in the broker's store"
    ),
    SysCounter(
        "$SYS/broker/store/messages/bytes", "quantrac_broker_stored_bytes", "payload bytes held in the broker's store"
    ),
    SysCounter("$SYS/broker/clients/connected", "quantrac_broker_clients_connected", "clients connected"),
    SysCounter(
        "$SYS/broker/clients/disconnected", "quantrac_broker_clients_disconnected",
        "persistent sessions whose client is away (their messages queue)",
    ),
    SysCounter("$SYS/broker/heap/current", "quantrac_broker_heap_bytes", "the broker's heap in use"),
    SysCounter("$SYS/broker/subscriptions/count", "quantrac_broker_subscriptions", "subscriptions"),
    SysCounter("$SYS/broker/retained messages/count", "quantrac_broker_retained_messages", "retained messages"),
)  # fmt: skip
BY_TOPIC = {counter.topic: counter for counter in SYS_COUNTERS}


class BrokerHealth:
    """Gauges for one broker's ``$SYS`` counters and a warning whenever dropped messages grow."""

    def __init__(self, broker: str = "local", registry: CollectorRegistry | None = None) -> None:
        self.broker = broker
        self.registry = registry if registry is not None else CollectorRegistry()
        self._gauges = {
            c.topic: Gauge(c.metric, c.help, ["broker"], registry=self.registry).labels(broker=broker)
            for c in SYS_COUNTERS
        }
        self.values: dict[str, float] = {}
        self.dropped_increases = 0

    @property
    def subscriptions(self) -> list[tuple[str, int]]:
        return [(counter.topic, 0) for counter in SYS_COUNTERS]

    def observe(self, topic: str, payload: bytes) -> bool:
        """Record one ``$SYS`` message; False when it is not a counter we keep (or not a number)."""
        counter = BY_TOPIC.get(topic)
        if counter is None:
            return False
        try:
            value = float(bytes(payload).decode("ascii").strip())
        except (UnicodeDecodeError, ValueError):
            log.warning(
                "broker_sys_value_unreadable", broker=self.broker, topic=topic, payload=bytes(payload[:40]).hex()
            )
            return False
        previous = self.values.get(topic)
        self.values[topic] = value
        self._gauges[topic].set(value)
        if topic == DROPPED and value > (previous or 0):
            # The first reading after a (re)start is the total since the broker started: it is news too.
            self.dropped_increases += 1
            log.warning(
                "broker_dropped_messages", broker=self.broker, dropped_total=int(value),
                dropped_new=int(value - (previous or 0)),
                hint="a queue limit (max_queued_messages/bytes) was reached: raise it or find the client that is away",
            )  # fmt: skip
        return True

    def attach(self, client: mqtt.Client) -> None:
        client.message_callback_add(
            f"{SYS_PREFIX}#", lambda _c, _u, message: self.observe(message.topic, message.payload)
        )

    def subscribe(self, client: mqtt.Client) -> None:
        client.subscribe(self.subscriptions)
