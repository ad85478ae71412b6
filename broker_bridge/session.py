"""MQTT session settings that the agent and the collector share.

Paho's defaults lose data: its first connect is clean unless
``clean_start=False`` is passed, and a v3.1.1 session has no expiry to set.
Every quantrac client therefore uses MQTT v5, a stable client id, a
persistent session with an explicit expiry, and QoS 1.
"""

from __future__ import annotations

import random
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from broker_bridge.read_ahead import ReadAheadClient
from supervisor.address import split_host_port

QOS = 1  # QoS 2 gains nothing: paho keeps QoS 2 state only in memory
SESSION_EXPIRY_S = 7 * 24 * 3600  # the broker keeps our queue through a week's outage
KEEPALIVE_S = 30


RECONNECT_MIN_S = 1
RECONNECT_MAX_S = 30


@dataclass(frozen=True)
class TlsSettings:
    ca_file: Path  # the broker's certificate must chain to this CA; never skipped
    cert_file: Path | None = None  # optional client certificate
    key_file: Path | None = None


@dataclass(frozen=True)
class BrokerAddress:
    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = None
    tls: TlsSettings | None = None

    @classmethod
    def parse(cls, text: str) -> BrokerAddress:
        host, port = split_host_port(text, "broker address", "127.0.0.1:1883")
        return cls(host=host, port=port)

    def with_credentials(self, username: str | None, password_file: Path | None) -> BrokerAddress:
        """Passwords come from a file, never from the command line where `ps` shows them."""
        if password_file is not None and username is None:
            raise ValueError("a broker password file needs a user name too")
        password = None
        if password_file is not None:
            try:
                password = Path(password_file).read_text().strip()
            except OSError as exc:
                raise ValueError(f"cannot read broker password file {password_file}: {exc.strerror}") from exc
        return BrokerAddress(self.host, self.port, username, password, self.tls)

    def with_tls(
        self, ca_file: Path | None, cert_file: Path | None = None, key_file: Path | None = None
    ) -> BrokerAddress:
        if ca_file is None:
            if cert_file or key_file:
                raise ValueError(
                    "a client certificate needs --tls-ca as well: the broker's certificate is always verified"
                )
            return self
        if (cert_file is None) != (key_file is None):
            raise ValueError("give both --tls-cert and --tls-key, or neither")
        for path in (ca_file, cert_file, key_file):
            if path is not None and not Path(path).is_file():
                raise ValueError(f"TLS file {path} does not exist")
        return BrokerAddress(
            self.host, self.port, self.username, self.password, TlsSettings(ca_file, cert_file, key_file)
        )


def new_client(client_id: str, *, manual_ack: bool = False) -> mqtt.Client:
    if not client_id:
        raise ValueError("a persistent session needs a stable, non-empty client id")
    client = ReadAheadClient(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5,
        manual_ack=manual_ack,
    )
    client.reconnect_delay_set(min_delay=RECONNECT_MIN_S, max_delay=RECONNECT_MAX_S)
    return client


class _Unexpected:
    is_failure = True


UNEXPECTED = _Unexpected()  # for callbacks that carry no reason code, e.g. a refused TCP connect


def jitter_before_reconnect(reason_code, attempt: int) -> float:
    """Sleep a random share of the current back-off after an unexpected disconnect.

    paho's own back-off doubles up to a cap but has no jitter, so 2,000
    stations cut off by one outage would all come back in the same second.
    Call from on_disconnect (the network thread, which has nothing else to do).
    """
    if not reason_code.is_failure:
        return 0.0
    delay = random.uniform(0, min(RECONNECT_MAX_S, RECONNECT_MIN_S * 2 ** min(attempt, 16)) / 2)
    time.sleep(delay)
    return delay


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
    if broker.tls is not None:
        client.tls_set(
            ca_certs=str(broker.tls.ca_file),
            certfile=str(broker.tls.cert_file) if broker.tls.cert_file else None,
            keyfile=str(broker.tls.key_file) if broker.tls.key_file else None,
            cert_reqs=ssl.CERT_REQUIRED,
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
    client.connect_async(broker.host, broker.port, keepalive=KEEPALIVE_S, clean_start=False, properties=properties)


def disconnect_and_stop(client: mqtt.Client, timeout_s: float = 10.0) -> None:
    """Disconnect, then stop paho's network thread. After ``disconnect()`` that thread ends by itself and
    clears ``client._thread`` as it goes, while ``loop_stop()`` reads the attribute twice: it can find it
    gone in between (AttributeError in paho 2.1). Then the thread it saw is joined here instead."""
    thread = getattr(client, "_thread", None)
    client.disconnect()
    try:
        client.loop_stop()
    except AttributeError:
        if thread is not None:
            thread.join(timeout_s)
