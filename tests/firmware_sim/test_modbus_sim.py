"""firmware_sim.modbus_tcp against independent masters, and ModbusTcpSource against the simulator.

No mocks: real TCP sockets on free loopback ports. The simulator is read by
(a) pymodbus's own client with its own converter, (b) Debian's mbpoll, and
(c) the project's ModbusTcpSource; each is compared with the ground-truth log.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from pymodbus.client import AsyncModbusTcpClient, ModbusTcpClient

from edge_agent.sources import make_source, sources_for_station
from edge_agent.sources.modbus_tcp import ModbusTcpSource
from firmware_sim.analyzer import read_truth
from firmware_sim.station import StationSimulator
from station_profiles.loader import STATIONS_DIR, load_station
from station_profiles.profile_model import AnalyzerProfile, StationConfig
from tests.helpers import require_tool

REPO = Path(__file__).resolve().parents[2]
DEVICE = {"demo_air_01.yaml": "aqms1", "demo_ww_01.yaml": "wq1", "demo_stack_01.yaml": "cems1"}

# The demo maps written out by hand (wire addresses, word orders), so the
# independent masters do not depend on the project's loader.
F32 = ModbusTcpClient.DATATYPE.FLOAT32
MAPS: dict[str, dict[str, Any]] = {
    "demo_air_01.yaml": {
        "fc": "input",
        "params": ["PM2,5", "PM10", "SO2", "NO2", "CO", "O3"],
        "orders": ["big"] * 6,
        "status": 100,
    },
    "demo_ww_01.yaml": {
        "fc": "holding",
        "params": ["pH", "COD", "TSS", "NH4", "Temp", "Flow"],
        "orders": ["big"] * 6,
        "status": None,
    },
    "demo_stack_01.yaml": {
        "fc": "holding",
        "params": ["PM", "SO2", "NOx", "CO", "O2", "Temp", "Flow"],
        "orders": ["big", "little", "little", "little", "little", "big", "big"],  # ABCD, CDAB x4, ABCD x2
        "status": 100,
    },
}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def station_on_free_port(fname: str) -> StationConfig:
    return load_station(STATIONS_DIR / fname).with_port_overrides({DEVICE[fname]: free_port()})


def run(coro_fn: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(coro_fn(), timeout=30))


def values_between(truth: list[dict[str, Any]], t0: int, t1: int) -> list[dict[str, Any]]:
    return [e for e in truth if e["kind"] == "value" and t0 <= e["t_ns"] <= t1]


# --------------------------------------------------------------------------- #
# (a) pymodbus's own client and converter
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("fname", list(MAPS))
def test_pymodbus_client_reads_what_the_truth_log_says(fname: str, tmp_path: Path) -> None:
    station = station_on_free_port(fname)
    truth_path = tmp_path / "truth.jsonl"
    m = MAPS[fname]
    port = station.devices[0].port

    async def main() -> None:
        async with StationSimulator(station, truth_path):
            client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2, retries=0)
            assert await client.connect()
            read = client.read_input_registers if m["fc"] == "input" else client.read_holding_registers
            for _ in range(3):  # values change from one read to the next
                t0 = time.time_ns()
                reply = await read(0, count=2 * len(m["params"]), device_id=1)
                t1 = time.time_ns()
                assert not reply.isError()
                decoded = [
                    client.convert_from_registers(reply.registers[2 * i : 2 * i + 2], F32, word_order=order)
                    for i, order in enumerate(m["orders"])
                ]
                logged = values_between(read_truth(truth_path), t0, t1)
                assert [e["parameter"] for e in logged] == m["params"]
                assert [e["value"] for e in logged] == decoded  # exact: the log holds what was served
                assert all(e["status"] == "00" and e["device"] == DEVICE[fname] and e["unit_id"] == 1 for e in logged)
            if m["status"] is not None:
                t0 = time.time_ns()
                reply = await read(m["status"], count=1, device_id=1)
                (entry,) = [e for e in read_truth(truth_path) if e["kind"] == "status" and e["t_ns"] >= t0]
                assert reply.registers == [entry["raw"]] == [0] and entry["status"] == "00"
            # half a float is not a served value: not refreshed, not logged
            before = len(read_truth(truth_path))
            reply = await read(1, count=2, device_id=1)
            assert not reply.isError()
            assert len(read_truth(truth_path)) == before
            # undefined addresses and writes answer exception 2; unknown units exception 11
            reply = await read(2 * len(m["params"]), count=1, device_id=1)
            assert reply.isError() and reply.exception_code == 2
            reply = await client.write_register(0, 1, device_id=1)
            assert reply.isError() and reply.exception_code in (1, 2)
            reply = await read(0, count=2, device_id=9)
            assert reply.isError() and reply.exception_code == 11
            client.close()

    run(main)


def test_values_are_plausible_and_change(tmp_path: Path) -> None:
    station = station_on_free_port("demo_air_01.yaml")
    truth_path = tmp_path / "truth.jsonl"

    async def main() -> None:
        async with StationSimulator(station, truth_path):
            client = AsyncModbusTcpClient("127.0.0.1", port=station.devices[0].port, timeout=2, retries=0)
            await client.connect()
            for _ in range(10):
                await client.read_input_registers(0, count=12, device_id=1)
            client.close()

    run(main)
    truth = read_truth(truth_path)
    by_param: dict[str, list[float]] = {}
    for e in truth:
        by_param.setdefault(e["parameter"], []).append(e["value"])
    assert len(set(by_param["PM2,5"])) > 1
    assert all(2.0 <= v < 200 for v in by_param["PM2,5"])
    assert all(200.0 <= v < 5000 for v in by_param["CO"])  # ug/m3


# --------------------------------------------------------------------------- #
# (b) Debian's mbpoll
# --------------------------------------------------------------------------- #


async def mbpoll(*args: str) -> dict[int, str]:
    proc = await asyncio.create_subprocess_exec(
        require_tool("mbpoll", package="mbpoll"), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, (out + err).decode()
    return {int(m.group(1)): m.group(2) for m in re.finditer(r"^\[(\d+)\]:\s+(\S+)\s*$", out.decode(), re.M)}


def test_mbpoll_reads_what_the_truth_log_says(tmp_path: Path) -> None:
    """mbpoll: -r is 1-based unless -0; floats are little-endian words (CDAB) unless -B (ABCD).
    It prints 6 significant digits (%g), so the log's values are compared through format(v, "g")."""
    air, ww, stack = (station_on_free_port(f) for f in ("demo_air_01.yaml", "demo_ww_01.yaml", "demo_stack_01.yaml"))
    truth_path = tmp_path / "truth.jsonl"

    async def check(station: StationConfig, args: list[str], params: list[str]) -> None:
        port = str(station.devices[0].port)
        t0 = time.time_ns()
        got = await mbpoll("-m", "tcp", "-p", port, "-a", "1", "-1", "-o", "2", *args, "127.0.0.1")
        t1 = time.time_ns()
        logged = [e for e in values_between(read_truth(truth_path), t0, t1) if e["device"] == station.devices[0].id]
        assert [e["parameter"] for e in logged] == params
        assert list(got.values()) == [format(e["value"], "g") for e in logged]
        return got

    async def main() -> None:
        sims = [StationSimulator(s, truth_path) for s in (air, ww, stack)]
        for s in sims:
            await s.start()
        try:
            # air: input registers, ABCD, 0-based reference
            got = await check(
                air, ["-t", "3:float", "-B", "-0", "-r", "0", "-c", "6"], ["PM2,5", "PM10", "SO2", "NO2", "CO", "O3"]
            )
            assert list(got) == [0, 2, 4, 6, 8, 10]
            # wastewater: holding registers, ABCD, 1-based reference (register 1 = PDU address 0)
            got = await check(
                ww, ["-t", "4:float", "-B", "-r", "1", "-c", "6"], ["pH", "COD", "TSS", "NH4", "Temp", "Flow"]
            )
            assert list(got) == [1, 3, 5, 7, 9, 11]
            # stack gases: CDAB = mbpoll's default word order; 1-based reference 3 = PDU address 2
            await check(stack, ["-t", "4:float", "-r", "3", "-c", "4"], ["SO2", "NOx", "CO", "O2"])
            # stack dust/temp/flow: ABCD
            await check(stack, ["-t", "4:float", "-B", "-0", "-r", "10", "-c", "2"], ["Temp", "Flow"])
            # the status register, forced to "sample line fault"
            sims[2].set_status("cems1", 8)
            t0 = time.time_ns()
            got = await mbpoll(
                "-m",
                "tcp",
                "-p",
                str(stack.devices[0].port),
                "-a",
                "1",
                "-1",
                "-t",
                "4",
                "-0",
                "-r",
                "100",
                "127.0.0.1",
            )
            (entry,) = [e for e in read_truth(truth_path) if e["kind"] == "status" and e["t_ns"] >= t0]
            assert got == {100: "8"}
            assert (entry["raw"], entry["status"], entry["cause"]) == (8, "02", "sample line fault")
        finally:
            for s in sims:
                await s.aclose()

    run(main)


