"""Station metadata on the real servers: a collector started with a registry writes one station_metadata
row per station, again after every edit of the file; store.station_queries reads the newest row back; and
the aggregator's expected count follows the registry's logging interval of a parameter."""

from __future__ import annotations

import time

from analysis.aggregator import Aggregator
from analysis.settings import Settings, SettingsFile
from broker_bridge.envelope import BatchBody, Reading, seal
from broker_bridge.keys import write_new_key
from broker_bridge.topics import data_topic
from collector.registry import MetadataEdit, add_station, set_metadata
from store.station_queries import StationMetadata, latest_station_metadata
from tests.helpers import publish_all, sql, unique_station, wait_for_count

H = 3_600_000_000_000
ROWS = "SELECT count() FROM station_metadata WHERE station IN (%s, %s)"


def test_the_collector_writes_the_registry_s_stations_and_the_newest_row_reads_back(
    tmp_path, mosquitto_server, make_collector, warehouse
) -> None:
    air, water = unique_station("META_AIR"), unique_station("META_WW")
    registry = tmp_path / "registry.yaml"
    air_key = write_new_key(tmp_path / "air.key")
    add_station(
        registry, air, air_key.public_key, kind="ambient_air",
        metadata=MetadataEdit(name="Trạm Nguyễn Văn Cừ", province_code="HN", latitude=21.0486, longitude=105.8805,
                              intervals={"PM10": 60, "PM2,5": 60}),
    )  # fmt: skip
    add_station(
        registry, water, write_new_key(tmp_path / "ww.key").public_key, kind="wastewater",
        metadata=MetadataEdit(name="Nhà máy xử lý nước thải KCN Đình Vũ", province_code="HP",
                              facility="KCN Đình Vũ", intervals={"COD": 300}),
    )  # fmt: skip
    collector = make_collector(mosquitto_server.port, registry, f"c-{air}")
    wait_for_count(warehouse.pg_conninfo, ROWS, 2, params=(air, water))
    first = latest_station_metadata(warehouse.pg_conninfo)
    assert first[air] == StationMetadata(
        air, True, "ambient_air", "Trạm Nguyễn Văn Cừ", "HN", None, 21.0486, 105.8805,
        {"PM10": 60.0, "PM2,5": 60.0}, first[air].loaded_ns,
    )  # fmt: skip
    assert first[water] == StationMetadata(
        water, True, "wastewater", "Nhà máy xử lý nước thải KCN Đình Vũ", "HP", "KCN Đình Vũ", None, None,
        {"COD": 300.0}, first[water].loaded_ns,
    )  # fmt: skip
    assert abs(first[air].loaded_ns - time.time_ns()) < 60 * 1_000_000_000

    # An edit while the collector runs: a new row per station, the newest one read back.
    set_metadata(registry, water, MetadataEdit(name="Trạm nước thải Đình Vũ", latitude=20.8449, longitude=106.7747))
    wait_for_count(warehouse.pg_conninfo, ROWS, 4, params=(air, water))
    newest = latest_station_metadata(warehouse.pg_conninfo, water)
    assert list(newest) == [water]
    assert (newest[water].name, newest[water].latitude, newest[water].longitude) == (
        "Trạm nước thải Đình Vũ", 20.8449, 106.7747,
    )  # fmt: skip
    assert newest[water].loaded_ns > first[water].loaded_ns
    assert latest_station_metadata(warehouse.pg_conninfo)[air].loaded_ns == newest[water].loaded_ns  # one load
    stored = sql(warehouse.pg_conninfo, "SELECT parameters FROM station_metadata WHERE station = %s", (water,))
    assert stored == [('{"COD": 300.0}',), ('{"COD": 300.0}',)]

    # The registry's 300 s for COD makes an hour of 12 readings complete (the default 60 s would expect 60).
    hour_start = (time.time_ns() // H - 3) * H
    readings = tuple(
        Reading(hour_start + k * 300_000_000_000, "ww1", parameter, 80.0 + k, "mg/L", "00", "")
        for k in range(12)
        for parameter in ("COD", "TSS")
    )
    ww_key = write_new_key(tmp_path / "ww2.key")
    add_station(registry, water, ww_key.public_key)  # a second key, to sign with here
    body = BatchBody(water, 1, time.time_ns(), readings, False)
    time.sleep(0.2)
    wait_for_count(warehouse.pg_conninfo, ROWS, 6, params=(air, water))  # the key's edit: one more load
    publish_all(mosquitto_server.port, data_topic(water), [seal(body, ww_key.key_id, ww_key.private_key)])
    wait_for_count(warehouse.pg_conninfo, "SELECT count() FROM readings WHERE station = %s", 24, params=(water,))
    aggregator = Aggregator(
        warehouse.pg_conninfo,
        warehouse.ilp_conf,
        Settings(SettingsFile()),
        collector.registry.kinds,
        station_intervals=collector.registry.intervals,
        name=f"agg-{water}",
    )
    aggregator.start()
    aggregator.recompute({water: {hour_start + H}})  # the hour the collector's touched_hours row names
    means = sql(
        warehouse.pg_conninfo,
        "SELECT parameter, n_valid, n_expected, valid FROM hourly_means WHERE station = %s ORDER BY parameter",
        (water,),
    )
    assert means == [("COD", 12, 12, True), ("TSS", 12, 60, False)]
