"""Issue 11, collector side, against the real Mosquitto over TLS (the generated config), the real
collector process and QuestDB: signed status, Retain Handling, and a collector that survives its
operators' broken files. What each test proves is listed in docs/security.md."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from broker_bridge.envelope import BatchBody, Envelope, Reading, seal
from broker_bridge.keys import SigningKey, write_new_key
from broker_bridge.station_messages import (
    Birth,
    OutboxStatus,
    StationState,
    Status,
    Will,
    seal_station_message,
)
from broker_bridge.topics import data_topic, status_topic
from cli.processes import quantrac
from collector.registry import add_station
from supervisor.process import ManagedProcess, free_port, wait_until
from tests.broker_bridge.test_broker_security import (  # noqa: F401  (fixtures)
    COLLECTOR,
    SecuredBroker,
    connected,
    make_secured,
    probes,
)
from tests.helpers import sql, unique_station, wait_for_count

PINNED = 2**63 - 2
SESSION = 1_000_001


def keyed_stations(tmp_path: Path, *prefixes: str) -> tuple[list[str], dict[str, SigningKey]]:
    ids = [unique_station(p) for p in prefixes]
    return ids, {s: write_new_key(tmp_path / "keys" / f"{s}.key") for s in ids}


def batch(station: str, key: SigningKey, seq: int, value: float = 20.0) -> bytes:
    ts = time.time_ns() - 10**9
    body = BatchBody(station, seq, time.time_ns(), (Reading(ts + seq, "aqms1", "SO2", value, "ug/m3", "00", ""),))
    return seal(body, key.key_id, key.private_key)


def signed(message, key: SigningKey) -> bytes:
    return seal_station_message(message, key.key_id, key.private_key)


def collector_process(broker: SecuredBroker, registry: Path, warehouse, log: Path, metrics_port: int, *extra):
    argv = quantrac(
        "collector", "run", "--registry", registry,
        "--broker", f"127.0.0.1:{broker.tls_port}", "--tls-ca", broker.pki.ca_cert,
        "--broker-user", COLLECTOR, "--broker-password-file", broker.config.credential_file(COLLECTOR),
        "--questdb", f"127.0.0.1:{warehouse.http_port}", "--questdb-pg", f"127.0.0.1:{warehouse.pg_port}",
        "--client-id", f"c-{registry.parent.name}", "--metrics-port", str(metrics_port), *extra,
    )  # fmt: skip
    process = ManagedProcess(argv, log_path=log, name="collector").start()
    wait_until(lambda: log.exists() and '"mqtt_connected"' in log.read_text(), timeout=30, what="collector connected",
               process=process)  # fmt: skip
    time.sleep(0.5)  # the SUBACK follows the CONNACK
    return process


def metrics(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


def events(log: Path, event: str) -> list[dict]:
    lines = [line for line in log.read_text().splitlines() if line.startswith("{") and f'"{event}"' in line]
    return [d for d in map(json.loads, lines) if d.get("event") == event]


def readings(warehouse, station: str) -> int:
    return sql(warehouse.pg_conninfo, "SELECT count() FROM readings WHERE station = %s", (station,))[0][0]


# -- 1: status, birth and will are signed; sessions grow only by what the station proves ----------------


@pytest.mark.slow  # a real collector process and the real CLI over TLS (~7 s)
def test_forged_and_malformed_status_become_rejects_and_quantrac_status_still_shows_every_station(
    tmp_path, make_secured, probes, warehouse
):
    (good, victim), keys = keyed_stations(tmp_path, "SIGOK", "SIGV")
    registry = tmp_path / "reg" / "registry.yaml"
    registry.parent.mkdir()
    for station in (good, victim):
        add_station(registry, station, keys[station].public_key)
    broker = make_secured(stations=(good, victim), tls=True)
    log = tmp_path / "collector.log"
    process = collector_process(broker, registry, warehouse, log, free_port())
    try:
        for station in (good, victim):
            client = connected(probes, broker.address(station, tls=True))
            assert (
                client.publish(
                    status_topic(station), signed(Birth(station, SESSION, time.time_ns()), keys[station])
                ).value
                == 0
            )
        # The attacker holds the victim's broker password, not its signing key.
        attacker = connected(probes, broker.address(victim, tls=True))
        stranger = write_new_key(tmp_path / "stranger.key")
        bad_outbox = b'{"state": "online", "station": "%s", "session": %d, "outbox": "full"}' % (
            victim.encode(),
            SESSION,
        )
        forged = {
            "unsigned_pinned_will": (Will(victim, PINNED).encode(), "undecodable"),
            "unsigned_string_outbox": (bad_outbox, "undecodable"),
            "stranger_signed_will": (
                seal_station_message(Will(victim, PINNED), keys[victim].key_id, stranger.private_key),
                "bad_signature",
            ),
            # The victim's own key (a stolen one, or a buggy tool): out of shape, or a session jump.
            "signed_string_outbox": (
                Envelope(keys[victim].key_id, bad_outbox, keys[victim].private_key.sign(bad_outbox)).encode(),
                "schema",
            ),
            "signed_pinned_will": (signed(Will(victim, PINNED), keys[victim]), "session_jump"),
            "signed_pinned_status": (
                signed(
                    Status(
                        victim,
                        PINNED,
                        None,
                        StationState(OutboxStatus(0, 0, 0, 0, 0, 0, 1 << 30, 0.0, 0.0, 0, 0, 0), None, {}, 0, None, 0),
                    ),
                    keys[victim],
                ),
                "session_jump",
            ),
        }
        for payload, _ in forged.values():
            assert attacker.publish(status_topic(victim), payload).value == 0  # the broker cannot tell
        wait_for_count(warehouse.pg_conninfo, "SELECT count() FROM rejects WHERE claimed_station = %s", len(forged),
                       params=(victim,))  # fmt: skip
        reasons = sql(
            warehouse.pg_conninfo, "SELECT reason, payload_b64 FROM rejects WHERE claimed_station = %s", (victim,)
        )
        assert sorted(r for r, _ in reasons) == sorted(reason for _, reason in forged.values())
        wait_for_count(
            warehouse.pg_conninfo, "SELECT count() FROM station_events WHERE station = %s", 1, params=(good,)
        )
        stored = sql(warehouse.pg_conninfo, "SELECT state, session FROM station_events WHERE station = %s", (victim,))
        assert stored == [("online", SESSION)], "only the victim's own, signed birth is a station event"
        # The real CLI: every station shown, the victim online at its real session, nobody crashed.
        shown = subprocess.run(
            quantrac("status", "--questdb-pg", f"127.0.0.1:{warehouse.pg_port}"),
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert shown.returncode == 0, shown.stderr
        rows = {line.split()[0]: line.split() for line in shown.stdout.splitlines()[1:]}
        assert rows[good][1:3] == ["online", str(SESSION)] and rows[victim][1:3] == ["online", str(SESSION)]
        assert int(rows[victim][-1]) == len(forged)  # the rejects column
        assert process.running
    finally:
        process.stop()


# -- 2: the collector never gets a retained message on a data topic -----------------------------------


def test_the_collector_subscribes_to_data_with_retain_handling_do_not_send(
    tmp_path, make_secured, probes, warehouse, make_collector
):
    """A broker without the quantrac_acl plugin (an older or hand-made one) keeps a retained batch:
    the collector must still never receive it, while the retained birth tells it the station's state."""
    (station,), keys = keyed_stations(tmp_path, "RETAIN")
    registry = tmp_path / "registry.yaml"
    add_station(registry, station, keys[station].public_key)
    broker = SecuredBroker(tmp_path, [station], tls=True, require_certificate=False)
    conf = broker.config.conf_file
    conf.write_text("".join(line for line in conf.read_text().splitlines(True) if not line.startswith("plugin")))
    broker.server.start()
    try:
        agent = connected(probes, broker.address(station, tls=True))
        for topic, payload in (
            (data_topic(station), batch(station, keys[station], 1)),
            (status_topic(station), signed(Birth(station, SESSION, None), keys[station])),
        ):
            info = agent.client.publish(topic, payload, qos=1, retain=True)
            info.wait_for_publish(timeout=5)
        watcher = connected(probes, broker.address(COLLECTOR, tls=True))
        watcher.subscribe(data_topic(station))
        assert watcher.messages.get(timeout=5).retain, "the broker holds a retained batch (no plugin)"
        watcher.close()  # its client id is the collector's user name (use_username_as_clientid)

        collector = make_collector(0, registry, f"c-{station}", broker=broker.address(COLLECTOR, tls=True),
                                   flush_interval_s=0.2)  # fmt: skip
        wait_for_count(warehouse.pg_conninfo, "SELECT count() FROM station_events WHERE station = %s", 1,
                       params=(station,))  # fmt: skip
        time.sleep(1.0)
        assert collector.stats.messages == 1, "only the retained birth: the retained batch was not sent"
        assert readings(warehouse, station) == 0
        assert sql(warehouse.pg_conninfo, "SELECT count() FROM rejects WHERE claimed_station = %s", (station,)) == [
            (0,)
        ]
        assert agent.publish(data_topic(station), batch(station, keys[station], 2)).value == 0  # live data flows
        wait_for_count(warehouse.pg_conninfo, "SELECT count() FROM readings WHERE station = %s", 1, params=(station,))
    finally:
        broker.server.stop()


