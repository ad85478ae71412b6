"""The agent's birth carries every value's measuring range from its device's profile, and leaves them out
(with an error line) when they would take the birth past the collectors' 64 KiB bound."""

from __future__ import annotations

from pathlib import Path

from structlog.testing import capture_logs

from broker_bridge.keys import write_new_key
from broker_bridge.session import BrokerAddress
from broker_bridge.station_messages import MAX_STATUS_BYTES, Birth
from edge_agent.agent import StationAgent
from station_profiles.loader import load_station
from tests.field_rig import write_station


def tcp(device_id: str, port: int) -> dict:
    return {"id": device_id, "profile": "generic-modbus-float", "transport": "modbus_tcp",
            "host": "127.0.0.1", "port": port, "unit_id": 1}  # fmt: skip


def agent_for(tmp_path: Path, devices: int) -> StationAgent:
    station = load_station(write_station(tmp_path, [tcp(f"dev{i}", 20000 + i) for i in range(devices)]))
    key = write_new_key(tmp_path / "k.key")
    return StationAgent(station, key, BrokerAddress("127.0.0.1", 1), tmp_path / f"outbox-{devices}.sqlite")


def test_the_birth_names_each_values_range_and_its_profile(tmp_path):
    description = agent_for(tmp_path, 2).publisher.description
    assert [(r.device, r.parameter, r.unit, r.low, r.high, r.profile) for r in description.ranges][:2] == [
        ("dev0", "V1", "-", 0.0, 1000.0, "generic-modbus-float"),
        ("dev0", "V2", "-", 0.0, 1000.0, "generic-modbus-float"),
    ]
    assert len(description.ranges) == 8


def test_ranges_that_would_pass_the_bound_are_left_out_with_an_error(tmp_path):
    with capture_logs() as logs:
        description = agent_for(tmp_path, 200).publisher.description  # 800 ranges: about 85 KB
    assert description.ranges == () and len(description.devices) == 200
    assert len(Birth("FIELD_01", 1, 1, description).encode()) <= MAX_STATUS_BYTES
    (event,) = [e for e in logs if e["event"] == "birth_ranges_left_out"]
    assert event["log_level"] == "error" and event["ranges"] == 800 and event["bytes"] > MAX_STATUS_BYTES
