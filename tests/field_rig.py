"""Helpers for the field-transport tests: station files with serial devices on tmp paths,
and comparing an agent's readings with the simulator's ground truth."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import yaml

from station_profiles.loader import load_station
from station_profiles.profile_model import StationConfig


def rtu(device_id: str, profile: str, unit_id: int, port: Path | str, **kw: Any) -> dict[str, Any]:
    return {
        "id": device_id,
        "profile": profile,
        "transport": "modbus_rtu",
        "port": str(port),
        "baud": 19200,
        "parity": "N",
        "unit_id": unit_id,
        "timeout_s": 0.3,
        **kw,
    }


def ascii_device(device_id: str, profile: str, port: Path | str, **kw: Any) -> dict[str, Any]:
    return {
        "id": device_id,
        "profile": profile,
        "transport": "serial_ascii",
        "port": str(port),
        "baud": 9600,
        "parity": "N",
        "timeout_s": 0.4,
        **kw,
    }


def write_station(
    tmp: Path,
    devices: list[dict[str, Any]],
    *,
    station_id: str = "FIELD_01",
    kind: str = "ambient_air",
    poll_interval_s: float = 1.0,
    **extra: Any,
) -> Path:
    path = tmp / f"{station_id}.yaml"
    doc = {
        "station": {"id": station_id, "name": "field test", "kind": kind},
        "poll_interval_s": poll_interval_s,
        "devices": devices,
        **extra,
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def field_station(
    tmp: Path, devices: list[dict[str, Any]], profiles_dir: Path | None = None, **kw: Any
) -> StationConfig:
    return load_station(write_station(tmp, devices, **kw), profiles_dir)


def run(coro_fn: Callable[[], Awaitable[None]], timeout: float = 30) -> None:
    asyncio.run(asyncio.wait_for(coro_fn(), timeout=timeout))


def truth_for(reading: Any, truth: list[dict[str, Any]], t_end: int) -> dict[str, Any]:
    """The value the simulator served for this reading: the last one in its request window
    (a retried request is served twice; the reading holds the second)."""
    window = [
        e
        for e in truth
        if e["kind"] == "value"
        and e["device"] == reading.device
        and e["parameter"] == reading.parameter
        and reading.ts_ns <= e["t_ns"] <= t_end
    ]
    assert window, f"nothing served for {reading}"
    return window[-1]


def assert_matches_truth(readings: list[Any], truth: list[dict[str, Any]], t_end: int) -> None:
    for r in readings:
        e = truth_for(r, truth, t_end)
        assert (r.value, r.status, r.cause) == (e["value"], e["status"], e["cause"]), (r, e)
        if r.value is not None:
            assert isinstance(r.value, float) and math.isfinite(r.value)
