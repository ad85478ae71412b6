"""Issue 11's attack table, the items a station's own credentials reach the collector with, sent over
the generated config's TLS listener as a station would (its broker user and password, its signing
key): the real Mosquitto, an in-process collector connected over TLS with the collector's own
credentials, the real QuestDB, and ``quantrac rejects export`` over what it wrote.

The broker-side items (session takeover, the shared subscription, retained data, the 80 MB publish)
are in tests/broker_bridge/test_broker_listeners.py on both listeners; forged and out-of-shape status
in test_collector_hardening.py (TLS). Before the fixes each case below ended as ``warehouse_refused``
(the whole flush refused by QuestDB), ``internal_error`` with no station, a silent collapse, a silent
overwrite, or an export that failed for the whole selection."""

from __future__ import annotations

import json
import time
from pathlib import Path

import msgpack

from broker_bridge.envelope import BatchBody, Envelope, Reading, seal
from broker_bridge.keys import write_new_key
from broker_bridge.topics import data_topic, status_topic
from cli.rejects import export_rejects
from collector.registry import add_station
from tests.broker_bridge.test_broker_security import (  # noqa: F401  (fixtures)
    COLLECTOR,
    connected,
    make_secured,
    probes,
)
from tests.helpers import sql, unique_station, wait_for_count


def raw_body(station: str, seq: int, readings: list) -> bytes:
    """A body written by hand from docs/wire-format.md, as a third-party script would."""
    return msgpack.packb(
        {"station": station, "seq": seq, "sent_ns": time.time_ns(), "hist": False, "readings": readings},
        use_bin_type=True,
    )


def test_what_one_stations_credentials_send_over_tls_is_refused_with_its_reason_or_kept_as_a_revision(
    tmp_path: Path, make_secured, probes, make_collector, warehouse
) -> None:
    station = unique_station("TLSATK")
    key = write_new_key(tmp_path / "keys" / "station.key")
    registry = tmp_path / "registry.yaml"
    add_station(registry, station, key.public_key)
    broker = make_secured(stations=(station,), tls=True)
    reject_store = tmp_path / "reject-store"
    make_collector(0, registry, COLLECTOR, broker=broker.address(COLLECTOR, tls=True), reject_store=str(reject_store))
    attacker = connected(probes, broker.address(station, tls=True))
    ts = time.time_ns() - 60 * 10**9

    def signed(body: bytes) -> bytes:
        return Envelope(key.key_id, body, key.private_key.sign(body)).encode()

    def reading(**fields) -> list:
        r = {"ts": ts, "device": "dev1", "parameter": "SO2", "value": 1.0, "unit": "ug/m3", "status": "00", "cause": ""}
        r.update(fields)
        return list(r.values())

    def publish(topic: str, payload: bytes) -> None:
        assert attacker.publish(topic, payload, timeout=15).value == 0  # the broker cannot tell: the collector must

    # A stored reading, then the same key with another value in a later batch: a revision, never a silent overwrite.
    publish(data_topic(station), seal(BatchBody(station, 1, time.time_ns(), (Reading(ts, "dev1", "SO2", 1.0, "ug/m3",
                                      "00", ""),)), key.key_id, key.private_key))  # fmt: skip
    wait_for_count(warehouse.pg_conninfo, "SELECT count() FROM batches WHERE station = %s", 1, params=(station,))
    publish(data_topic(station), seal(BatchBody(station, 2, time.time_ns(), (Reading(ts, "dev1", "SO2", 999.0,
                                      "ug/m3", "00", ""),)), key.key_id, key.private_key))  # fmt: skip

    thrice = [reading(value=v) for v in (1.0, 2.0, 3.0)]
    big_garbage = b"\x00garbage" * (900 * 1024 // 8)  # 900 KiB: under the broker's 1 MiB limit, over 786 KB
    cases = {
        "NUL in a device": (data_topic(station), signed(raw_body(station, 3, [reading(device="dev\x001")])),
                            "schema", "device holds the control character U+0000"),
        "NUL in a unit": (data_topic(station), signed(raw_body(station, 4, [reading(unit="ug\x00")])),
                          "schema", "unit holds the control character U+0000"),
        "one key three times": (data_topic(station), signed(raw_body(station, 5, thrice)),
                                "duplicate_reading_key", "repeats reading 0's key"),
        "status nested 60,000 deep": (status_topic(station), signed(b"[" * 30_000 + b"]" * 30_000),
                                      "undecodable", "nests deeper than"),
        "900 KiB of garbage": (data_topic(station), big_garbage, "undecodable", ""),
    }  # fmt: skip
    for topic, payload, _, _ in cases.values():
        publish(topic, payload)

    wait_for_count(warehouse.pg_conninfo, "SELECT count() FROM rejects WHERE claimed_station = %s", len(cases),
                   params=(station,))  # fmt: skip
    wait_for_count(warehouse.pg_conninfo, "SELECT count() FROM reading_revisions WHERE station = %s", 1,
                   params=(station,))  # fmt: skip
    rejects = sql(
        warehouse.pg_conninfo,
        "SELECT reason, detail, claimed_station, payload_size, payload_sha256 FROM rejects WHERE claimed_station = %s",
        (station,),
    )
    for name, (_, _, reason, detail) in cases.items():
        assert any(r[0] == reason and detail in r[1] for r in rejects), (name, [r[:2] for r in rejects])
    assert len(rejects) == len(cases), [r[:3] for r in rejects]
    assert not any(r[0] in ("warehouse_refused", "internal_error") for r in rejects), rejects

    # The changed value is the stored one, the old one is in reading_revisions.
    assert sql(warehouse.pg_conninfo, "SELECT value, seq FROM readings WHERE station = %s", (station,)) == [(999.0, 2)]
    assert sql(
        warehouse.pg_conninfo,
        "SELECT old_value, old_seq, new_value, new_seq FROM reading_revisions WHERE station = %s",
        (station,),
    ) == [(1.0, 1, 999.0, 2)]

    # The export streams every reject, the 900 KiB one whole from the payload store.
    out = tmp_path / "rejects.jsonl"
    exported = export_rejects(warehouse.pg_conninfo, out, payload_store=reject_store, since="1970-01-01T00:00:00Z")
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert exported == len(lines)
    whole = [line for line in lines if line.get("payload_size") == len(big_garbage)]
    assert len(whole) == 1, [line.get("reason") for line in lines if line.get("claimed_station") == station]
    assert len(whole[0]["payload_b64"]) >= len(big_garbage) * 4 // 3, "the export carries the whole bytes"
