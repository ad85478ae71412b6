"""The national registry's delegations: one province per station, refused at load with file:line:fix."""

from __future__ import annotations

import pytest

from broker_bridge.broker_config import BrokerConfigError, generate_broker_config
from broker_bridge.keys import public_key_b64, write_new_key
from collector.registry import RegistryFileError, add_station, delegations, parse_registry, set_province


def test_delegation_round_trips_and_a_second_province_is_refused_with_its_line(tmp_path) -> None:
    registry = tmp_path / "national.yaml"
    key = write_new_key(tmp_path / "a.key")
    add_station(registry, "HN_AIR_001", key.public_key)
    add_station(registry, "HN_AIR_002", key.public_key)
    set_province(registry, "HN_AIR_001", "province-HN")
    entries = parse_registry(registry.read_text(), str(registry))
    assert entries["HN_AIR_001"].province == "province-HN" and entries["HN_AIR_002"].province is None
    assert delegations(entries) == {"province-HN": ["HN_AIR_001"]}

    b64 = public_key_b64(key.public_key)
    twice = (
        "stations:\n  HN_AIR_001:\n    province: province-HN\n    province: province-HCM\n"
        f"    keys:\n    - public_key: {b64}\n"
    )
    with pytest.raises(RegistryFileError) as duplicate:
        parse_registry(twice, "national.yaml")
    assert "national.yaml:4" in str(duplicate.value) and "fix:" in str(duplicate.value)
    listed = (
        f"stations:\n  HN_AIR_001:\n    province: [province-HN, province-HCM]\n    keys:\n    - public_key: {b64}\n"
    )
    with pytest.raises(RegistryFileError) as two:
        parse_registry(listed, "national.yaml")
    assert "national.yaml:3" in str(two.value) and "one province" in str(two.value)


def test_the_broker_config_refuses_a_station_given_to_two_provinces(tmp_path) -> None:
    with pytest.raises(BrokerConfigError, match="delegated to both"):
        generate_broker_config(
            tmp_path / "out",
            ["HN_AIR_001"],
            province_users={"province-HN": ["HN_AIR_001"], "province-HCM": ["HN_AIR_001"]},
            acl_plugin=tmp_path / "quantrac_acl.so",
            run_as=None,
        )
