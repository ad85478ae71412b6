"""The attack table against the collector and the broker, two ways.

    .venv/bin/python bench/attack.py                      # flood: 100,000 payloads (issue 11), its own servers
    .venv/bin/python bench/attack.py flood --payloads 20000
    .venv/bin/python bench/attack.py staging --broker mqtt.staging.example.vn:8883 --tls-ca pki/ca.crt \
        --station QUANTRAC_ATTACK --broker-password-file QUANTRAC_ATTACK.password \
        --station-key keys/QUANTRAC_ATTACK.key --other-station HN_AIR_001 --questdb-pg 10.0.0.5:8812

``staging`` (bench/attack_staging.py) runs, with ONE station's broker password and signing key, every
attack of docs/security.md that such a holder can try, against a deployment made by
``quantrac broker config``, and prints one line per attack: PASS, FAIL or UNOBSERVED, what was tried,
what was expected and what was observed; exit 1 if any FAIL. docs/security.md says what it leaves.

``flood`` (the default) starts its own QuestDB, Mosquitto from the generated configuration (TLS
listener, ACL, quantrac_acl plugin, size limits: as a staging deployment) and ``quantrac collector
run`` (a process) over TLS with its own collector user; the attacker publishes, with one station's
credentials over TLS, on its own station's data topic, at QoS 1, as fast as the broker takes it,
payloads of seven kinds, each unique (a counter inside), so that "one reject each" is checkable by
their SHA-256:

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
import json
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg  # noqa: E402
from attack_staging import DEFAULT_COLLECTOR_CLIENT_ID, Payloads, StagingRun, format_table, publish_all  # noqa: E402

from broker_bridge.broker_config import TlsListener, create_pki, generate_broker_config  # noqa: E402
from broker_bridge.envelope import BatchBody, Reading, seal  # noqa: E402
from broker_bridge.keys import KeyFileError, load_signing_key, write_new_key  # noqa: E402
from broker_bridge.mosquitto_server import GeneratedConfigServer  # noqa: E402
from broker_bridge.probe import Probe  # noqa: E402
from broker_bridge.session import BrokerAddress  # noqa: E402
from broker_bridge.topics import data_topic  # noqa: E402
from cli.logging_setup import configure_logging  # noqa: E402
from cli.processes import quantrac  # noqa: E402
from collector.registry import add_station  # noqa: E402
from store.questdb_server import QuestDBEndpoints, QuestDBServer  # noqa: E402
from store.schema import ensure_schema  # noqa: E402
from supervisor.process import ManagedProcess, free_port, wait_until  # noqa: E402

ATTACKER, LEGIT = "ATTACK_B", "LEGIT_A"
COLLECTOR_USER = "quantrac-collector"


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def query(conninfo: str, text: str, params=None) -> list[tuple]:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        return conn.execute(text, params).fetchall()


class Legitimate(threading.Thread):
    """A station that keeps sending a signed batch every ``interval`` seconds."""

    def __init__(self, address: BrokerAddress, key, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.address, self.key, self.interval = address, key, interval
        self.stop = threading.Event()
        self.sent = 0

    def run(self) -> None:
        probe = Probe(self.address)
        probe.connect(timeout=15)
        try:
            while not self.stop.is_set():
                self.sent += 1
                now = time.time_ns()
                body = BatchBody(LEGIT, self.sent, now, (Reading(now, "d", "PM10", 42.0, "ug/m3", "00", ""),))
                probe.client.publish(data_topic(LEGIT), seal(body, self.key.key_id, self.key.private_key), qos=1)
                self.stop.wait(self.interval)
        finally:
            probe.close()


class Deployment:
    """QuestDB, Mosquitto from `quantrac broker config`'s files (TLS) and `quantrac collector run` over TLS."""

    def __init__(self, tmp: Path, stations: list[str]) -> None:
        self.tmp = tmp
        self.qdb = QuestDBServer(tmp / "questdb")
        self.pki = create_pki(tmp / "tls")
        self.tls_port, plain_port = free_port(), free_port()
        # as generated by default: a plain loopback listener for local tools (the start-up check), TLS for the rest
        self.config = generate_broker_config(
            tmp / "broker-config", stations, collector_users=(COLLECTOR_USER,),
            plain_listener=("127.0.0.1", plain_port),
            tls=TlsListener(self.pki.ca_cert, self.pki.server_cert, self.pki.server_key, port=self.tls_port,
                            host="127.0.0.1"),
            data_dir=tmp / "broker" / "data", log_file=tmp / "broker" / "mosquitto.log", run_as=None,
        )  # fmt: skip
        self.broker = GeneratedConfigServer(tmp / "broker", plain_port, self.config.conf_file)
        self.collector: ManagedProcess | None = None

    def address(self, user: str) -> BrokerAddress:
        base = BrokerAddress("127.0.0.1", self.tls_port).with_credentials(user, self.config.credential_file(user))
        return base.with_tls(self.pki.ca_cert)

    def start(self, registry: Path) -> None:
        self.qdb.start()
        self.broker.start()
        ensure_schema(self.qdb.endpoints.pg_conninfo)
        log = self.tmp / "collector.log"
        argv = quantrac(
            "collector", "run", "--registry", registry, "--broker", f"127.0.0.1:{self.tls_port}",
            "--tls-ca", self.pki.ca_cert, "--broker-user", COLLECTOR_USER,
            "--broker-password-file", self.config.credential_file(COLLECTOR_USER),
            "--questdb", f"127.0.0.1:{self.qdb.endpoints.http_port}",
            "--questdb-pg", f"127.0.0.1:{self.qdb.endpoints.pg_port}", "--client-id", "attack-collector",
        )  # fmt: skip
        self.collector = ManagedProcess(argv, log_path=log, name="collector").start()
        wait_until(lambda: '"event": "mqtt_connected"' in log.read_text(), timeout=60, what="collector connected",
                   process=self.collector)  # fmt: skip

    def stop(self) -> None:
        if self.collector is not None:
            self.collector.stop(timeout=30)
        self.broker.stop()
        self.qdb.stop()


