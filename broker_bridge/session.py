"""MQTT session settings that the agent and the collector share.

Paho's defaults lose data: its first connect is clean unless
``clean_start=False`` is passed, and a v3.1.1 session has no expiry to set.
Every quantrac client therefore uses MQTT v5, a stable client id, a
persistent session with an explicit expiry, and QoS 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

QOS = 1  # QoS 2 gains nothing: paho keeps QoS 2 state only in memory
SESSION_EXPIRY_S = 7 * 24 * 3600  # the broker keeps our queue through a week's outage
KEEPALIVE_S = 30


@dataclass(frozen=True)
class BrokerAddress:
    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, text: str) -> "BrokerAddress":
        host, sep, port = text.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"broker address {text!r} must look like host:port, e.g. 127.0.0.1:1883")
        return cls(host=host, port=int(port))


def new_client(client_id: str, *, manual_ack: bool = False) -> mqtt.Client:
    if not client_id:
        raise ValueError("a persistent session needs a stable, non-empty client id")
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5,
        manual_ack=manual_ack,
    )
    client.reconnect_delay_set(min_delay=1, max_delay=30)
    return client


def connect_properties(session_expiry_s: int = SESSION_EXPIRY_S, receive_maximum: int | None = None) -> Properties:
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = session_expiry_s
    if receive_maximum is not None:
        props.ReceiveMaximum = receive_maximum
    return props


def connect_async(client: mqtt.Client, broker: BrokerAddress, properties: Properties) -> None:
    """Start a persistent-session connect; the network thread retries until it succeeds."""
    if broker.username is not None:
        client.username_pw_set(broker.username, broker.password)
    client.connect_async(broker.host, broker.port, keepalive=KEEPALIVE_S, clean_start=False, properties=properties)
