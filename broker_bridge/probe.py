"""Clients that report exactly what a broker answered: for the security tests and ``bench/attack.py``.

``Probe`` is paho (the library our agent and collector use) with every CONNACK, SUBACK, PUBACK,
DISCONNECT and message kept in queues. ``RawClient`` writes MQTT v5 packets by hand, for what paho
cannot show: a PUBACK with reason 0x95 *Packet too large* (paho 2.x takes it for a malformed packet
and reconnects), the DISCONNECT the broker sends for a packet over ``max_packet_size`` (sent from the
header alone, without the megabytes behind it), and a will left by a connection that dies without
DISCONNECT. Neither is used by the agent or the collector.
"""

from __future__ import annotations

import queue
import socket
import ssl
import struct
import threading
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode

from broker_bridge.mosquitto_server import mqtt_varint
from broker_bridge.session import BrokerAddress, connect_properties, disconnect_and_stop

NOT_AUTHORIZED = 0x87  # MQTT v5 reason code 135 (CONNACK, SUBACK, PUBACK)
NO_MATCHING_SUBSCRIBERS = 0x10  # PUBACK: a success code
PACKET_TOO_LARGE = 0x95  # PUBACK (Mosquitto's message_size_limit) and DISCONNECT (max_packet_size)
SESSION_TAKEN_OVER = 0x8E  # DISCONNECT: another connection took this client id


