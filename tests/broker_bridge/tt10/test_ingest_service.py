"""The TT10 sink end to end: uploads in, signed batches through real Mosquitto and the real collector,
readings in the real QuestDB exactly once with their provenance; the file receipts in tt10_files."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from broker_bridge.envelope import BatchBody, Reading, seal
from broker_bridge.keys import write_new_key
from broker_bridge.session import BrokerAddress
from broker_bridge.topics import data_topic
from broker_bridge.tt10.ingest.service import IngestService
from broker_bridge.tt10.ingest.settings import IngestSettings
from collector.registry import add_station, bind_bridge
from supervisor.process import wait_until
from tests.broker_bridge.tt10.ingest_helpers import cycle_file, fixture_bytes, upload
from tests.helpers import publish_all, sql, unique_station, wait_for_count

T0 = 1774371900 * 10**9  # the fixtures' 20260325000500 in Vietnam: 2026-03-24T17:05:00Z


@pytest.fixture
def bridge(tmp_path: Path, mosquitto_server, make_collector, warehouse):
    station = unique_station("TT10")
    registry = tmp_path / "registry.yaml"
    own = write_new_key(tmp_path / "station.key")  # the station's own key (it has no agent: unused)
    add_station(registry, station, own.public_key, kind="ambient_air")
    key = write_new_key(tmp_path / "bridge.key")
    bind_bridge(registry, "tt10-hn", key.public_key, [station])
    make_collector(mosquitto_server.port, registry, f"collector-{station}")
    settings = IngestSettings(
        root=tmp_path / "bridge",
        broker=BrokerAddress("127.0.0.1", mosquitto_server.port),
        client_id=f"tt10-bridge-{station}",
        ilp_conf=warehouse.ilp_conf,
        hold_s=3600,
    )
    service = IngestService(settings, key)
    stop = threading.Event()
    service.start()
    worker = threading.Thread(target=service.run, args=(stop,), daemon=True)
    worker.start()
    assert service.connected.wait(10)
    yield station, service, warehouse.pg_conninfo, registry, tmp_path
    stop.set()
    worker.join(10)
    service.stop()


def readings(pg, station):
    return sql(
        pg,
        "SELECT ts, device, parameter, value, unit, status, source, file_sha256 FROM readings"
        " WHERE station = %s ORDER BY parameter",
        (station,),
    )


def files(pg, station):
    return sql(
        pg, "SELECT upload, state, readings, refused, reasons FROM tt10_files WHERE station = %s ORDER BY upload",
        (station,),
    )  # fmt: skip


def test_readings_arrive_once_with_values_utc_times_status_and_provenance(bridge):
    station, service, pg, _, _ = bridge
    name, data = fixture_bytes("canonical")
    service.sink.take(upload(station, name, data))
    wait_for_count(pg, "SELECT count() FROM readings WHERE station = %s", 4, params=(station,))
    rows = readings(pg, station)
    sha = service.ledger.files()[0].sha256
    assert [(r[2], r[3], r[4], r[5], r[6], r[7]) for r in rows] == [
        ("CO", None, "mg/m3", "02", "tt10", sha),
        ("PM10", 41.0, "ug/m3", "00", "tt10", sha),
        ("PM2,5", 23.4, "ug/m3", "00", "tt10", sha),
        ("SO2", 12.5, "ug/m3", "01", "tt10", sha),
    ]
    assert {r[0].isoformat() for r in rows} == {"2026-03-24T17:05:00"} and {r[1] for r in rows} == {"tt10"}
    # the same bytes again: recorded as a duplicate, nothing sent twice
    service.sink.take(upload(station, name, data))
    wait_until(lambda: len(files(pg, station)) == 2, timeout=20, what="two receipts")
    assert [f[1] for f in files(pg, station)] == ["accepted", "duplicate"]
    assert sql(pg, "SELECT count() FROM batches WHERE station = %s", (station,))[0][0] == 1
    assert len(readings(pg, station)) == 4


def test_a_cut_upload_is_held_not_stored_then_the_whole_one_stored_once(bridge):
    station, service, pg, _, _ = bridge
    name, whole = fixture_bytes("canonical")
    service.sink.take(upload(station, name, whole[: whole.index(b"SO2") + 7]))  # cut inside the SO2 line
    wait_until(lambda: [f[1] for f in files(pg, station)] == ["held"], timeout=20, what="the held receipt")
    assert readings(pg, station) == []  # nothing of the cut file is stored
    service.sink.take(upload(station, name, whole))
    wait_for_count(pg, "SELECT count() FROM readings WHERE station = %s", 4, params=(station,))
    wait_until(lambda: [f[1] for f in files(pg, station)] == ["superseded", "accepted"], timeout=20, what="receipts")
    assert len(readings(pg, station)) == 4
    assert sql(pg, "SELECT count() FROM batches WHERE station = %s", (station,))[0][0] == 1


def test_a_changed_value_is_a_revision_and_refused_lines_have_their_reasons(bridge):
    station, service, pg, _, _ = bridge
    name, first = cycle_file("HN_BKHN_KHIKXQ", T0, {"PM10": 41.0, "SO2": 12.5})
    service.sink.take(upload(station, name, first))
    wait_for_count(pg, "SELECT count() FROM readings WHERE station = %s", 2, params=(station,))
    # an overlapping file: PM10 again with another value, SO2 the same, and a line with status 03
    second = first.replace(b"41.0", b"44.5") + b"NO2\t18.2\tug/m3\t20260325000500\t03\r\n"
    service.sink.take(upload(station, name.replace("000500", "000501"), second))
    wait_for_count(pg, "SELECT count() FROM reading_revisions WHERE station = %s", 1, params=(station,))
    old, new = sql(pg, "SELECT old_value, new_value FROM reading_revisions WHERE station = %s", (station,))[0]
    assert (old, new) == (41.0, 44.5)
    assert {r[2]: r[3] for r in readings(pg, station)} == {"PM10": 44.5, "SO2": 12.5}
    wait_until(lambda: len(files(pg, station)) == 2, timeout=20, what="two receipts")
    _, state, taken, refused, reasons = files(pg, station)[1]
    assert (state, taken, refused) == ("accepted", 2, 1)
    assert "line 3:" in reasons and "'03' is not a TT10 status code" in reasons


def test_a_refused_file_has_its_receipt_with_reasons(bridge):
    station, service, pg, _, _ = bridge
    service.sink.take(upload(station, "HN_BKHN_KHIKXQ_20260325000500.txt", "PM10\t41".encode("utf-16")))
    wait_until(lambda: files(pg, station), timeout=20, what="the receipt")
    (_, state, taken, _, reasons), = files(pg, station)  # fmt: skip
    assert (state, taken) == ("refused", 0) and "UTF-16" in reasons


def test_a_bridge_not_bound_to_the_station_is_rejected(bridge, mosquitto_server):
    station, service, pg, registry, tmp_path = bridge
    other = unique_station("TT10")
    add_station(registry, other, write_new_key(tmp_path / "other.key").public_key)
    stranger = write_new_key(tmp_path / "stranger.key")
    bind_bridge(registry, "tt10-elsewhere", stranger.public_key, [other])
    time.sleep(0.05)  # a new mtime for the collector's reload
    reading = Reading(T0, "tt10", "PM10", 41.0, "ug/m3", "00")
    forged = seal(BatchBody(station, 1, time.time_ns(), (reading,), source="tt10", file_sha256="ab" * 32),
                  stranger.key_id, stranger.private_key)  # fmt: skip
    publish_all(mosquitto_server.port, data_topic(station), [forged])
    wait_for_count(pg, "SELECT count() FROM rejects WHERE claimed_station = %s", 1, params=(station,))
    reason, detail = sql(pg, "SELECT reason, detail FROM rejects WHERE claimed_station = %s", (station,))[0]
    assert reason == "bridge_not_bound" and "tt10-elsewhere" in detail
    assert readings(pg, station) == []


def test_the_bridge_learns_the_warehouse_receipts_of_what_it_sent(
    tmp_path, mosquitto_server, make_collector, warehouse
):
    """With the collector's key the bridge keeps each batch until a receipt covers it, as an agent does."""
    import sqlite3

    from broker_bridge.envelope import verifier
    from edge_agent.outbox import RetentionPolicy

    station = unique_station("TT10R")
    registry = tmp_path / "registry.yaml"
    add_station(registry, station, write_new_key(tmp_path / "station.key").public_key)
    key = write_new_key(tmp_path / "bridge.key")
    bind_bridge(registry, "tt10-r", key.public_key, [station])
    collector_key = write_new_key(tmp_path / "collector.key")
    make_collector(mosquitto_server.port, registry, f"collector-{station}", receipt_key=collector_key)
    settings = IngestSettings(
        root=tmp_path / "bridge",
        broker=BrokerAddress("127.0.0.1", mosquitto_server.port),
        client_id=f"tt10-bridge-{station}",
        receipt_keys={collector_key.key_id: verifier(collector_key.public_key)},
        outbox_retention=RetentionPolicy(require_receipts=True),
    )
    service = IngestService(settings, key)
    stop = threading.Event()
    service.start()
    worker = threading.Thread(target=service.run, args=(stop,), daemon=True)
    worker.start()
    try:
        assert service.connected.wait(10)
        name, data = fixture_bytes("canonical")
        service.sink.take(upload(station, name, data))
        outbox = settings.outbox_dir / f"{station}.sqlite"

        def receipted():
            if not outbox.exists():
                return None
            with sqlite3.connect(outbox) as db:
                acked, covered = db.execute("SELECT count(acked_ns), count(receipted_ns) FROM batches").fetchone()
            return covered if covered and covered == acked else None

        assert wait_until(receipted, timeout=30, what="the bridge's batch receipted") == 1
        assert wait_for_count(warehouse.pg_conninfo, "SELECT count() FROM readings WHERE station = %s", 4,
                              params=(station,)) == 4  # fmt: skip
    finally:
        stop.set()
        worker.join(10)
        service.stop()
