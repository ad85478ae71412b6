"""The read-ahead MQTT client (broker_bridge/read_ahead.py): paho's small reads served from one large one.

Against the real Mosquitto of the generated secure config, on its plain and its TLS listener: Debian's
``mosquitto_pub -l`` (a client nobody here wrote) publishes thousands of messages of every size, one
larger than the read-ahead buffer, and the quantrac client receives every one, whole and in order; on
the plain listener the socket really was read in chunks of many packets.
"""

from __future__ import annotations

import random
import socket
import subprocess
import threading

import pytest

from broker_bridge import session
from broker_bridge.read_ahead import READ_AHEAD_BYTES, ReadAheadClient, ReadAheadSocket
from broker_bridge.topics import data_topic
from tests.broker_bridge.test_broker_listeners import LISTENERS, mosquitto_tool, tool_args
from tests.broker_bridge.test_broker_security import (  # noqa: F401  (fixtures)
    COLLECTOR,
    STATION_A,
    make_secured,
)


class CountingSocket(ReadAheadSocket):
    """The real read-ahead socket, counting the system reads it makes."""

    __slots__ = ("system_reads",)

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock)
        self.system_reads = 0

    def recv(self, bufsize: int) -> bytes:
        if not self.buffered():
            self.system_reads += 1
        return super().recv(bufsize)


class CountingClient(ReadAheadClient):
    def _create_socket(self):  # type: ignore[override]
        sock = super()._create_socket()
        return CountingSocket(sock._sock) if isinstance(sock, ReadAheadSocket) else sock


def test_small_reads_come_from_one_system_read() -> None:
    left, right = socket.socketpair()
    try:
        right.setblocking(False)
        reader = ReadAheadSocket(right)
        left.sendall(b"\x30\x05hello" + b"\x30\x02ok")
        assert reader.recv(1) == b"\x30"
        assert reader.pending() == 10  # the rest is buffered: paho reads on without select()
        assert (reader.recv(1), reader.recv(5), reader.recv(1), reader.recv(1), reader.recv(10)) == (
            b"\x05", b"hello", b"\x30", b"\x02", b"ok",
        )  # fmt: skip
        assert reader.pending() == 0
        with pytest.raises(BlockingIOError):  # nothing buffered, nothing on the socket: as paho expects
            reader.recv(1)
        left.sendall(b"x" * 10)
        assert reader.recv(100) == b"x" * 10  # a read larger than what arrived: straight through
        left.close()
        assert reader.recv(1) == b""  # the peer closed: paho's connection-lost case
    finally:
        left.close()
        right.close()


@pytest.mark.parametrize("listener", LISTENERS)
def test_every_message_arrives_whole_and_in_order(make_secured, listener: str) -> None:  # noqa: F811
    tls = listener == "tls"
    broker = make_secured(tls=True)
    rng = random.Random(11)
    sizes = [rng.choice((1, 40, 200, 900, 4000, 30_000)) for _ in range(3000)]
    sizes[1500] = READ_AHEAD_BYTES + 70_000  # one message spans several read-ahead buffers
    lines = [(f"{n:05d}:" + "m" * size) for n, size in enumerate(sizes)]
    received: list[bytes] = []
    all_in = threading.Event()

    def on_message(client, userdata, message) -> None:
        received.append(bytes(message.payload))
        if len(received) == len(lines):
            all_in.set()

    subscribed = threading.Event()
    first = session.new_client(f"read-ahead-{listener}")
    first.on_connect = lambda c, *_: c.subscribe(data_topic(STATION_A), qos=1)
    first.on_subscribe = lambda *_: subscribed.set()
    session.connect_async(first, broker.address(COLLECTOR, tls=tls), session.connect_properties())
    first.loop_start()
    assert subscribed.wait(10), "the collector's client did not subscribe"
    session.disconnect_and_stop(first)
    # The messages queue in the persistent session while nobody reads: the collector's backlog.
    subprocess.run(
        [mosquitto_tool("mosquitto_pub"), *tool_args(broker, STATION_A, tls), "-q", "1", "-l",
         "-t", data_topic(STATION_A)],
        input="\n".join(lines).encode() + b"\n", check=True, timeout=120,
    )  # fmt: skip
    client = CountingClient(
        session.mqtt.CallbackAPIVersion.VERSION2, client_id=f"read-ahead-{listener}", protocol=session.mqtt.MQTTv5
    )
    client.on_message = on_message
    session.connect_async(client, broker.address(COLLECTOR, tls=tls), session.connect_properties())
    client.loop_start()
    try:
        assert all_in.wait(60), f"{len(received)} of {len(lines)} messages arrived"
        assert received == [line.encode() for line in lines]
        assert isinstance(client.socket(), CountingSocket)
        if not tls:  # paho alone makes three or four reads per message; here a read brings many
            assert client.socket().system_reads < len(lines) / 2, client.socket().system_reads
        # Over TLS a read returns one TLS record, and Mosquitto writes a record per packet: no gain, no harm.
    finally:
        session.disconnect_and_stop(client)