# --------------------------------------------------------------------------- #
# (c) ModbusTcpSource
# --------------------------------------------------------------------------- #


def assert_readings_match_truth(readings: list, truth: list[dict[str, Any]], t_end: int, device: str) -> None:
    for r in readings:
        matches = [
            e
            for e in truth
            if e["kind"] == "value"
            and e["device"] == device
            and e["parameter"] == r.parameter
            and r.ts_ns <= e["t_ns"] <= t_end
        ]
        assert len(matches) == 1, (r, matches)
        (e,) = matches
        assert r.value == e["value"], (r, e)
        assert r.status == e["status"], (r, e)
        assert r.cause == e["cause"], (r, e)
        if r.value is not None:
            assert isinstance(r.value, float) and math.isfinite(r.value)


@pytest.mark.parametrize(
    ("fname", "requests"), [("demo_air_01.yaml", 2), ("demo_ww_01.yaml", 1), ("demo_stack_01.yaml", 2)]
)
def test_source_poll_matches_truth(fname: str, requests: int, tmp_path: Path) -> None:
    station = station_on_free_port(fname)
    truth_path = tmp_path / "truth.jsonl"
    (source,) = sources_for_station(station)
    assert isinstance(source, ModbusTcpSource)
    assert source.requests_per_poll == requests
    profile = station.profile_for(source.device_id)

    async def main() -> None:
        async with StationSimulator(station, truth_path):
            for _ in range(3):
                readings = await source.poll()
                t_end = time.time_ns()
                assert [r.parameter for r in readings] == profile.parameters
                assert [r.unit for r in readings] == [v.unit for v in profile.values]
                assert all(r.device == source.device_id and r.status == "00" and r.value is not None for r in readings)
                assert_readings_match_truth(readings, read_truth(truth_path), t_end, source.device_id)
            assert source.connects == 1  # one persistent connection
            await source.close()

    run(main)


