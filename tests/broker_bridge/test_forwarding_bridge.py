"""Province-to-national forwarding by a generated Mosquitto bridge, and the national broker's
province ACL, against two real Mosquitto 2.0.11 brokers on free ports.

The national broker runs the generated config for a national registry with delegations
(``province:``), a TLS listener that requires client certificates; the province broker runs
the config ``--bridge-to`` that national TLS listener wrote, as the province's user there.
"""

from __future__ import annotations

import queue
import time
from pathlib import Path

import pytest

from broker_bridge.broker_config import BridgeSettings, TlsListener, create_pki, generate_broker_config
from broker_bridge.mosquitto_server import find_mosquitto
from broker_bridge.session import BrokerAddress
from broker_bridge.topics import command_topic, data_subscription, data_topic, status_topic
from supervisor import ManagedProcess, free_port, wait_until
from tests.broker_bridge.test_broker_security import (  # noqa: F401 (probes is a fixture)
    NOT_AUTHORIZED,
    GeneratedConfigBroker,
    Probe,
    connected,
    drain,
    probes,
)

HN_1, HN_2, HCM_1 = "HN_AIR_101", "HN_WW_102", "HCM_AIR_201"
HANOI, HCMC = "province-HN", "province-HCM"
COLLECTOR = "quantrac-collector"


class Pair:
    """A national broker (delegations, TLS with client certificates) and a province broker bridged to it."""

    def __init__(self, tmp: Path, outage_hours: float = 1.0) -> None:
        self.pki = create_pki(tmp / "pki", clients=[HANOI])
        self.national_port, self.national_tls = free_port(), free_port()
        self.national_config = generate_broker_config(
            tmp / "national-config", [HN_1, HN_2, HCM_1],
            province_users={HANOI: [HN_1, HN_2], HCMC: [HCM_1]},
            plain_listener=("127.0.0.1", self.national_port),
            tls=TlsListener(self.pki.ca_cert, self.pki.server_cert, self.pki.server_key, port=self.national_tls,
                            host="127.0.0.1", require_certificate=True),
            autosave_interval=2, data_dir=tmp / "national" / "data", log_file=tmp / "national" / "mosquitto.log",
            run_as=None,
        )  # fmt: skip
        self.national = GeneratedConfigBroker(tmp / "national", self.national_port, self.national_config.conf_file)
        cert, key = self.pki.clients[HANOI]
        self.bridge = BridgeSettings(
            "127.0.0.1", self.national_tls, HANOI, self.national_config.credential_file(HANOI),
            self.pki.ca_cert, cert, key, outage_hours=outage_hours,
        )  # fmt: skip
        self.province_port = free_port()
        self.province_config = generate_broker_config(
            tmp / "province-config", [HN_1, HN_2, HCM_1], plain_listener=("127.0.0.1", self.province_port),
            autosave_interval=2, data_dir=tmp / "province" / "data", log_file=tmp / "province" / "mosquitto.log",
            run_as=None, bridge=self.bridge,
        )  # fmt: skip
        self.province = GeneratedConfigBroker(tmp / "province", self.province_port, self.province_config.conf_file)

    def national_address(self, user: str) -> BrokerAddress:
        return BrokerAddress("127.0.0.1", self.national_port).with_credentials(
            user, self.national_config.credential_file(user)
        )

    def province_address(self, user: str) -> BrokerAddress:
        return BrokerAddress("127.0.0.1", self.province_port).with_credentials(
            user, self.province_config.credential_file(user)
        )


@pytest.fixture
def pair(tmp_path: Path):
    made = Pair(tmp_path)
    made.national.start()
    made.province.start()
    try:
        yield made
    finally:
        made.province.stop()
        made.national.stop()


def subscribed(probes, address: BrokerAddress, topic_filter: str, **kwargs) -> Probe:
    probe = connected(probes, address, **kwargs)
    assert not probe.subscribe(topic_filter)[0].is_failure
    return probe


