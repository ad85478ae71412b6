"""A process that runs the TT10 sink and feeds it generated uploads, for the kill test.

    python -m tests.broker_bridge.tt10.ingest_feeder ROOT PORT BASE_NS PREFIX STATIONS CYCLES

Each file goes to ``IngestService.sink.take``; once ``take`` returned (what a source waits for before
it tells the station the file arrived) its name is appended to ROOT/taken.log. Restarted on the same
ROOT, it first hands over again the file whose ``take`` may not have returned (as a station re-sends
a file it got no answer for), then carries on; it keeps publishing until killed.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

from broker_bridge.keys import load_signing_key, write_new_key
from broker_bridge.session import BrokerAddress
from broker_bridge.tt10.ingest.service import IngestService
from broker_bridge.tt10.ingest.settings import IngestSettings
from tests.broker_bridge.tt10.ingest_helpers import cycle_file, upload

PARAMETERS = ("PM2,5", "PM10", "SO2", "NO2", "CO")


def station_ids(prefix: str, count: int) -> list[str]:
    return [f"{prefix}_{i:03d}" for i in range(count)]


def files(base_ns: int, prefix: str, stations: int, cycles: int) -> list[tuple[str, str, bytes]]:
    """(station, name, bytes) in upload order: every station's file of a cycle, cycle by cycle."""
    out = []
    for c in range(cycles):
        ts = base_ns + c * 300 * 10**9
        for s, station in enumerate(station_ids(prefix, stations)):
            values = {p: round(s + c + i / 10, 1) for i, p in enumerate(PARAMETERS)}
            name, data = cycle_file(station, ts, values)
            out.append((station, name, data))
    return out


def main(root: Path, port: int, base_ns: int, prefix: str, stations: int, cycles: int) -> None:
    key_path = root / "bridge.key"
    key = load_signing_key(key_path) if key_path.exists() else write_new_key(key_path)
    settings = IngestSettings(root=root, broker=BrokerAddress("127.0.0.1", port), client_id="tt10-kill-bridge")
    service = IngestService(settings, key)
    service.start()
    stop = threading.Event()
    threading.Thread(target=service.run, args=(stop,), daemon=True).start()
    log = root / "taken.log"
    taken = set(log.read_text().split()) if log.exists() else set()
    with log.open("a") as out:
        for station, name, data in files(base_ns, prefix, stations, cycles):
            if f"{station}/{name}" in taken:
                continue
            service.sink.take(upload(station, name, data))
            out.write(f"{station}/{name}\n")
            out.flush()
            time.sleep(0.01)
    print("fed", flush=True)
    while True:
        time.sleep(1)


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5]), int(sys.argv[6]))