def test_source_reports_status_codes_and_sentinels(tmp_path: Path) -> None:
    station = station_on_free_port("demo_air_01.yaml")
    truth_path = tmp_path / "truth.jsonl"
    (source,) = sources_for_station(station)

    async def main() -> None:
        async with StationSimulator(station, truth_path) as sim:
            sim.set_status("aqms1", 1)
            sim.force_raw("aqms1", "CO", -9999.0)
            readings = await source.poll()
            assert_readings_match_truth(readings, read_truth(truth_path), time.time_ns(), "aqms1")
            by = {r.parameter: r for r in readings}
            assert all(r.status == "01" for r in readings)
            assert by["PM10"].cause == "zero calibration" and by["PM10"].value is not None
            assert by["CO"].value is None and by["CO"].cause == "zero calibration; sentinel -9999"

            sim.set_status("aqms1", None)
            sim.force_raw("aqms1", "CO", float("nan"))
            sim.force_raw("aqms1", "O3", 99999.0)  # far outside the 0..1960 range: kept for QC
            by = {r.parameter: r for r in await source.poll()}
            assert (by["CO"].value, by["CO"].status, by["CO"].cause) == (None, "00", "sentinel NaN")
            assert (by["O3"].value, by["O3"].status) == (99999.0, "00")

            sim.set_status("aqms1", 3)
            readings = await source.poll()
            assert all(r.status == "02" and r.cause.startswith("device fault") for r in readings)

            sim.set_status("aqms1", 77)  # not in the profile's codes
            readings = await source.poll()
            assert all(r.status == "02" and r.cause.startswith("unknown status code 77") for r in readings)
            await source.close()

    run(main)


