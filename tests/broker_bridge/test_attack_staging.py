"""``bench/attack.py staging`` run as an operator runs it, against a deployment set up as an operator sets it
up: the generated TLS config (``generate_broker_config``, the quantrac_acl plugin), the real
``quantrac collector run`` process over TLS with its collector user, the session's QuestDB, and a
legitimate station sending meanwhile. With one station's password file and key only it must PASS every
attack; against a config stripped of the plugin and of ``message_size_limit`` the attacks those guard
must FAIL and the exit code be 1."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from broker_bridge.envelope import BatchBody, Reading, seal
from broker_bridge.probe import Probe
from broker_bridge.topics import data_topic
from collector.registry import add_station
from supervisor import free_port
from tests.broker_bridge.test_broker_security import SecuredBroker, make_secured  # noqa: F401  (fixture)
from tests.collector.test_collector_hardening import collector_process, keyed_stations
from tests.conftest import record_startup

ATTACK = Path(__file__).resolve().parents[2] / "bench" / "attack.py"


def run_attack(broker: SecuredBroker, station: str, key: Path, *extra: str) -> subprocess.CompletedProcess:
    argv = [
        sys.executable, str(ATTACK), "staging", "--broker", f"127.0.0.1:{broker.tls_port}",
        "--tls-ca", str(broker.pki.ca_cert), "--station", station,
        "--broker-password-file", str(broker.config.credential_file(station)), "--station-key", str(key),
        "--listen-s", "2", *extra,
    ]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, timeout=240)


class Sender(threading.Thread):
    """A legitimate station sending a signed batch every 0.3 s (the traffic an attacker must not see)."""

    def __init__(self, broker: SecuredBroker, station: str, key) -> None:
        super().__init__(daemon=True)
        self.probe = Probe(broker.address(station, tls=True))
        self.station, self.key = station, key
        self.stop = threading.Event()

    def run(self) -> None:
        assert not self.probe.connect(timeout=10).is_failure
        seq = 0
        while not self.stop.wait(0.3):
            seq += 1
            body = BatchBody(self.station, seq, time.time_ns(), (Reading(time.time_ns(), "d", "SO2", 1.0, "ug/m3",
                             "00", ""),))  # fmt: skip
            self.probe.client.publish(data_topic(self.station), seal(body, self.key.key_id, self.key.private_key), 1)

    def close(self) -> None:
        self.stop.set()
        self.join(timeout=5)
        self.probe.close()


@pytest.mark.slow  # a collector process, a 2 s listen, a 3 s session hold and the rejects' arrival (~20 s)
def test_the_attack_table_passes_against_a_deployment_made_as_an_operator_makes_it(
    tmp_path: Path, make_secured, warehouse
) -> None:
    (attacker, other), keys = keyed_stations(tmp_path, "ATK", "LEGIT")
    registry = tmp_path / "reg" / "registry.yaml"
    registry.parent.mkdir()
    for station in (attacker, other):
        add_station(registry, station, keys[station].public_key)
    broker = make_secured(stations=(attacker, other), tls=True)
    collector = collector_process(broker, registry, warehouse, tmp_path / "collector.log", free_port())
    sender = Sender(broker, other, keys[other])
    sender.start()
    try:
        done = run_attack(
            broker, attacker, tmp_path / "keys" / f"{attacker}.key", "--other-station", other,
            "--questdb-pg", f"127.0.0.1:{warehouse.pg_port}", "--collector-client-id", "c-reg", "--flood", "60",
        )  # fmt: skip
    finally:
        sender.close()
    assert collector.running, "the collector survived the attacks"
    collector.stop(timeout=20)
    lines = [line for line in done.stdout.splitlines() if line.split(" ", 1)[0] in ("PASS", "FAIL", "UNOBSERVED")]
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(lines) >= 25, done.stdout
    assert all(line.startswith("PASS ") for line in lines), "\n".join(line for line in lines if "PASS" not in line[:4])
    attacks = {line.split()[1].rstrip(":") for line in lines}
    expected = {
        "wrong_password", "borrowed_password", "tls_other_ca", "share_collectors", "read_other_stations",
        "retained_data", "status_unsigned", "status_forged_signature", "will_unsigned", "data_nul_in_device",
        "data_repeated_key", "payload_over_1MiB", "packet_over_max_packet_size", "collector_session", "flood",
    }  # fmt: skip
    assert expected <= attacks, sorted(expected - attacks)
    assert "60 of 60 rejected (0 twice)" in done.stdout
    assert "quantrac-attack-" in done.stdout and "SELECT ts, reason, detail" in done.stdout  # how to find them


def test_the_attack_table_fails_against_a_config_without_the_plugin_and_the_size_limit(tmp_path: Path) -> None:
    """An operator who dropped the plugin and message_size_limit from mosquitto.conf: exit 1, the attacks
    those lines guard FAIL, the rest still PASS (no collector and no QuestDB here: nothing judged there)."""
    (attacker,), keys = keyed_stations(tmp_path, "ATKF")
    broker = SecuredBroker(tmp_path, [attacker, "HN_AIR_001"], tls=True, require_certificate=False)
    conf = broker.config.conf_file
    kept = [line for line in conf.read_text().splitlines() if not line.startswith(("plugin", "message_size_limit"))]
    assert len(kept) < len(conf.read_text().splitlines())
    conf.write_text("\n".join(kept) + "\n")
    broker.server.start()
    record_startup("Mosquitto (generated config, plugin and size limit removed)", broker.server.started_in_s)
    try:
        done = run_attack(broker, attacker, tmp_path / "keys" / f"{attacker}.key", "--flood", "0", "--json")
    finally:
        broker.server.stop()
    assert done.returncode == 1, done.stdout + done.stderr
    verdicts = {r["attack"]: r["verdict"] for r in json.loads(done.stdout)["results"]}
    failed = {name for name, verdict in verdicts.items() if verdict == "FAIL"}
    assert failed == {"share_collectors", "share_quantrac-attack", "retained_data", "payload_over_1MiB"}, verdicts
    for name in ("wrong_password", "borrowed_password", "tls_other_ca", "packet_over_max_packet_size",
                 "publish quantrac/v1/QUANTRAC_ATTACK_OTHER/data", "collector_session"):  # fmt: skip
        assert verdicts[name] == "PASS", (name, verdicts)
