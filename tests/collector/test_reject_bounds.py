"""Every rejected payload stored within bounds: its first 64 KiB, size and SHA-256 in QuestDB, its
whole bytes in the payload store (``--reject-store``), durably before the message is acknowledged.

Real Mosquitto (no message size limit: the collector must not depend on the broker's), the real
collector, the real QuestDB, and ``quantrac rejects list|export`` over what they wrote.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import time

import pytest

from broker_bridge.keys import write_new_key
from broker_bridge.topics import data_topic
from cli.rejects import export_rejects, list_rejects
from collector.registry import add_station
from store.ilp_writer import RejectRow, WarehouseWriter
from store.payload_store import REJECT_HEAD_BYTES, PayloadStore
from tests.helpers import publish_all, sql, unique_station, wait_for_count


@pytest.mark.slow  # 80 MB through the collector into the payload store (~11 s)
def test_an_80_mb_reject_is_kept_whole_in_the_store_and_bounded_in_questdb(
    tmp_path, mosquitto_server, make_collector, warehouse
):
    station = unique_station("BIG")
    key = write_new_key(tmp_path / "k.key")
    registry = tmp_path / "registry.yaml"
    add_station(registry, station, key.public_key)
    store_dir = tmp_path / "reject-store"
    collector = make_collector(mosquitto_server.port, registry, f"c-{station}", reject_store=str(store_dir))
    huge = os.urandom(80 * 1024 * 1024)  # before: a 106 MB request QuestDB refused, and a crash loop
    small = b"\xc1 small garbage"
    publish_all(mosquitto_server.port, data_topic(station), [huge, small], timeout=120)
    wait_for_count(
        warehouse.pg_conninfo,
        "SELECT count() FROM rejects WHERE claimed_station = %s",
        2,
        timeout=120,
        params=(station,),
    )
    assert collector.connected.is_set()

    rows = {
        sha: (size, stored, length, reason)
        for sha, size, stored, length, reason in sql(
            warehouse.pg_conninfo,
            "SELECT payload_sha256, payload_size, payload_stored, length(payload_b64), reason FROM rejects"
            " WHERE claimed_station = %s",
            (station,),
        )
    }
    huge_sha, small_sha = hashlib.sha256(huge).hexdigest(), hashlib.sha256(small).hexdigest()
    assert rows[huge_sha] == (len(huge), True, len(base64.b64encode(huge[:REJECT_HEAD_BYTES])), "oversized")
    assert rows[small_sha][:3] == (len(small), False, len(base64.b64encode(small)))
    stored = store_dir / huge_sha
    assert stored.read_bytes() == huge and not (store_dir / small_sha).exists()
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600 and stat.S_IMODE(store_dir.stat().st_mode) == 0o700
    assert not list(store_dir.glob(".*.partial"))

    lines: list[str] = []
    listed = {r.payload_sha256: r for r in list_rejects(warehouse.pg_conninfo, station=station, echo=lines.append)}
    assert listed[huge_sha].payload_stored and listed[huge_sha].payload_size == len(huge)
    assert any(huge_sha[:12] in line and f"{len(huge)} B store" in line for line in lines)
    assert any(small_sha[:12] in line and f"{len(small)} B in row" in line for line in lines)

    # Without the store: the row's first 64 KiB, said so; with it: the whole bytes, streamed.
    out = tmp_path / "heads.jsonl"
    assert export_rejects(warehouse.pg_conninfo, out, station=station) == 2
    heads = {r["payload_sha256"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert base64.b64decode(heads[huge_sha]["payload_b64"]) == huge[:REJECT_HEAD_BYTES]
    assert heads[huge_sha]["payload_whole"] is False and heads[huge_sha]["payload_stored"] is True
    assert base64.b64decode(heads[small_sha]["payload_b64"]) == small and heads[small_sha]["payload_whole"] is True
    for fmt in ("jsonl", "csv"):
        whole = tmp_path / f"whole.{fmt}"
        assert export_rejects(warehouse.pg_conninfo, whole, format=fmt, station=station, payload_store=store_dir) == 2
        text = whole.read_text()
        assert base64.b64encode(huge).decode() in text and base64.b64encode(small).decode() in text
    rows = [json.loads(line) for line in (tmp_path / "whole.jsonl").read_text().splitlines()]
    assert {r["payload_sha256"]: r["payload_whole"] for r in rows} == {huge_sha: True, small_sha: True}


def test_the_store_writes_once_per_content_and_only_whole_files(tmp_path):
    store = PayloadStore(tmp_path / "s")
    payload = os.urandom(REJECT_HEAD_BYTES + 1)
    sha = store.put(payload)
    first = (tmp_path / "s" / sha).stat()
    assert store.put(payload) == sha and (tmp_path / "s" / sha).stat().st_mtime_ns == first.st_mtime_ns
    assert b"".join(store.read_chunks(sha, 1000)) == payload
    assert RejectRow.of(1, "t", "", "r", "d", payload).truncated
    assert not RejectRow.of(1, "t", "", "r", "d", payload[:REJECT_HEAD_BYTES]).truncated


def test_export_reads_a_reject_stored_whole_before_payloads_were_bounded(tmp_path, warehouse):
    """A row of 1.4 MB of base64 (a 1 MiB payload, as rows were before) overflows QuestDB's 1 MiB PG send
    buffer: the export read it in one piece and failed for the whole selection."""
    station = unique_station("OLD")
    payload = os.urandom(1024 * 1024)
    legacy = RejectRow(
        received_ns=time.time_ns(),
        topic=data_topic(station),
        claimed_station=station,
        reason="oversized",
        detail="from before",
        payload_sha256=hashlib.sha256(payload).hexdigest(),
        payload_b64=base64.b64encode(payload).decode(),
        payload_size=len(payload),
    )
    writer = WarehouseWriter(warehouse.ilp_conf)
    try:
        assert writer.write_rejects([legacy]) == 1
    finally:
        writer.close()
    wait_for_count(
        warehouse.pg_conninfo, "SELECT count() FROM rejects WHERE claimed_station = %s", 1, params=(station,)
    )
    out = tmp_path / "legacy.jsonl"
    assert export_rejects(warehouse.pg_conninfo, out, station=station) == 1
    (row,) = map(json.loads, out.read_text().splitlines())
    assert base64.b64decode(row["payload_b64"]) == payload
