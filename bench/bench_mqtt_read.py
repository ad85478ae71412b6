"""paho's reading of a queued backlog, as it is (three or four socket reads a packet) and read ahead.

    PYTHONPATH=$PWD .venv/bin/python bench/bench_mqtt_read.py [--messages 30000] [--rounds 5] [--busy-thread]

A real Mosquitto queues ``--messages`` QoS 1 messages of 200-400 bytes (one-poll batches' size) in a
persistent session; a subscriber then drains them, once with paho's own ``mqtt.Client`` and once with
``broker_bridge.read_ahead.ReadAheadClient`` (what ``session.new_client`` makes), in alternating order
round by round. Printed: the median drain rate (messages/s), the subscriber's CPU per message, and the
socket reads per message (``recv`` calls counted on the real socket). ``--busy-thread`` runs a second
Python thread that computes all the time, as the collector's flush and warehouse threads do: every read
that gives up the interpreter lock then waits for it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import paho.mqtt.client as mqtt  # noqa: E402

from broker_bridge import session  # noqa: E402
from broker_bridge.mosquitto_server import MosquittoServer  # noqa: E402
from broker_bridge.read_ahead import ReadAheadClient  # noqa: E402

TOPIC = "bench/read"


class CountingPaho(mqtt.Client):
    """paho's client, counting the system reads of its socket (the same count for both)."""

    reads = 0

    def _sock_recv(self, bufsize: int) -> bytes:
        sock = self._sock
        inner = getattr(sock, "_sock", None)
        if inner is None or not sock.buffered():
            CountingPaho.reads += 1
        return super()._sock_recv(bufsize)


class CountingReadAhead(ReadAheadClient, CountingPaho):
    pass


def client(kind: type, client_id: str) -> mqtt.Client:
    return kind(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)


def queue_backlog(port: int, client_id: str, messages: int) -> None:
    """Subscribe ``client_id`` persistently, leave, and publish the backlog into its session."""
    sub = client(mqtt.Client, client_id)
    done = threading.Event()
    sub.on_subscribe = lambda *_: done.set()
    sub.connect("127.0.0.1", port, clean_start=False, properties=session.connect_properties())
    sub.subscribe(TOPIC, qos=1)
    sub.loop_start()
    assert done.wait(10)
    sub.disconnect()
    sub.loop_stop()
    pub = client(mqtt.Client, f"pub-{uuid.uuid4().hex[:6]}")
    pub.max_inflight_messages_set(1000)
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    infos = [pub.publish(TOPIC, b"x" * (200 + n % 200), qos=1) for n in range(messages)]
    for info in infos:
        info.wait_for_publish(60)
    pub.disconnect()
    pub.loop_stop()


def drain(port: int, kind: type, client_id: str, messages: int) -> tuple[float, float, float]:
    """(messages/s, CPU us per message, socket reads per message) for one drain of the backlog."""
    got = 0
    all_in = threading.Event()

    def on_message(c, userdata, message) -> None:
        nonlocal got
        got += 1
        if got == messages:
            all_in.set()

    CountingPaho.reads = 0
    sub = client(kind, client_id)
    sub.on_message = on_message
    cpu0, t0 = time.process_time(), time.perf_counter()
    sub.connect("127.0.0.1", port, clean_start=False, properties=session.connect_properties())
    sub.loop_start()
    assert all_in.wait(300), f"{got} of {messages} arrived"
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    sub.disconnect()
    sub.loop_stop()
    return messages / wall, cpu / messages * 1e6, CountingPaho.reads / messages


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=30_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--busy-thread", action="store_true", help="a second thread computing all the time")
    args = ap.parse_args()
    stop = threading.Event()
    if args.busy_thread:

        def busy() -> None:
            while not stop.is_set():
                sum(range(1000))

        threading.Thread(target=busy, daemon=True).start()
    kinds = {"paho": CountingPaho, "read-ahead": CountingReadAhead}
    results: dict[str, list[tuple[float, float, float]]] = {k: [] for k in kinds}
    with tempfile.TemporaryDirectory() as tmp:
        broker = MosquittoServer(Path(tmp))
        broker.start()
        try:
            for r in range(args.rounds):
                for name in list(kinds) if r % 2 == 0 else list(reversed(kinds)):
                    client_id = f"bench-read-{name}-{r}"
                    queue_backlog(broker.port, client_id, args.messages)
                    results[name].append(drain(broker.port, kinds[name], client_id, args.messages))
        finally:
            stop.set()
            broker.stop()
    print(f"{args.messages:,} queued messages, {args.rounds} rounds, busy thread: {args.busy_thread}")
    med = {name: [statistics.median(x[i] for x in rs) for i in range(3)] for name, rs in results.items()}
    for name, (rate, cpu, reads) in med.items():
        print(f"  {name:<10} {rate:>9,.0f} messages/s  {cpu:6.1f} us CPU/message  {reads:6.3f} socket reads/message")
    print(f"  ratio read-ahead / paho: {med['read-ahead'][0] / med['paho'][0]:.2f}x the rate (medians)")


if __name__ == "__main__":
    main()
