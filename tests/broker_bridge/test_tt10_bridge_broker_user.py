"""A TT10 ingest bridge's broker user (the registry's ``bridges:``) against the real Mosquitto over the
generated config's TLS listener: it publishes for the stations bound to it and for no other, reads
their commands and receipts only, never other stations' data, and cannot join the collectors' ``$share``
group. ``quantrac broker config --registry`` makes the user from the registry (enabled bound stations
only, a password file 0600), and refuses a bridge named like another user."""

from __future__ import annotations

import queue
import stat
from pathlib import Path

import pytest
import yaml

from broker_bridge.broker_config import BrokerConfigError, read_password_file, verify_password
from broker_bridge.keys import write_new_key
from broker_bridge.topics import (
    command_topic,
    data_subscription,
    data_topic,
    receipt_topic,
    status_subscription,
    status_topic,
)
from cli.broker import broker_config
from collector.registry import add_station, bind_bridge, bridge_delegations, parse_registry
from tests.broker_bridge.test_broker_security import (  # noqa: F401  (fixtures)
    COLLECTOR,
    NOT_AUTHORIZED,
    connected,
    drain,
    make_secured,
    probes,
)

BRIDGE = "tt10-hn"
MINE_1, MINE_2, OTHER = "HN_TT_001", "HN_TT_002", "HCM_TT_003"


def test_the_bridge_user_speaks_only_for_its_stations_over_tls(make_secured, probes) -> None:
    broker = make_secured(stations=(MINE_1, MINE_2, OTHER), tls=True, bridge_users={BRIDGE: [MINE_1, MINE_2]})
    credential = broker.config.credential_file(BRIDGE)
    assert stat.S_IMODE(credential.stat().st_mode) == 0o600
    collector = connected(probes, broker.address(COLLECTOR, tls=True))
    for topic_filter in (data_subscription("collectors"), status_subscription("collectors")):
        assert not collector.subscribe(topic_filter)[0].is_failure
    bridge = connected(probes, broker.address(BRIDGE, tls=True))

    # Its stations' data and status: PUBACK 0 (a collector is subscribed); another station's: 0x87.
    for station in (MINE_1, MINE_2):
        assert bridge.publish(data_topic(station), f"batch {station}".encode()).value == 0
        assert bridge.publish(status_topic(station), f"status {station}".encode()).value == 0
    for topic in (data_topic(OTHER), status_topic(OTHER), "quantrac/v1/data", data_topic(BRIDGE)):
        assert bridge.publish(topic, b"forged").value == NOT_AUTHORIZED, topic
    # Nor commands or receipts, not even its own stations': those are the collector's to write.
    for topic in (command_topic(MINE_1), receipt_topic(MINE_1)):
        assert bridge.publish(topic, b"forged").value == NOT_AUTHORIZED, topic
    got = sorted((m.topic, m.payload) for m in (collector.messages.get(timeout=5) for _ in range(4)))
    assert got == sorted(
        [(data_topic(s), f"batch {s}".encode()) for s in (MINE_1, MINE_2)]
        + [(status_topic(s), f"status {s}".encode()) for s in (MINE_1, MINE_2)]
    )
    with pytest.raises(queue.Empty):
        collector.messages.get(timeout=0.5)

    # The collectors' $share group is refused (the quantrac_acl plugin: SUBACK 0x87).
    assert bridge.subscribe(data_subscription("collectors"))[0].value == NOT_AUTHORIZED
    # Plain subscriptions are granted, reads are filtered on delivery: no station's data reaches it,
    # its own stations' commands and receipts do, another station's do not.
    for topic_filter in ("quantrac/v1/+/data", data_topic(OTHER), "quantrac/v1/+/cmd", "quantrac/v1/+/receipt"):
        assert not bridge.subscribe(topic_filter)[0].is_failure
    other = connected(probes, broker.address(OTHER, tls=True))
    assert other.publish(data_topic(OTHER), b"other's batch").value == 0
    assert collector.messages.get(timeout=5).payload == b"other's batch"  # it went out, to the collector only
    for topic in (command_topic(OTHER), receipt_topic(OTHER), command_topic(MINE_2), receipt_topic(MINE_1)):
        assert collector.publish(topic, topic.encode()).value in (0, 0x10), topic
    got = sorted(m.topic for m in (bridge.messages.get(timeout=5) for _ in range(2)))
    assert got == sorted([command_topic(MINE_2), receipt_topic(MINE_1)])
    with pytest.raises(queue.Empty):
        bridge.messages.get(timeout=0.5)
    assert drain(bridge.messages) == []


def registry_with_a_bridge(tmp_path: Path) -> Path:
    registry = tmp_path / "registry.yaml"
    for station in (MINE_1, MINE_2, OTHER):
        add_station(registry, station, write_new_key(tmp_path / "keys" / f"{station}.key").public_key)
    bind_bridge(registry, BRIDGE, write_new_key(tmp_path / "bridge.key").public_key, [MINE_1, MINE_2])
    doc = yaml.safe_load(registry.read_text())
    doc["stations"][MINE_2]["enabled"] = False
    registry.write_text(yaml.safe_dump(doc))
    return registry


def test_broker_config_from_the_registry_gives_each_bridge_a_user_for_its_enabled_stations(tmp_path: Path) -> None:
    registry = registry_with_a_bridge(tmp_path)
    assert bridge_delegations(parse_registry(registry.read_text(), str(registry))) == {BRIDGE: [MINE_1]}
    lines: list[str] = []
    result = broker_config(tmp_path / "out", registry=registry, echo=lines.append)
    credential = result.credential_file(BRIDGE)
    assert stat.S_IMODE(credential.stat().st_mode) == 0o600
    assert verify_password(credential.read_text().strip(), read_password_file(result.password_file)[BRIDGE])
    block = result.acl_file.read_text().split(f"user {BRIDGE}\n")[1].split("\n\n")[0].splitlines()
    assert block == [
        f"topic write {data_topic(MINE_1)}",
        f"topic write {status_topic(MINE_1)}",
        f"topic read {command_topic(MINE_1)}",
        f"topic read {receipt_topic(MINE_1)}",
    ]  # the disabled station bound to it is not there, nor any other
    printed = "\n".join(lines)
    assert f"bridge {BRIDGE} (registry bridges:) may speak for 1 station(s): {MINE_1}" in printed
    assert credential.read_text().strip() not in printed

    # A bridge named like a station (or a collector, a province) would share its broker session: refused.
    doc = yaml.safe_load(registry.read_text())
    doc["bridges"][OTHER] = doc["bridges"].pop(BRIDGE)
    registry.write_text(yaml.safe_dump(doc))
    with pytest.raises(BrokerConfigError, match=f"bridge name.*{OTHER}.*rename the bridge"):
        broker_config(tmp_path / "out", registry=registry, echo=lines.append)
