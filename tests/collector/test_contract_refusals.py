"""Every field the warehouse cannot store, and every breach of the contract's own word, is refused by the
contract's validation with its reason, never by QuestDB refusing the whole flush (``warehouse_refused``).

Signed batches built as a third-party script would (msgpack by hand from docs/wire-format.md), through
the real Mosquitto and the real collector into the real QuestDB.
"""

from __future__ import annotations

import struct
import time

import msgpack
import pytest

from broker_bridge.envelope import Envelope
from broker_bridge.keys import write_new_key
from broker_bridge.topics import data_topic
from collector.registry import add_station
from tests.helpers import publish_all, sql, unique_station, wait_for_count


def signed(key, body_bytes: bytes) -> bytes:
    return Envelope(key.key_id, body_bytes, key.private_key.sign(body_bytes)).encode()


def body(station: str, seq: int, readings: list, **extra) -> bytes:
    return msgpack.packb(
        {"station": station, "seq": seq, "sent_ns": time.time_ns(), "hist": False, "readings": readings, **extra},
        use_bin_type=True,
    )


def with_float32(station: str, seq: int, ts: int) -> bytes:
    """A body whose one value is a msgpack float32 (0xca): msgpack-python writes float64 only."""
    marker = 12345.678
    packed = body(station, seq, [[ts, "dev1", "SO2", marker, "ug/m3", "00", ""]])
    float64 = b"\xcb" + struct.pack(">d", marker)
    assert packed.count(float64) == 1
    return packed.replace(float64, b"\xca" + struct.pack(">f", marker))


@pytest.fixture
def station_and_key(tmp_path, mosquitto_server, make_collector):
    station = unique_station("CON")
    key = write_new_key(tmp_path / "k.key")
    registry = tmp_path / "registry.yaml"
    add_station(registry, station, key.public_key)
    make_collector(mosquitto_server.port, registry, f"c-{station}")
    return station, key


def test_fields_the_warehouse_cannot_store_and_contract_breaches_are_refused_with_their_reason(
    station_and_key, mosquitto_server, warehouse
):
    station, key = station_and_key
    ts = time.time_ns()

    def reading(**fields) -> list:
        r = {"ts": ts, "device": "dev1", "parameter": "SO2", "value": 1.0, "unit": "ug/m3", "status": "00", "cause": ""}
        r.update(fields)
        return list(r.values())

    cases = {
        # before: each passed the checks and QuestDB refused the whole flush (warehouse_refused)
        "device NUL": (
            body(station, 2, [reading(device="dev\x001")]),
            "schema",
            "device holds the control character U+0000",
        ),
        "parameter NUL": (body(station, 3, [reading(parameter="SO\x002")]), "schema", "parameter holds"),
        "unit NUL": (body(station, 4, [reading(unit="ug\x00")]), "schema", "unit holds the control character U+0000"),
        "cause NUL": (body(station, 5, [reading(cause="zero\x00cal")]), "schema", "cause holds"),
        "device newline": (body(station, 6, [reading(device="dev\n1")]), "schema", "U+000A"),
        # before: accepted against the contract's word
        "seq 0": (body(station, 0, [reading()]), "schema", "seq must be an integer in 1..2^63-1"),
        "seq 2^63": (body(station, 2**63, [reading()]), "schema", "seq must be an integer in 1..2^63-1"),
        "extra key": (body(station, 7, [reading()], note="hi"), "schema", "keys the contract does not know"),
        "float32": (with_float32(station, 8, ts), "schema", "float32"),
        # before: three readings became one row with no reject (the ledger counting three)
        "repeated key": (
            body(station, 9, [reading(value=1.0), reading(value=2.0), reading(value=3.0)]),
            "duplicate_reading_key",
            "reading 1 repeats reading 0's key",
        ),
    }
    good = body(station, 1, [reading(device="dev2", cause="tab\tis text")])
    publish_all(
        mosquitto_server.port, data_topic(station), [signed(key, b) for b, _, _ in cases.values()] + [signed(key, good)]
    )
    wait_for_count(
        warehouse.pg_conninfo,
        "SELECT count() FROM rejects WHERE claimed_station = %s",
        len(cases),
        params=(station,),
    )
    wait_for_count(warehouse.pg_conninfo, "SELECT count() FROM readings WHERE station = %s", 1, params=(station,))
    rejects = sql(warehouse.pg_conninfo, "SELECT reason, detail FROM rejects WHERE claimed_station = %s", (station,))
    assert len(rejects) == len(cases)
    for name, (_, reason, detail) in cases.items():
        assert any(r == reason and detail in d for r, d in rejects), (name, rejects)
    assert not any(r == "warehouse_refused" for r, _ in rejects)
    assert sql(warehouse.pg_conninfo, "SELECT device, cause FROM readings WHERE station = %s", (station,)) == [
        ("dev2", "tab\tis text")
    ]
    assert sql(warehouse.pg_conninfo, "SELECT seq FROM batches WHERE station = %s", (station,)) == [(1,)]
