"""The registry's bridges (a key of their own, bound to the stations they serve) and TT10 accounts,
and what the collector's admission makes of a batch by its signer and its provenance."""

from __future__ import annotations

import time

import pytest

from broker_bridge.envelope import BatchBody, Reading, seal
from broker_bridge.keys import public_key_b64, write_new_key
from broker_bridge.topics import data_topic
from collector.admission import Accepted, Rejected, check_message
from collector.registry import (
    RegistryError,
    RegistryFileError,
    StationRegistry,
    add_station,
    bind_bridge,
    load_bridges,
    parse_registry,
    tt10_accounts,
)

HASH = "scrypt$16384$8$1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2g="


@pytest.fixture
def keys(tmp_path):
    return {name: write_new_key(tmp_path / f"{name}.key") for name in ("a", "b", "bridge", "stranger")}


def text(keys, bridges: str, tt10: str = "") -> str:
    return (
        "stations:\n"
        f"  A_1:\n    keys:\n    - public_key: {public_key_b64(keys['a'].public_key)}\n{tt10}"
        f"  B_1:\n    keys:\n    - public_key: {public_key_b64(keys['b'].public_key)}\n"
        f"{bridges}"
    )


def test_a_bridge_is_bound_to_the_stations_it_serves(tmp_path, keys):
    registry = tmp_path / "r.yaml"
    add_station(registry, "A_1", keys["a"].public_key)
    add_station(registry, "B_1", keys["b"].public_key)
    kid = bind_bridge(registry, "tt10-hn", keys["bridge"].public_key, ["A_1"])
    entries = parse_registry(registry.read_text(), str(registry))
    assert entries["A_1"].bridge_keys[kid][0] == "tt10-hn" and entries["B_1"].bridge_keys == {}
    assert load_bridges(registry)["tt10-hn"].stations == ("A_1",)
    bind_bridge(registry, "tt10-hn", keys["bridge"].public_key, ["B_1", "A_1"])
    assert load_bridges(registry)["tt10-hn"].stations == ("A_1", "B_1")
    with pytest.raises(RegistryError, match="not registered"):
        bind_bridge(registry, "tt10-hn", keys["bridge"].public_key, ["C_1"])


def test_bridge_errors_name_their_line_and_fix(keys):
    bridge = public_key_b64(keys["bridge"].public_key)
    unknown = text(keys, f"bridges:\n  tt10-hn:\n    keys:\n    - public_key: {bridge}\n    stations: [A_1, C_9]\n")
    with pytest.raises(RegistryFileError) as err:
        parse_registry(unknown, "r.yaml")
    assert "r.yaml:12:" in str(err.value) and "C_9, which is not registered" in str(err.value)
    assert "fix: add the station first" in str(err.value)
    own = public_key_b64(keys["a"].public_key)
    shared = text(keys, f"bridges:\n  tt10-hn:\n    keys:\n    - public_key: {own}\n    stations: [B_1]\n")
    with pytest.raises(RegistryFileError, match=r"r.yaml:11: .*also station A_1's"):
        parse_registry(shared, "r.yaml")
    with pytest.raises(RegistryFileError, match="r.yaml:10"):
        parse_registry(text(keys, "bridges:\n  tt10-hn:\n    keys: []\n    stations: [A_1]\n"), "r.yaml")


def test_tt10_accounts_come_from_the_registry_hashed_never_plain(keys):
    account = f"    tt10:\n      account: hn-kxq\n      password_hash: {HASH}\n      quota_bytes: 1000\n"
    entries = parse_registry(text(keys, "", account), "r.yaml")
    assert tt10_accounts(entries) == {
        "hn-kxq": {"station": "A_1", "password_hash": HASH, "authorized_keys": [], "quota_bytes": 1000,
                   "max_files_per_minute": 60},
    }  # fmt: skip
    plain = "    tt10:\n      account: hn-kxq\n      password_hash: hunter2\n"
    with pytest.raises(RegistryFileError, match=r"r.yaml:7: .*plain-text passwords are never stored"):
        parse_registry(text(keys, "", plain), "r.yaml")
    none = "    tt10:\n      account: hn-kxq\n"
    with pytest.raises(RegistryFileError, match="neither password_hash nor authorized_keys"):
        parse_registry(text(keys, "", none), "r.yaml")


def sealed(key, station, source="agent", file_sha256=""):
    reading = Reading(time.time_ns(), "tt10", "PM10", 41.0, "ug/m3", "00")
    body = BatchBody(station, 1, time.time_ns(), (reading,), source=source, file_sha256=file_sha256)
    return seal(body, key.key_id, key.private_key)


def test_admission_by_signer_and_provenance(tmp_path, keys):
    registry = tmp_path / "r.yaml"
    add_station(registry, "A_1", keys["a"].public_key)
    add_station(registry, "B_1", keys["b"].public_key)
    bind_bridge(registry, "tt10-hn", keys["bridge"].public_key, ["A_1"])
    bind_bridge(registry, "tt10-elsewhere", keys["stranger"].public_key, ["B_1"])
    reg = StationRegistry(registry)
    sha = "ab" * 32

    def outcome(key, station, **provenance):
        return check_message(data_topic(station), sealed(key, station, **provenance), reg, time.time_ns())

    ok = outcome(keys["bridge"], "A_1", source="tt10", file_sha256=sha)
    assert isinstance(ok, Accepted) and (ok.body.source, ok.body.file_sha256) == ("tt10", sha)
    assert isinstance(outcome(keys["a"], "A_1"), Accepted)  # the station's own agent, as ever
    cases = [
        (outcome(keys["stranger"], "A_1", source="tt10", file_sha256=sha), "bridge_not_bound", "tt10-elsewhere"),
        (outcome(keys["a"], "A_1", source="tt10", file_sha256=sha), "source_mismatch", "station's own key"),
        (outcome(keys["bridge"], "A_1"), "source_mismatch", "never an agent's readings"),
    ]
    for result, reason, fragment in cases:
        assert isinstance(result, Rejected) and result.row.reason == reason and fragment in result.row.detail