# --------------------------------------------------------------------------- #
# (d) failures: stopped simulator, timeouts, exception replies
# --------------------------------------------------------------------------- #


def test_stopped_simulator_gives_02_and_source_reconnects(tmp_path: Path) -> None:
    station = station_on_free_port("demo_stack_01.yaml")
    truth_path = tmp_path / "truth.jsonl"
    (source,) = sources_for_station(station)

    async def main() -> None:
        sim = StationSimulator(station, truth_path)
        await sim.start()
        assert all(r.value is not None for r in await source.poll())
        await sim.stop()
        # the connection was dropped by the device, and nobody listens any more
        for _ in range(2):
            t0 = time.time_ns()
            readings = await source.poll()
            assert len(readings) == 7
            for r in readings:
                assert (r.value, r.status) == (None, "02")
                assert r.cause.startswith(("no reply: connection closed", "no connection:")), r.cause
                assert r.ts_ns >= t0
        assert "refused or unreachable" in readings[0].cause
        await sim.start()
        readings = await source.poll()
        assert all(r.value is not None and r.status == "00" for r in readings)
        assert_readings_match_truth(readings, read_truth(truth_path), time.time_ns(), "cems1")
        assert source.connects == 2
        await source.close()
        await sim.aclose()

    run(main)


def test_silent_device_times_out(tmp_path: Path) -> None:
    """A TCP peer that accepts and never answers: 'no reply: timeout after 0.3 s'."""
    station = load_station(STATIONS_DIR / "demo_air_01.yaml")
    port = free_port()
    device = station.device("aqms1").model_copy(update={"port": port, "timeout_s": 0.3})
    source = make_source(station.id, device, station.profile_for("aqms1"))

    async def main() -> None:
        received: list[bytes] = []

        async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while data := await reader.read(1024):
                received.append(data)
            writer.close()

        server = await asyncio.start_server(swallow, "127.0.0.1", port)
        async with server:
            started = time.monotonic()
            readings = await source.poll()
            elapsed = time.monotonic() - started
            assert all((r.value, r.status, r.cause) == (None, "02", "no reply: timeout after 0.3 s") for r in readings)
            assert 0.3 <= elapsed < 1.0  # the rest of the poll is skipped after a transport failure
            assert len(received) >= 1
            assert not source.connected  # closed, so a late reply cannot answer the next request
        await source.close()

    run(main)