class Probe:
    """An MQTT v5 paho client; ``connect``, ``publish`` and ``subscribe`` return the broker's reason codes."""

    def __init__(
        self,
        address: BrokerAddress,
        client_id: str | None = None,
        persistent: bool = False,
        session_expiry_s: int | None = None,
    ) -> None:
        self.address = address
        self.persistent = persistent
        self.session_expiry_s = session_expiry_s
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id or f"probe-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )
        if address.username is not None:
            self.client.username_pw_set(address.username, address.password)
        if address.tls is not None:
            # the same settings as broker_bridge.session.connect_async
            self.client.tls_set(
                ca_certs=str(address.tls.ca_file),
                certfile=str(address.tls.cert_file) if address.tls.cert_file else None,
                keyfile=str(address.tls.key_file) if address.tls.key_file else None,
                cert_reqs=ssl.CERT_REQUIRED,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        self.connacks: queue.Queue[ReasonCode] = queue.Queue()
        self.session_present: bool | None = None
        self.disconnects: queue.Queue[ReasonCode] = queue.Queue()
        self.subacks: queue.Queue[list[ReasonCode]] = queue.Queue()
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self._pubacks: dict[int, ReasonCode] = {}
        self._cond = threading.Condition()
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda c, u, f, rc, p: self.disconnects.put(rc)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self.subacks.put(rcs)
        self.client.on_message = lambda c, u, m: self.messages.put(m)
        self.client.on_publish = self._on_publish

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        self.session_present = flags.session_present
        self.connacks.put(reason_code)

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self._cond:
            self._pubacks[mid] = reason_code
            self._cond.notify_all()

    def connect(self, timeout: float = 5.0) -> ReasonCode:
        """The CONNACK's reason code.  TLS failures raise from paho's connect()."""
        properties = None
        if self.persistent:
            properties = connect_properties(*(() if self.session_expiry_s is None else (self.session_expiry_s,)))
        self.client.connect(
            self.address.host,
            self.address.port,
            keepalive=30,
            clean_start=not self.persistent,
            properties=properties,
        )
        self.client.loop_start()
        return self.connacks.get(timeout=timeout)

    def publish(self, topic: str, payload: bytes, timeout: float = 5.0, retain: bool = False) -> ReasonCode:
        """Publish at QoS 1 and return the PUBACK's reason code."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        with self._cond:
            assert self._cond.wait_for(lambda: info.mid in self._pubacks, timeout), f"no PUBACK for {topic}"
            return self._pubacks.pop(info.mid)

    def subscribe(self, topic_filter: str, timeout: float = 5.0) -> list[ReasonCode]:
        self.client.subscribe(topic_filter, qos=1)
        return self.subacks.get(timeout=timeout)

    def unsubscribe(self, topic_filter: str) -> None:
        self.client.unsubscribe(topic_filter)

    def close(self) -> None:
        disconnect_and_stop(self.client)


def drain(q: queue.Queue) -> list:
    items = []
    while True:
        try:
            items.append(q.get_nowait())
        except queue.Empty:
            return items


# -- MQTT v5 by hand ----------------------------------------------------------------------------


def _string(data: bytes | str) -> bytes:
    data = data.encode() if isinstance(data, str) else data
    return struct.pack("!H", len(data)) + data


class RawClient:
    """One MQTT v5 connection written byte by byte (plain or TLS, the broker's certificate verified)."""

    def __init__(self, address: BrokerAddress, timeout: float = 10.0) -> None:
        self.address = address
        sock = socket.create_connection((address.host, address.port), timeout=timeout)
        if address.tls is not None:
            context = ssl.create_default_context(cafile=str(address.tls.ca_file))
            if address.tls.cert_file is not None:
                context.load_cert_chain(str(address.tls.cert_file), str(address.tls.key_file))
            sock = context.wrap_socket(sock, server_hostname=address.host)
        sock.settimeout(timeout)
        self.sock = sock
        self._next_id = 0

    def connect(
        self,
        client_id: str | None = None,
        *,
        will: tuple[str, bytes, bool] | None = None,
        username: str | None = None,
        password: str | None = None,
    ) -> int:
        """Send CONNECT (clean start, no session kept); return the CONNACK's reason code.

        ``will`` is (topic, payload, retain), at QoS 1. User name and password default to the address's.
        """
        username = self.address.username if username is None else username
        password = self.address.password if password is None else password
        flags = 0x02  # clean start
        payload = _string(client_id or f"probe-{uuid.uuid4().hex[:8]}")
        if will is not None:
            topic, message, retain = will
            flags |= 0x04 | (1 << 3) | (0x20 if retain else 0)
            payload += mqtt_varint(0) + _string(topic) + _string(message)
        if username is not None:
            flags |= 0x80
            payload += _string(username)
        if password is not None:
            flags |= 0x40
            payload += _string(password)
        variable = _string("MQTT") + bytes([5, flags]) + struct.pack("!H", 30) + mqtt_varint(0)
        self._send(0x10, variable + payload)
        kind, body = self.read_packet()
        if kind != 0x20 or len(body) < 2:
            raise ConnectionError(f"expected CONNACK, got packet type {kind:#x}")
        return body[1]

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> tuple[str, int | None]:
        """Publish at QoS 1; ("puback", code), ("disconnect", code) or ("closed", None)."""
        self._next_id = self._next_id % 65535 + 1
        body = _string(topic) + struct.pack("!H", self._next_id) + mqtt_varint(0) + payload
        try:
            self._send(0x32 | (0x01 if retain else 0), body)
        except OSError:
            return self.answer()
        return self.answer()

    def send_oversized_header(self, topic: str, remaining_length: int) -> tuple[str, int | None]:
        """Announce a PUBLISH of ``remaining_length`` bytes and send only its first bytes: a broker with
        ``max_packet_size`` refuses it from the fixed header and answers DISCONNECT 0x95."""
        self._next_id = self._next_id % 65535 + 1
        start = _string(topic) + struct.pack("!H", self._next_id) + mqtt_varint(0) + b"x" * 1024
        try:
            self.sock.sendall(bytes([0x32]) + mqtt_varint(remaining_length) + start)
        except OSError:
            return self.answer()
        return self.answer()

    def answer(self) -> tuple[str, int | None]:
        """The broker's next PUBACK or DISCONNECT (PUBLISHes and others skipped), or the connection closing."""
        while True:
            try:
                kind, body = self.read_packet()
            except (OSError, ConnectionError):
                return ("closed", None)
            if kind == 0x40:
                return ("puback", body[2] if len(body) > 2 else 0)
            if kind == 0xE0:
                return ("disconnect", body[0] if body else 0)

    def read_packet(self) -> tuple[int, bytes]:
        head = self._read(1)[0]
        length, shift = 0, 0
        while True:
            byte = self._read(1)[0]
            length += (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        return head & 0xF0, self._read(length)

    def disconnect(self) -> None:
        """A clean DISCONNECT (no will is published)."""
        try:
            self.sock.sendall(b"\xe0\x00")
        except OSError:
            pass
        self.drop()

    def drop(self) -> None:
        """Close the socket without DISCONNECT: the broker publishes the will, as for a dead station."""
        try:
            self.sock.close()
        except OSError:
            pass

    def _send(self, head: int, body: bytes) -> None:
        self.sock.sendall(bytes([head]) + mqtt_varint(len(body)) + body)

    def _read(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("the broker closed the connection")
            data += chunk
        return data
