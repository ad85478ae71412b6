"""What station metadata costs: loading a national registry with and without it, copying it into
``station_metadata`` and reading the newest row per station back.

    .venv/bin/python bench/bench_station_metadata.py                  # 2,000 stations, 30 parameters each
    .venv/bin/python bench/bench_station_metadata.py --stations 200   # a reduced scale

The registry is written twice, the same stations and keys, once bare (keys only) and once with a name,
province code, facility, coordinates and 30 parameter intervals per station; each is loaded the way
the collector does (``StationRegistry``) ``--repeat`` times. Then a private QuestDB takes the copy
(``write_station_metadata``, one transaction) ``--repeat`` times, and ``latest_station_metadata``
reads it back. Medians.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from broker_bridge.keys import public_key_b64, write_new_key  # noqa: E402
from collector.registry import StationRegistry  # noqa: E402
from collector.station_metadata import metadata_of  # noqa: E402
from store.analysis_queries import wait_applied  # noqa: E402
from store.ilp_writer import WarehouseWriter  # noqa: E402
from store.questdb_server import QuestDBServer  # noqa: E402
from store.schema import STATION_METADATA, ensure_schema  # noqa: E402
from store.station_queries import latest_station_metadata, write_station_metadata  # noqa: E402
from vocabulary.parameters import REGULATION_SYMBOLS  # noqa: E402


def registry_doc(stations: int, parameters: int, key_b64: list[str], with_metadata: bool) -> dict:
    symbols = [*REGULATION_SYMBOLS, *(f"X{i:02d}" for i in range(parameters))][:parameters]
    out = {}
    for i in range(stations):
        entry: dict = {"enabled": True, "kind": "ambient_air", "keys": [{"public_key": key_b64[i % len(key_b64)]}]}
        if with_metadata:
            entry.update(
                name=f"Trạm quan trắc số {i} Nguyễn Văn Cừ",
                province_code="HN",
                facility="KCN Đình Vũ",
                latitude=21.0 + (i % 100) / 100,
                longitude=105.8 + (i % 50) / 100,
                parameters={s: {"interval_s": 60} for s in symbols},
            )
        out[f"ST{i:05d}"] = entry
    return {"stations": out}


def median_s(action, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        action()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--stations", type=int, default=2000)
    ap.add_argument("--parameters", type=int, default=30)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-station-metadata-"))
    keys = [public_key_b64(write_new_key(tmp / f"k{i}.key").public_key) for i in range(20)]
    loads = {}
    for label, with_metadata in (("keys only", False), ("with metadata", True)):
        path = tmp / f"registry-{with_metadata}.yaml"
        path.write_text(yaml.safe_dump(registry_doc(args.stations, args.parameters, keys, with_metadata)))
        loads[label] = (median_s(lambda p=path: StationRegistry(p), args.repeat), path.stat().st_size)
    for label, (seconds, size) in loads.items():
        print(f"registry load, {args.stations} stations, {label}: median {seconds:.3f} s ({size / 1e6:.1f} MB)")
    rows = metadata_of(StationRegistry(tmp / "registry-True.yaml").entries())
    qdb = QuestDBServer(tmp / "questdb")
    qdb.start()
    try:
        pg, ilp = qdb.endpoints.pg_conninfo, qdb.endpoints.ilp_conf
        ensure_schema(pg, (STATION_METADATA,))
        writer = WarehouseWriter(ilp)
        write = median_s(lambda: write_station_metadata(writer, time.time_ns(), rows), args.repeat)
        wait_applied(pg, [STATION_METADATA.name])
        read = median_s(lambda: latest_station_metadata(pg), args.repeat)
        got = latest_station_metadata(pg)
        assert len(got) == len(rows) and got[rows[0].station].intervals == rows[0].intervals
        print(f"copy into station_metadata ({len(rows)} rows, one transaction): median {write * 1000:.1f} ms")
        print(f"latest_station_metadata ({len(got)} stations, {args.repeat} loads stored): median {read * 1000:.1f} ms")
        writer.close()
    finally:
        qdb.stop()


if __name__ == "__main__":
    main()
