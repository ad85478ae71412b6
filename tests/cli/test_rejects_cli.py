"""`quantrac rejects list|export` (cli/rejects.py) over rejects a real collector wrote into the real QuestDB."""

from __future__ import annotations

import base64
import csv
import hashlib
import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker_bridge.envelope import BatchBody, Reading, seal
from broker_bridge.keys import key_id, write_new_key
from broker_bridge.topics import data_topic, status_topic
from cli.rejects import EXPORT_FIELDS, RejectsError, export_rejects, list_rejects, parse_when
from collector.registry import add_station
from tests.helpers import publish_all, unique_station, wait_for_count


@pytest.fixture
def refused(tmp_path, mosquitto_server, make_collector, warehouse):
    """One station's refused messages of four kinds, stored by a real collector: (station, {payload: reason})."""
    station = unique_station("REJ")
    key = write_new_key(tmp_path / "k.key")
    registry = tmp_path / "registry.yaml"
    add_station(registry, station, key.public_key)
    make_collector(mosquitto_server.port, registry, f"c-{station}")
    now = time.time_ns()
    stranger = Ed25519PrivateKey.generate()
    body = BatchBody(station, 1, now, (Reading(now, "dev1", "SO2", 1.0, "ug/m3", "00", ""),))
    good = seal(body, key.key_id, key.private_key)
    flipped = bytearray(good)
    flipped[-1] ^= 1
    payloads = {
        b"\xc1 not msgpack": "undecodable",
        bytes(flipped): "bad_signature",
        seal(body, key_id(stranger.public_key()), stranger): "unknown_key",
        # its detail holds commas and quotes: the CSV must quote them
        seal(
            BatchBody(station, 2, now, (Reading(now, "dev1", "SO2", 1.0, "ug/m3", "07", ""),)),
            key.key_id,
            key.private_key,
        ): "schema",
    }
    publish_all(mosquitto_server.port, data_topic(station), list(payloads))
    publish_all(mosquitto_server.port, status_topic(station), [b"\xff\xfe not json"])
    payloads[b"\xff\xfe not json"] = "undecodable"
    wait_for_count(
        warehouse.pg_conninfo,
        "SELECT count() FROM rejects WHERE claimed_station = %s",
        len(payloads),
        params=(station,),
    )
    return station, payloads


def test_list_shows_the_newest_rejects_as_one_line_each(refused, warehouse):
    station, payloads = refused
    lines: list[str] = []
    rows = list_rejects(warehouse.pg_conninfo, station=station, echo=lines.append)
    assert sorted(r.reason for r in rows) == sorted(payloads.values())
    assert [r.received_ns for r in rows] == sorted((r.received_ns for r in rows), reverse=True)
    assert lines[0].split()[:3] == ["time", "(UTC)", "station"]
    assert len(lines) == len(payloads) + 2  # header, one line per reject, a summary
    for row, line in zip(rows, lines[1:]):
        assert station in line and row.reason in line and row.payload_sha256[:12] in line
        assert row.payload_b64 is None  # listing leaves the payloads in QuestDB

    lines.clear()
    assert [
        r.reason
        for r in list_rejects(warehouse.pg_conninfo, station=station, reason="bad_signature", echo=lines.append)
    ] == ["bad_signature"]
    newest = list_rejects(warehouse.pg_conninfo, station=station, limit=2, echo=lines.append)
    assert [r.received_ns for r in newest] == [r.received_ns for r in rows[:2]]
    lines.clear()
    assert list_rejects(warehouse.pg_conninfo, station=station, since="2999-01-01", echo=lines.append) == []
    assert lines == ["no rejects match"]
    assert len(list_rejects(warehouse.pg_conninfo, station=station, since="1h", echo=lines.append)) == len(payloads)


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_export_writes_every_field_and_the_exact_payload(refused, warehouse, tmp_path, fmt):
    station, payloads = refused
    out = tmp_path / f"rejects.{fmt}"
    assert export_rejects(warehouse.pg_conninfo, out, format=fmt, station=station) == len(payloads)
    with out.open(newline="") as fh:
        rows = list(csv.DictReader(fh)) if fmt == "csv" else [json.loads(line) for line in fh]
    assert not list(tmp_path.glob(".*.partial"))
    assert [list(r) for r in rows] == [list(EXPORT_FIELDS)] * len(payloads)
    by_payload = {base64.b64decode(r["payload_b64"]): r for r in rows}
    assert set(by_payload) == set(payloads)
    for payload, row in by_payload.items():
        assert row["reason"] == payloads[payload] and row["claimed_station"] == station
        assert row["payload_sha256"] == hashlib.sha256(payload).hexdigest()
        assert row["detail"] and row["topic"] in (data_topic(station), status_topic(station))
        at = datetime.fromisoformat(row["received_at"])
        epoch = datetime(1970, 1, 1, tzinfo=UTC)
        assert (at - epoch) // timedelta(microseconds=1) == int(row["received_ns"]) // 1000  # the same instant, in UTC
    assert [int(r["received_ns"]) for r in rows] == sorted(int(r["received_ns"]) for r in rows)  # oldest first
    listed = {
        r.payload_sha256: r.detail for r in list_rejects(warehouse.pg_conninfo, station=station, echo=lambda _: None)
    }
    assert {r["payload_sha256"]: r["detail"] for r in rows} == listed
    assert any("," in r["detail"] and "'" in r["detail"] for r in rows)


def test_export_filters_and_refuses_bad_arguments(refused, warehouse, tmp_path):
    station, payloads = refused
    out = tmp_path / "some.jsonl"
    undecodable = sum(1 for r in payloads.values() if r == "undecodable")
    assert export_rejects(warehouse.pg_conninfo, out, station=station, reason="undecodable") == undecodable
    assert export_rejects(warehouse.pg_conninfo, out, station=station, until="2000-01-01T00:00:00") == 0
    assert out.read_text() == ""
    with pytest.raises(RejectsError, match="format"):
        export_rejects(warehouse.pg_conninfo, out, format="xml")
    with pytest.raises(RejectsError, match="ISO 8601"):
        export_rejects(warehouse.pg_conninfo, out, since="yesterday")
    with pytest.raises(RejectsError, match="cannot read rejects"):
        list_rejects("host=127.0.0.1 port=1 user=admin password=quest dbname=qdb connect_timeout=2")


def test_time_filters_read_iso_times_and_ages_in_utc():
    now = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    assert parse_when("30m", now) == now - timedelta(minutes=30)
    assert parse_when("7d", now) == now - timedelta(days=7)
    assert parse_when("1.5h", now) == now - timedelta(hours=1.5)
    assert parse_when("2026-05-01T08:00:00") == datetime(2026, 5, 1, 8, tzinfo=UTC)
    assert parse_when("2026-05-01T08:00:00+07:00") == datetime(2026, 5, 1, 1, tzinfo=UTC)
    assert parse_when(None) is None
    with pytest.raises(RejectsError):
        parse_when("5 parsecs")