def test_exception_reply_flags_only_that_request(tmp_path: Path) -> None:
    station = station_on_free_port("demo_air_01.yaml")
    truth_path = tmp_path / "truth.jsonl"
    good = station.profile_for("aqms1")
    data = good.model_dump()
    data["values"].append({**data["values"][0], "parameter": "PM1", "address": 50})  # not served by the simulator
    profile = AnalyzerProfile.model_validate(data)
    source = ModbusTcpSource(station.id, station.device("aqms1"), profile)
    assert source.requests_per_poll == 3

    async def main() -> None:
        async with StationSimulator(station, truth_path):
            by = {r.parameter: r for r in await source.poll()}
            assert (by["PM1"].value, by["PM1"].status, by["PM1"].cause) == (
                None,
                "02",
                "modbus exception 2 (illegal data address)",
            )
            assert all(by[p].value is not None and by[p].status == "00" for p in good.parameters)
            assert source.connects == 1
            # wrong unit id: the simulator answers like a gateway with no such target
            other = ModbusTcpSource(station.id, station.device("aqms1").model_copy(update={"unit_id": 9}), good)
            readings = await other.poll()
            assert all(
                (r.value, r.status, r.cause)
                == (None, "02", "modbus exception 11 (gateway target device failed to respond)")
                for r in readings
            )
            await other.close()
            # an unreadable status register makes every value unknown, even those read fine
            data2 = good.model_dump()
            data2["status"]["address"] = 101
            blind = ModbusTcpSource(station.id, station.device("aqms1"), AnalyzerProfile.model_validate(data2))
            readings = await blind.poll()
            assert all(
                (r.value, r.status, r.cause)
                == (None, "02", "status unreadable: modbus exception 2 (illegal data address)")
                for r in readings
            )
            await blind.close()
            await source.close()

    run(main)


# --------------------------------------------------------------------------- #
# The CLI entry point
# --------------------------------------------------------------------------- #


def test_cli_serves_until_sigterm(tmp_path: Path) -> None:
    port = free_port()
    truth_path = tmp_path / "truth.jsonl"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "firmware_sim.modbus_tcp",
            "--station",
            str(STATIONS_DIR / "demo_air_01.yaml"),
            "--port-override",
            f"aqms1={port}",
            "--truth",
            str(truth_path),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        client = ModbusTcpClient("127.0.0.1", port=port, timeout=1, retries=0)
        deadline = time.monotonic() + 15
        while not client.connect():
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "simulator did not start"
            time.sleep(0.05)
        reply = client.read_input_registers(0, count=12, device_id=1)
        client.close()
        assert not reply.isError()
        first = client.convert_from_registers(reply.registers[0:2], F32)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err.decode()
    entries = read_truth(truth_path)
    assert entries[0]["parameter"] == "PM2,5" and entries[0]["value"] == first
    events = [json.loads(line) for line in err.decode().splitlines() if line.startswith("{")]
    assert {"sim.listening", "sim.stopped"} <= {e["event"] for e in events}
    assert all(e["station"] == "DEMO_AIR_01" for e in events if e["event"].startswith("sim."))