def received(probe: Probe, count: int, timeout: float = 20.0) -> list:
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        try:
            got.append(probe.messages.get(timeout=max(0.01, deadline - time.monotonic())))
        except queue.Empty:
            break
    return got


def wait_bridged(pair: Pair, probes) -> None:
    """Publish probes on the province until one reaches national: the bridge is connected and subscribed."""
    watcher = subscribed(probes, pair.national_address(COLLECTOR), status_topic(HN_2), persistent=False)
    station = connected(probes, pair.province_address(HN_2))

    def through() -> bool:
        station.publish(status_topic(HN_2), b'{"probe": 1}')
        try:
            watcher.messages.get(timeout=0.5)
            return True
        except queue.Empty:
            return False

    wait_until(through, timeout=30, interval=0.2, what="the bridge to carry a status to national")
    station.close()
    watcher.close()


def test_a_2_0_11_broker_refuses_bridge_session_expiry_so_the_generator_leaves_it_out(tmp_path: Path) -> None:
    """Why the config has no bridge_session_expiry_interval: Debian 12's Mosquitto exits on it."""
    pair = Pair(tmp_path / "p")
    text = pair.province_config.conf_file.read_text()
    assert "bridge_protocol_version mqttv50" in text and "cleansession false" in text
    assert "local_cleansession false" in text and "bridge_outgoing_retain false" in text
    assert "topic quantrac/v1/+/data out 1" in text and "topic quantrac/v1/+/cmd in 1" in text
    assert f"bridge_certfile {pair.pki.clients[HANOI][0]}" in text
    assert (pair.province_config.conf_file.stat().st_mode & 0o077) == 0, "the conf holds the bridge password"
    assert not any(line.startswith("bridge_session_expiry_interval") for line in text.splitlines())
    broken = tmp_path / "broken.conf"
    broken.write_text(text.replace("bridge_outgoing_retain false", "bridge_session_expiry_interval 90000"))
    (tmp_path / "p" / "province" / "data").mkdir(parents=True, exist_ok=True)
    process = ManagedProcess(
        [find_mosquitto(), "-c", broken], log_path=tmp_path / "broken.log", name="mosquitto-broken"
    )
    process.start()
    wait_until(lambda: not process.running, timeout=10, what="mosquitto to refuse the config")
    assert "bridge_session_expiry_interval" in (tmp_path / "broken.log").read_text()


@pytest.mark.slow  # a national broker outage (~10 s)
def test_bridge_carries_batches_out_holds_them_through_a_national_outage_and_brings_commands_in(
    pair: Pair, probes
) -> None:
    wait_bridged(pair, probes)
    national_collector = subscribed(
        probes, pair.national_address(COLLECTOR), data_subscription(), persistent=True, client_id=COLLECTOR
    )
    station = connected(probes, pair.province_address(HN_1))
    payloads = [f"batch-{i}".encode() + bytes(range(256)) for i in range(20)]
    for payload in payloads[:10]:
        assert not station.publish(data_topic(HN_1), payload).is_failure
    first = received(national_collector, 10)
    assert [m.payload for m in first] == payloads[:10], "every batch reaches national unchanged, in order"
    assert all(not m.retain for m in first)

    # National goes away; the province keeps publishing into the bridge's local queue.
    national_collector.close()
    pair.national.stop()
    started = time.monotonic()
    for payload in payloads[10:]:
        assert not station.publish(data_topic(HN_1), payload).is_failure
    time.sleep(3)  # the bridge retries meanwhile (restart_timeout 2 60)
    pair.national.start()
    back = subscribed(
        probes, pair.national_address(COLLECTOR), data_subscription(), persistent=True, client_id=COLLECTOR
    )
    # QoS 1 is at least once: batches the probe took just before national stopped may come again.
    rest: list = []
    deadline = time.monotonic() + 90
    while not set(payloads[10:]) <= {m.payload for m in rest} and time.monotonic() < deadline:
        rest += received(back, 1, timeout=max(0.1, deadline - time.monotonic()))
    caught_up = time.monotonic() - started
    print(
        "bridge: 10 batches queued on the province during a national outage reached national"
        f" {caught_up:.1f} s after it began"
    )
    assert {m.payload for m in rest} == set(payloads[10:]) | ({m.payload for m in rest} & set(payloads[:10])), (
        "nothing but the batches sent"
    )
    assert set(payloads[10:]) <= {m.payload for m in rest}, "the bridge's queue lost nothing"

    # The national collector's re-send request reaches the station on the province broker.
    assert not station.subscribe(command_topic(HN_1))[0].is_failure
    wait_bridged(pair, probes)
    request = b'{"resend": {"from_seq": 3, "to_seq": 5}}'
    assert not back.publish(command_topic(HN_1), request).is_failure
    commands = received(station, 1, timeout=20)
    assert [m.payload for m in commands] == [request] and commands[0].topic == command_topic(HN_1)