def flood(args) -> int:
    import random

    configure_logging("warning")
    rng = random.Random(args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="quantrac-attack-"))
    deployment = Deployment(tmp, [ATTACKER, LEGIT])
    try:
        registry = tmp / "registry.yaml"
        attacker_key, legit_key = write_new_key(tmp / "attacker.key"), write_new_key(tmp / "legit.key")
        add_station(registry, ATTACKER, attacker_key.public_key)
        add_station(registry, LEGIT, legit_key.public_key)
        deployment.start(registry)
        pg = deployment.qdb.endpoints.pg_conninfo
        collector = deployment.collector
        pid = collector.pid
        t_make = time.monotonic()
        maker = Payloads(ATTACKER, attacker_key, rng)
        payloads = [p for _, p in (maker.make(n) for n in range(args.payloads))]
        digests = {hashlib.sha256(p).hexdigest() for p in payloads}
        assert len(digests) == len(payloads), "the payloads must be unique"
        print(f"attack: {len(payloads):,} payloads made in {time.monotonic() - t_make:.1f} s; over TLS "
              f"(generated config); collector RSS at rest {rss_mb(pid):.0f} MB", flush=True)  # fmt: skip

        legit = Legitimate(deployment.address(LEGIT), legit_key)
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
        pub_s = publish_all(deployment.address(ATTACKER), payloads, data_topic(ATTACKER))
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
        deployment.stop()
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def staging(args) -> int:
    configure_logging("warning")  # events to stderr: stdout is the report
    try:
        address = BrokerAddress.parse(args.broker).with_credentials(args.station, args.broker_password_file)
        address = address.with_tls(args.tls_ca, args.tls_cert, args.tls_key)
        key = load_signing_key(args.station_key)
    except (ValueError, KeyFileError) as exc:
        print(f"attack.py staging: {exc}", file=sys.stderr)
        return 2
    if address.tls is None:
        print("attack.py staging: no --tls-ca: the attacks run over a plain listener", file=sys.stderr)
    pg = None
    if args.questdb_pg:
        pg = QuestDBEndpoints.at(args.questdb_pg).pg_conninfo
        if args.questdb_user:
            password = Path(args.questdb_password_file).read_text().strip() if args.questdb_password_file else ""
            pg = pg.replace("user=admin password=quest", f"user={args.questdb_user} password={password}")
    run = StagingRun(
        address, key, other_station=args.other_station, pg_conninfo=pg, collector_client_id=args.collector_client_id,
        flood=args.flood, listen_s=args.listen_s, wait_s=args.wait_s, run_id=args.run_id,
    )  # fmt: skip
    run.run()
    if args.json:
        print(json.dumps(run.report(), indent=2))
    else:
        for line in format_table(run.results):
            print(line)
        counts = {v: sum(r.verdict == v for r in run.results) for v in ("PASS", "FAIL", "UNOBSERVED")}
        print(f"summary: {counts['PASS']} PASS, {counts['FAIL']} FAIL, {counts['UNOBSERVED']} UNOBSERVED")
        for line in run.cleanup_note():
            print(line)
    return 1 if run.failed() else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="mode")
    fl = sub.add_parser("flood", help="the 100,000-payload flood against servers of its own (the default)")
    st = sub.add_parser("staging", help="the attack table against a running deployment, with one station's access")
    for parser in (ap, fl):
        parser.add_argument("--payloads", type=int, default=100_000)
        parser.add_argument("--seed", type=int, default=11)
        parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, QuestDB)")
    st.add_argument("--broker", required=True, help="the stations' listener, HOST:PORT (TLS: 8883)")
    st.add_argument("--tls-ca", type=Path, help="CA of the broker's certificate (always verified)")
    st.add_argument("--tls-cert", type=Path, help="the station's client certificate (--require-certificate)")
    st.add_argument("--tls-key", type=Path)
    st.add_argument("--station", required=True, help="the one station whose credentials are used (no agent running)")
    st.add_argument("--broker-password-file", type=Path, required=True, help="its credentials/<station>.password")
    st.add_argument("--station-key", type=Path, required=True, help="its Ed25519 private key (signs the bad batches)")
    st.add_argument("--other-station", help="a real other station to pose as (default: a made-up id)")
    st.add_argument("--collector-client-id", default=DEFAULT_COLLECTOR_CLIENT_ID, help="the collector's --client-id")
    st.add_argument("--questdb-pg", help="QuestDB PostgreSQL wire HOST:PORT: check each reject and the flood's")
    st.add_argument("--questdb-user", help="a read-only QuestDB user (default admin)")
    st.add_argument("--questdb-password-file", type=Path)
    st.add_argument("--flood", type=int, default=200, help="garbage payloads in the bounded flood (0: none)")
    st.add_argument("--listen-s", type=float, default=5.0, help="how long to listen for other stations' messages")
    st.add_argument("--wait-s", type=float, default=60.0, help="how long to wait for the collector's rejects")
    st.add_argument("--run-id", help="names the marker quantrac-attack-<run id> (default: time + random)")
    st.add_argument("--json", action="store_true", help="print the report as JSON (with every payload's SHA-256)")
    args = ap.parse_args(argv)
    return staging(args) if args.mode == "staging" else flood(args)


if __name__ == "__main__":
    sys.exit(main())