def test_cli_reports_a_bad_station_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text((STATIONS_DIR / "demo_air_01.yaml").read_text().replace("port: 15020", "port: many"))
    proc = subprocess.run(
        [sys.executable, "-m", "firmware_sim.modbus_tcp", "--station", str(bad), "--truth", str(tmp_path / "t.jsonl")],
        cwd=REPO,
        capture_output=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert re.search(
        r"bad\.yaml:\d+: devices\[0\]\.port: expected a whole number, got 'many' \(fix: ", proc.stderr.decode()
    ), proc.stderr.decode()


MIXED_PROFILE = """\
profile: mixed
manufacturer: test
model: every type, word order and table
source: test
address_base: 1
values:
  - {parameter: Temp, table: holding_register, address: 1, type: int16, scale: 0.1, unit: oC,
     signal: {base: 25.0, noise: 3.0}}
  - {parameter: Flow, table: holding_register, address: 2, type: uint32, word_order: DCBA, scale: 0.01, unit: m3/h,
     signal: {base: 380.0, noise: 40.0}}
  - {parameter: COD, table: holding_register, address: 4, type: float64, word_order: CDAB, unit: mg/L,
     signal: {base: 45.0, noise: 3.0}}
  - {parameter: NH4, table: holding_register, address: 8, type: int32, word_order: BADC, scale: 0.001, offset: -1.0,
     unit: mg/L, signal: {base: 3.5, noise: 1.0}}
  - {parameter: pH, table: input_register, address: 1, type: float32, word_order: BADC, unit: "-",
     signal: {base: 7.0, noise: 0.2}}
  - {parameter: TSS, table: input_register, address: 3, type: float32, word_order: DCBA, unit: mg/L,
     sentinels: [-1.0], signal: {base: 20.0, noise: 2.0}}
  - {parameter: Color, table: input_register, address: 5, type: uint16, unit: Pt-Co, sentinels: [65535],
     signal: {base: 30.0, noise: 5.0}}
  - {parameter: TP, table: coil, address: 1, type: bool, unit: "-", signal: {base: 0.5, noise: 0.5}}
  - {parameter: TN, table: coil, address: 2, type: bool, unit: "-", signal: {base: 0.5, noise: 0.5}}
status:
  table: discrete_input
  address: 5
  type: bool
  codes: {0: ["00", ""], 1: ["02", "general fault"]}
"""


def test_every_type_order_and_table_round_trips(tmp_path: Path) -> None:
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "mixed.yaml").write_text(MIXED_PROFILE)
    port = free_port()
    (tmp_path / "s.yaml").write_text(
        f"station: {{id: MIX_01, kind: wastewater}}\npoll_interval_s: 1\ndevices:\n"
        f"  - {{id: d1, profile: mixed, transport: modbus_tcp, host: 127.0.0.1, port: {port}, unit_id: 7}}\n"
    )
    station = load_station(tmp_path / "s.yaml", tmp_path / "profiles")
    truth_path = tmp_path / "truth.jsonl"
    (source,) = sources_for_station(station)
    assert [(r.table, r.address, r.count) for r in source.plan] == [
        ("coil", 0, 2),
        ("discrete_input", 4, 1),
        ("input_register", 0, 5),
        ("holding_register", 0, 9),
    ]

    async def main() -> None:
        async with StationSimulator(station, truth_path) as sim:
            seen_bits: set[float] = set()
            for _ in range(8):
                readings = await source.poll()
                assert_readings_match_truth(readings, read_truth(truth_path), time.time_ns(), "d1")
                assert all(r.status == "00" and r.value is not None for r in readings)
                by = {r.parameter: r for r in readings}
                assert by["Temp"].value == round(by["Temp"].value * 10) * 0.1
                seen_bits |= {by["TP"].value, by["TN"].value}
            assert seen_bits == {0.0, 1.0}
            sim.force_raw("d1", "TSS", -1.0)
            sim.force_raw("d1", "Color", 65535)
            sim.set_status("d1", 1)
            readings = await source.poll()
            assert_readings_match_truth(readings, read_truth(truth_path), time.time_ns(), "d1")
            by = {r.parameter: r for r in readings}
            assert (by["TSS"].value, by["TSS"].cause) == (None, "general fault; sentinel -1")
            assert (by["Color"].value, by["Color"].cause) == (None, "general fault; sentinel 65535")
            assert all(r.status == "02" for r in readings)
            # pymodbus's own client agrees on the coils and the BADC/DCBA floats
            client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2, retries=0)
            await client.connect()
            t0 = time.time_ns()
            coils = await client.read_coils(0, count=2, device_id=7)
            regs = await client.read_input_registers(0, count=2, device_id=7)
            logged = values_between(read_truth(truth_path), t0, time.time_ns())
            assert [e["parameter"] for e in logged] == ["TP", "TN", "pH"]
            assert [float(b) for b in coils.bits[:2]] == [logged[0]["value"], logged[1]["value"]]
            badc = [((r & 0xFF) << 8) | (r >> 8) for r in regs.registers]  # undo the byte swap
            assert client.convert_from_registers(badc, F32) == logged[2]["value"]
            client.close()
            await source.close()

    run(main)
