"""Uploads for the ingest sink's tests: from the codec's fixture files, or written with the codec."""

from __future__ import annotations

import time
from pathlib import Path

from broker_bridge.envelope import Reading
from broker_bridge.tt10 import write_file
from broker_bridge.tt10.sources.upload import Upload

FIXTURES = Path(__file__).parent / "tt10_fixtures"


def fixture_bytes(variation: str) -> tuple[str, bytes]:
    (path,) = (FIXTURES / variation).iterdir()
    return path.name, path.read_bytes()


def upload(station: str, name: str, data: bytes, *, interrupted: bool = False, transport: str = "ftp") -> Upload:
    return Upload(
        account=f"acct-{station}",
        station=station,
        name=name,
        path=f"/{name}",
        data=data,
        received_ns=time.time_ns(),
        transport=transport,
        peer="127.0.0.1:40000",
        interrupted=interrupted,
    )


def cycle_file(prefix: str, ts_ns: int, values: dict[str, float | None], status: str = "00") -> tuple[str, bytes]:
    """A canonical TT10 file of one cycle: one line per parameter at ``ts_ns`` (UTC, whole seconds)."""
    readings = [
        Reading(ts_ns, "x", parameter, value, "ug/m3", "02" if value is None else status)
        for parameter, value in values.items()
    ]
    return write_file(prefix, ts_ns, readings)
