"""An attacker with one station's broker access floods the collector with garbage: every payload ends as
exactly one reject, the collector's memory stays flat, and a legitimate station's data keep flowing.

    .venv/bin/python bench/attack.py                      # 100,000 payloads (issue 11)
    .venv/bin/python bench/attack.py --payloads 20000     # a quicker look

Real QuestDB, Mosquitto and `quantrac collector run` (a process). The attacker publishes on its own
station's data topic, at QoS 1, as fast as the broker takes it, payloads of seven kinds, each unique
(a counter inside), so that "one reject each" is checkable by their SHA-256:

* random bytes; truncated valid envelopes; valid envelopes with one bit flipped (bad signature);
  envelopes signed by a key nobody registered; msgpack of the wrong shape; a valid signature over a
  body that breaks the contract (status 07); and, one in a thousand, 900 KB of garbage (the broker's
  message_size_limit is 1 MiB: larger is refused there, never reaching the collector).

Meanwhile a legitimate station sends a signed batch every 0.5 s. Printed: payloads sent, rejects
stored and distinct, the rejects by reason, the collector's resident memory (from /proc) at each
quarter of the attack and its maximum, the legitimate readings stored during the attack and their
worst delay (received_at - ts), and whether the collector process is still the one that started.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import msgpack  # noqa: E402
import paho.mqtt.client as mqtt  # noqa: E402
import psycopg  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

from broker_bridge.envelope import BatchBody, Reading, seal  # noqa: E402
from broker_bridge.keys import key_id, write_new_key  # noqa: E402
from broker_bridge.mosquitto_server import MosquittoServer  # noqa: E402
from broker_bridge.topics import data_topic  # noqa: E402
from cli.processes import collector_process  # noqa: E402
from collector.registry import add_station  # noqa: E402
from store.questdb_server import QuestDBServer  # noqa: E402
from store.schema import ensure_schema  # noqa: E402
from supervisor.process import wait_until  # noqa: E402

ATTACKER, LEGIT = "ATTACK_B", "LEGIT_A"
KINDS = ("random", "truncated", "bit_flip", "unknown_key", "wrong_shape", "contract", "huge")


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def query(conninfo: str, text: str, params=None) -> list[tuple]:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        return conn.execute(text, params).fetchall()


class Payloads:
    """Unique garbage of every kind, cheap enough to make 100,000 in seconds."""

    def __init__(self, attacker_key, rng: random.Random) -> None:
        self.key = attacker_key
        self.stranger = Ed25519PrivateKey.generate()
        self.rng = rng

    def body(self, n: int, status: str = "00") -> BatchBody:
        now = time.time_ns()
        return BatchBody(ATTACKER, n + 1, now, (Reading(now - n, "d", "SO2", float(n), "ug/m3", status, ""),))

    def make(self, n: int) -> tuple[str, bytes]:
        kind = "huge" if n % 1000 == 999 else KINDS[n % (len(KINDS) - 1)]
        tag = n.to_bytes(8, "big")
        if kind == "random":
            return kind, tag + self.rng.randbytes(self.rng.randrange(1, 400))
        if kind == "huge":
            return kind, tag + os.urandom(900 * 1024)
        if kind == "wrong_shape":
            return kind, msgpack.packb({"v": 1, "n": n, "body": [n, "x"] * self.rng.randrange(1, 5)})
        if kind == "unknown_key":
            return kind, seal(self.body(n), key_id(self.stranger.public_key()), self.stranger)
        if kind == "contract":
            return kind, seal(self.body(n, status="07"), self.key.key_id, self.key.private_key)
        good = bytearray(seal(self.body(n), self.key.key_id, self.key.private_key))
        if kind == "truncated":
            return kind, bytes(good[: self.rng.randrange(len(good) - 60, len(good) - 1)])  # cut in the signature
        good[self.rng.randrange(len(good) - 70, len(good))] ^= 1 << self.rng.randrange(8)  # in the signature
        return kind, bytes(good)


def publish_all(port: int, client_id: str, items: list[bytes], topic: str) -> float:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    t0 = time.monotonic()
    try:
        for start in range(0, len(items), 5000):  # in steps, so paho's own queue stays small
            infos = [client.publish(topic, payload, qos=1) for payload in items[start : start + 5000]]
            for info in infos:
                info.wait_for_publish(timeout=120)
                if not info.is_published():
                    raise RuntimeError(f"the broker did not acknowledge publish {info.mid}: {info.rc}")
    finally:
        client.disconnect()
        client.loop_stop()
    return time.monotonic() - t0


class Legitimate(threading.Thread):
    """A station that keeps sending a signed batch every ``interval`` seconds."""

    def __init__(self, port: int, key, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.port, self.key, self.interval = port, key, interval
        self.stop = threading.Event()
        self.sent = 0

    def run(self) -> None:
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"legit-{uuid.uuid4().hex[:6]}",
                             protocol=mqtt.MQTTv5)  # fmt: skip
        client.connect("127.0.0.1", self.port)
        client.loop_start()
        try:
            while not self.stop.is_set():
                self.sent += 1
                now = time.time_ns()
                body = BatchBody(LEGIT, self.sent, now, (Reading(now, "d", "PM10", 42.0, "ug/m3", "00", ""),))
                client.publish(data_topic(LEGIT), seal(body, self.key.key_id, self.key.private_key), qos=1)
                self.stop.wait(self.interval)
        finally:
            client.disconnect()
            client.loop_stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--payloads", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs, QuestDB)")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="quantrac-attack-"))
    qdb, broker = (
        QuestDBServer(tmp / "questdb"),
        MosquittoServer(tmp / "mosquitto", extra_conf="message_size_limit 1048576"),
    )
    collector = None
    try:
        qdb.start()
        broker.start()
        pg = qdb.endpoints.pg_conninfo
        ensure_schema(pg)
        registry = tmp / "registry.yaml"
        attacker_key, legit_key = write_new_key(tmp / "attacker.key"), write_new_key(tmp / "legit.key")
        add_station(registry, ATTACKER, attacker_key.public_key)
        add_station(registry, LEGIT, legit_key.public_key)
        log = tmp / "collector.log"
        collector = collector_process(
            registry, f"127.0.0.1:{broker.port}", f"127.0.0.1:{qdb.endpoints.http_port}",
            f"127.0.0.1:{qdb.endpoints.pg_port}", log, client_id="attack-collector",
        ).start()  # fmt: skip
        wait_until(lambda: '"event": "mqtt_connected"' in log.read_text(), timeout=60, what="collector connected",
                   process=collector)  # fmt: skip
        pid = collector.pid
        t_make = time.monotonic()
        maker = Payloads(attacker_key, rng)
        made = [maker.make(n) for n in range(args.payloads)]
        payloads = [p for _, p in made]
        digests = {hashlib.sha256(p).hexdigest() for p in payloads}
        assert len(digests) == len(payloads), "the payloads must be unique"
        print(f"attack: {len(payloads):,} payloads made in {time.monotonic() - t_make:.1f} s; "
              f"collector RSS at rest {rss_mb(pid):.0f} MB", flush=True)  # fmt: skip

        legit = Legitimate(broker.port, legit_key)
        legit.start()
        samples: list[tuple[float, float]] = []
        sampling = threading.Event()

        def sample() -> None:
            while not sampling.is_set():
                samples.append((time.monotonic(), rss_mb(pid)))
                sampling.wait(1.0)

        sampler = threading.Thread(target=sample, daemon=True)
        t0 = time.monotonic()
        sampler.start()
        pub_s = publish_all(broker.port, f"attacker-{uuid.uuid4().hex[:6]}", payloads, data_topic(ATTACKER))
        print(f"  published in {pub_s:.1f} s ({len(payloads) / pub_s:,.0f}/s)", flush=True)
        count_sql = "SELECT count(), count_distinct(payload_sha256) FROM rejects WHERE claimed_station = %s"

        def all_rejected():
            total, distinct = query(pg, count_sql, (ATTACKER,))[0]
            return (total, distinct) if distinct >= len(payloads) else None

        total, distinct = wait_until(all_rejected, timeout=1800, interval=2.0, what="every payload rejected",
                                     process=collector)  # fmt: skip
        took = time.monotonic() - t0
        legit.stop.set()
        legit.join()
        sampling.set()
        sampler.join()
        time.sleep(3)
        stored = query(pg, "SELECT count(), max(received_at - ts) FROM readings WHERE station = %s", (LEGIT,))[0]
        reasons = query(pg, "SELECT reason, count() FROM rejects WHERE claimed_station = %s GROUP BY reason "
                            "ORDER BY 2 DESC", (ATTACKER,))  # fmt: skip
        stored_digests = {d for (d,) in query(pg, "SELECT payload_sha256 FROM rejects WHERE claimed_station = %s",
                                               (ATTACKER,))}  # fmt: skip
        quarters = [samples[min(len(samples) - 1, round(q * (len(samples) - 1)))][1] for q in (0, 0.25, 0.5, 0.75, 1)]
        same = collector.running and collector.pid == pid
        print(
            f"  {total:,} reject rows, {distinct:,} distinct payloads, every payload sent among them: "
            f"{digests <= stored_digests}; all stored in {took:.1f} s ({len(payloads) / took:,.0f}/s)\n"
            f"  rejects by reason: {reasons}\n"
            f"  collector RSS (MB) at 0/25/50/75/100 % of the attack: {' / '.join(f'{m:.0f}' for m in quarters)};"
            f" max {max(m for _, m in samples):.0f}\n"
            f"  legitimate station: {legit.sent} batches sent, {stored[0]} readings stored, worst delay "
            f"{(stored[1] or 0) / 1e9:.2f} s\n"
            f"  collector still the process that started: {same}"
        )
        ok = total == distinct == len(payloads) and digests <= stored_digests and same and stored[0] == legit.sent
        print(f"verdict: {'PASS' if ok else 'FAIL'}")
        return 0 if ok else 1
    finally:
        if collector is not None:
            collector.stop(timeout=30)
        broker.stop()
        qdb.stop()
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
