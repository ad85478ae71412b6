"""A later batch that changes a stored reading is recorded in ``reading_revisions``, never a silent
overwrite (before: 1.0 became 999.0 with no trace). Real Mosquitto, collector and QuestDB."""

from __future__ import annotations

import time

from broker_bridge.envelope import BatchBody, Reading, seal
from broker_bridge.keys import write_new_key
from broker_bridge.topics import data_topic
from collector.registry import add_station
from tests.helpers import publish_all, sql, unique_station, wait_for_count


def test_a_changed_value_or_status_for_a_stored_key_is_a_revision(
    tmp_path, mosquitto_server, make_collector, warehouse
):
    station = unique_station("REV")
    key = write_new_key(tmp_path / "k.key")
    registry = tmp_path / "registry.yaml"
    add_station(registry, station, key.public_key)
    make_collector(mosquitto_server.port, registry, f"c-{station}")
    t0 = time.time_ns() - 5 * 10**9

    def batch(seq: int, *readings: tuple) -> bytes:
        rows = tuple(Reading(ts, "dev1", p, v, "ug/m3", st, "") for ts, p, v, st in readings)
        return seal(BatchBody(station, seq, time.time_ns(), rows), key.key_id, key.private_key)

    def count(table: str, column: str = "station") -> str:
        return f"SELECT count() FROM {table} WHERE {column} = %s"

    publish_all(mosquitto_server.port, data_topic(station), [batch(1, (t0, "SO2", 1.0, "00"), (t0, "NO2", 2.0, "00"))])
    wait_for_count(warehouse.pg_conninfo, count("batches"), 1, params=(station,))
    # seq 2 changes SO2's value, keeps NO2's and adds a newer reading; seq 3 and 4 (one flush, most likely)
    # change NO2's status and then its value again.
    publish_all(
        mosquitto_server.port,
        data_topic(station),
        [
            batch(2, (t0, "SO2", 999.0, "00"), (t0, "NO2", 2.0, "00"), (t0 + 10**9, "SO2", 3.0, "00")),
            batch(3, (t0, "NO2", 2.0, "01")),
            batch(4, (t0, "NO2", None, "02")),
        ],
    )
    wait_for_count(warehouse.pg_conninfo, count("batches"), 4, params=(station,))
    wait_for_count(warehouse.pg_conninfo, count("reading_revisions"), 3, params=(station,))
    revisions = sql(
        warehouse.pg_conninfo,
        "SELECT parameter, ts::long, old_value, old_status, old_seq, new_value, new_status, new_seq, revised_at::long"
        " FROM reading_revisions WHERE station = %s ORDER BY new_seq",
        (station,),
    )
    assert [r[:8] for r in revisions] == [
        ("SO2", t0, 1.0, "00", 1, 999.0, "00", 2),
        ("NO2", t0, 2.0, "00", 2, 2.0, "01", 3),  # seq 2 sent it again unchanged: the row was seq 2's
        ("NO2", t0, 2.0, "01", 3, None, "02", 4),
    ]
    assert all(r[8] > t0 for r in revisions)
    stored = sql(
        warehouse.pg_conninfo,
        "SELECT parameter, ts::long, value, status, seq FROM readings WHERE station = %s ORDER BY parameter, ts",
        (station,),
    )
    assert stored == [("NO2", t0, None, "02", 4), ("SO2", t0, 999.0, "00", 2), ("SO2", t0 + 10**9, 3.0, "00", 2)]
