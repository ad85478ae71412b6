"""The API's test rig: the real server (uvicorn in a thread, on a free port) over the session's QuestDB,
and stations whose signed batches go through Mosquitto and the collector like any station's."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from api import keys
from api.app import ApiConfig
from api.server import make_server
from broker_bridge.envelope import BatchBody, Reading, seal
from broker_bridge.keys import write_new_key
from broker_bridge.topics import data_topic
from collector.registry import add_station
from store.ilp_writer import WarehouseWriter, ilp_row
from store.schema import STATION_METADATA
from supervisor import free_port
from tests.helpers import publish_all, unique_station, wait_for_count

M = 60_000_000_000
H = 60 * M


@dataclass
class Api:
    base: str
    keys_path: Path
    key: str  # an agency's key, 600 requests a minute

    def get(self, path: str, key: str | None = None, **params) -> httpx.Response:
        headers = {"X-API-Key": key} if key is not None else {}
        return httpx.get(self.base + path, params=params, headers=headers, timeout=30)

    def walk(
        self, path: str, key: str | None = None, between_pages: Callable[[int, dict], None] | None = None, **params
    ):
        """Every row of a paged endpoint, page after page; ``between_pages(n, page)`` runs after page n."""
        rows, cursor, n = [], None, 0
        while True:
            asked = dict(params) if cursor is None else {"cursor": cursor, "limit": params.get("limit", 1000)}
            page = self.get(path, key, **asked)
            assert page.status_code == 200, page.text
            body = page.json()
            rows += body["data"]
            n += 1
            cursor = body["next_cursor"]
            if cursor is None:
                return rows, n
            if between_pages is not None:
                between_pages(n, body)


def start_api(conninfo: str, keys_path: Path, public_rate: int = 6000, **config) -> tuple[str, Callable[[], None]]:
    """The real server in a thread; ``config``: further ApiConfig fields (e.g. offline_grace_s)."""
    port = free_port()
    server = make_server(ApiConfig(conninfo, keys_path, public_rate, **config), "127.0.0.1", port)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the API server did not start"
        time.sleep(0.05)

    def stop() -> None:
        server.should_exit = True
        thread.join(10)

    return f"http://127.0.0.1:{port}", stop


@pytest.fixture
def api(warehouse, tmp_path) -> Iterator[Api]:
    keys_path = tmp_path / "api-keys.json"
    _, secret = keys.add(keys_path, "test agency", 6000)
    base, stop = start_api(warehouse.pg_conninfo, keys_path)
    yield Api(base, keys_path, secret)
    stop()


class StationFeed:
    """One registered station publishing signed batches through the broker to the collector."""

    def __init__(self, warehouse, port: int, tmp_path: Path, make_collector, prefix: str = "API") -> None:
        self.warehouse, self.port = warehouse, port
        self.sid = unique_station(prefix)
        self.key = write_new_key(tmp_path / f"{self.sid}.key")
        self.registry = tmp_path / "registry.yaml"
        add_station(self.registry, self.sid, self.key.public_key, kind="ambient_air")
        self.collector = make_collector(port, self.registry, f"c-{self.sid}")
        self.seq = 0
        self.sent = 0

    def send(self, readings: list[Reading], per_batch: int = 500, wait: bool = True) -> None:
        payloads = []
        for i in range(0, len(readings), per_batch):
            self.seq += 1
            body = BatchBody(self.sid, self.seq, time.time_ns(), tuple(readings[i : i + per_batch]))
            payloads.append(seal(body, self.key.key_id, self.key.private_key))
        publish_all(self.port, data_topic(self.sid), payloads, timeout=60)
        self.sent += len(readings)
        if wait:
            wait_for_count(
                self.warehouse.pg_conninfo,
                "SELECT count() FROM readings WHERE station = %s",
                self.sent,
                timeout=120,
                params=(self.sid,),
            )

    def describe(
        self,
        province: str,
        name: str = "Trạm quan trắc thử",
        parameters: dict | None = None,
        station: str | None = None,
    ) -> None:
        """The registry's description, as the collector will write it (station_metadata); of this feed's
        station, or of ``station`` (one that sends nothing)."""
        import json

        station = station or self.sid
        writer = WarehouseWriter(self.warehouse.ilp_conf)
        try:
            writer.write_rows(
                STATION_METADATA,
                [
                    ilp_row(
                        STATION_METADATA,
                        time.time_ns(),
                        station=station,
                        name=name,
                        province_code=province,
                        facility="",
                        kind="ambient_air",
                        latitude=21.0285,
                        longitude=105.8542,
                        enabled=True,
                        parameters=json.dumps(parameters or {"PM10": 60}),
                    )
                ],
            )
        finally:
            writer.close()
        wait_for_count(
            self.warehouse.pg_conninfo, "SELECT count() FROM station_metadata WHERE station = %s", 1, params=(station,)
        )


@pytest.fixture
def feed(warehouse, mosquitto_server, tmp_path, make_collector) -> StationFeed:
    return StationFeed(warehouse, mosquitto_server.port, tmp_path, make_collector)


def utc_ns(text: str) -> int:
    """The test's own reading of an API time (``...Z``, up to 9 fraction digits) as UTC nanoseconds."""
    assert text.endswith("Z"), text
    whole, _, fraction = text[:-1].partition(".")
    seconds = int(dt.datetime.fromisoformat(whole).replace(tzinfo=dt.UTC).timestamp())
    return seconds * 1_000_000_000 + int((fraction or "0").ljust(9, "0"))


def check_moment(m: dict) -> int:
    """Both spellings of an API time name the same instant; returns it in ns."""
    ns = utc_ns(m["utc"])
    assert m["local"].endswith("+07:00")
    local = dt.datetime.fromisoformat(m["local"][:19]).replace(tzinfo=dt.timezone(dt.timedelta(hours=7)))
    assert int(local.timestamp()) == ns // 1_000_000_000, m
    return ns


def iso(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).isoformat().replace("+00:00", "Z")