# -- 3: an operator's broken registry or thresholds file never stops the collector ---------------------


@pytest.mark.slow  # a real collector through two broken and mended files (~16 s)
def test_broken_registry_and_thresholds_keep_the_last_good_version_and_the_mended_file_applies(
    tmp_path, make_secured, probes, warehouse
):
    (first, added), keys = keyed_stations(tmp_path, "RELOAD", "ADDED")
    registry = tmp_path / "reg" / "registry.yaml"
    registry.parent.mkdir()
    add_station(registry, first, keys[first].public_key)
    good_registry = registry.read_text()
    thresholds = tmp_path / "qc.yaml"
    good_thresholds = (
        "qc:\n  parameters:\n    SO2:\n      ug/m3:\n        gross_range: {fail: [-10, 2620], suspect: [0, 1600]}\n"
    )
    thresholds.write_text(good_thresholds)
    broker = make_secured(stations=(first, added), tls=True)
    log, port = tmp_path / "collector.log", free_port()
    process = collector_process(broker, registry, warehouse, log, port, "--qc-thresholds", thresholds)
    station = connected(probes, broker.address(first, tls=True))
    seq = iter(range(1, 100))

    def accepted_while_flowing(expected: int) -> None:
        assert station.publish(data_topic(first), batch(first, keys[first], next(seq))).value == 0
        wait_for_count(warehouse.pg_conninfo, "SELECT count() FROM readings WHERE station = %s", expected,
                       params=(first,))  # fmt: skip

    registry_label = f'{{file="{registry}"}}'
    thresholds_label = f'{{file="{thresholds}"}}'
    try:
        accepted_while_flowing(1)
        registry.write_text(good_registry.replace("stations:", "stations:\n  - not: a mapping\n", 1))
        for n in (2, 3, 4):
            accepted_while_flowing(n)  # with the last good registry
        assert process.running
        [broken] = events(log, "registry_invalid")  # once per change, not per message
        assert any(f"{registry.name}:" in issue and "fix" in issue for issue in broken["issues"]), broken["issues"]
        m = metrics(port)
        assert m[f"quantrac_config_reload_errors_total{registry_label}"] == 1
        assert m[f"quantrac_config_stale{registry_label}"] == 1 and m[f"quantrac_config_stale{thresholds_label}"] == 0

        registry.write_text(good_registry)
        add_station(registry, added, keys[added].public_key)  # the mended file, with a new station
        newcomer = connected(probes, broker.address(added, tls=True))
        assert newcomer.publish(data_topic(added), batch(added, keys[added], 1)).value == 0
        wait_for_count(warehouse.pg_conninfo, "SELECT count() FROM readings WHERE station = %s", 1, params=(added,))
        assert metrics(port)[f"quantrac_config_stale{registry_label}"] == 0

        thresholds.write_text(good_thresholds.replace("gross_range", "gross_rang"))  # an operator's typo
        for n in (5, 6):
            accepted_while_flowing(n)  # with the last good thresholds
        [bad_qc] = events(log, "qc_thresholds_invalid")
        assert any(f"{thresholds.name}:" in issue for issue in bad_qc["issues"]), bad_qc["issues"]
        m = metrics(port)
        assert m[f"quantrac_config_reload_errors_total{thresholds_label}"] == 1
        assert m[f"quantrac_config_stale{thresholds_label}"] == 1
        thresholds.write_text(good_thresholds.replace("1600", "15"))
        accepted_while_flowing(7)
        assert metrics(port)[f"quantrac_config_stale{thresholds_label}"] == 0
        flag = sql(
            warehouse.pg_conninfo,
            "SELECT qc_flag, qc_check FROM readings WHERE station = %s ORDER BY ts DESC LIMIT 1",
            (first,),
        )
        assert flag == [(3, "gross_range")], "the mended thresholds apply"
        assert process.running
    finally:
        process.stop()