@pytest.mark.slow  # two brokers, a bridge and a collector (~9 s)
def test_a_province_speaks_only_for_its_delegated_stations(pair: Pair, probes) -> None:
    wait_bridged(pair, probes)
    national_collector = subscribed(probes, pair.national_address(COLLECTOR), data_subscription())
    hanoi = connected(probes, pair.national_address(HANOI))
    assert not hanoi.publish(data_topic(HN_1), b"own station").is_failure
    assert hanoi.publish(data_topic(HCM_1), b"another province's station").value == NOT_AUTHORIZED
    assert hanoi.publish(data_topic("HN_NOT_DELEGATED"), b"never delegated").value == NOT_AUTHORIZED
    # Through the bridge too: the province broker knows HCM_1, national refuses it from Hanoi's user.
    on_province = connected(probes, pair.province_address(HCM_1))
    assert not on_province.publish(data_topic(HCM_1), b"bridged, not delegated").is_failure
    assert (
        not connected(probes, pair.province_address(HN_2)).publish(data_topic(HN_2), b"bridged, delegated").is_failure
    )
    got = received(national_collector, 2, timeout=10)
    time.sleep(1)
    got += drain(national_collector.messages)
    assert sorted(m.payload for m in got) == [b"bridged, delegated", b"own station"]
    # Probes share client ids on national (use_username_as_clientid): the Hanoi probe took the bridge's
    # session. Closed now, the bridge takes it back before the commands below go through it.
    hanoi.close()
    national_collector.close()
    wait_bridged(pair, probes)
    # The province reads its stations' commands, not another province's: read where they land, on the
    # province broker, through the bridge (whose national user is the province's).
    hn_cmd = subscribed(probes, pair.province_address(HN_1), command_topic(HN_1))
    hcm_cmd = subscribed(probes, pair.province_address(HCM_1), command_topic(HCM_1))
    collector_cmd = connected(probes, pair.national_address(COLLECTOR))
    collector_cmd.publish(command_topic(HCM_1), b'{"resend": {"from_seq": 1, "to_seq": 1}}')
    collector_cmd.publish(command_topic(HN_1), b'{"resend": {"from_seq": 2, "to_seq": 2}}')
    assert [m.topic for m in received(hn_cmd, 1, timeout=10)] == [command_topic(HN_1)]
    assert received(hcm_cmd, 1, timeout=3) == [], "national gave the province another province's command"


def test_collectors_read_the_brokers_sys_counters(pair: Pair, probes) -> None:
    collector = subscribed(probes, pair.national_address(COLLECTOR), "$SYS/broker/publish/messages/dropped")
    station = subscribed(probes, pair.national_address(HN_1), "$SYS/broker/publish/messages/dropped")
    got = received(collector, 1, timeout=30)  # sys_interval: 10 s by default
    assert got and got[0].payload.isdigit()
    assert drain(station.messages) == [], "a station may not read the broker's counters"
