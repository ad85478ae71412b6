"""Modbus RTU and serial ASCII inputs against firmware_sim's pty simulators, and the
RTU simulator against a master nobody here wrote (pymodbus's serial client).

No mocks: real pseudo-terminals, real bytes, the agent's own sources.
"""

from __future__ import annotations

import asyncio
import struct
import time
from pathlib import Path

import pytest
from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient, ModbusTcpClient
from pymodbus.exceptions import ModbusException

from edge_agent.codec import rtu_frame_gap_s
from edge_agent.sources import sources_for_station
from firmware_sim.analyzer import read_truth
from firmware_sim.station import StationSimulator
from station_profiles.loader import list_profiles, load_profile
from tests.field_rig import ascii_device, assert_matches_truth, field_station, rtu, run, truth_for

F32 = ModbusTcpClient.DATATYPE.FLOAT32


# --------------------------------------------------------------------------- #
# A master nobody here wrote
# --------------------------------------------------------------------------- #


def test_pymodbus_serial_client_reads_two_slaves_on_the_simulated_bus(tmp_path: Path) -> None:
    bus = tmp_path / "bus0"
    station = field_station(tmp_path, [rtu("aqms1", "demo-ambient-air", 1, bus), rtu("wq1", "demo-wastewater", 2, bus)])
    truth_path = tmp_path / "truth.jsonl"

    async def main() -> None:
        async with StationSimulator(station, truth_path):
            client = AsyncModbusSerialClient(
                str(bus),
                framer=FramerType.RTU,
                baudrate=19200,
                parity="N",
                stopbits=1,
                bytesize=8,
                timeout=0.5,
                retries=0,
            )
            assert await client.connect()
            for unit, read, params in (
                (1, client.read_input_registers, ["PM2,5", "PM10", "SO2", "NO2", "CO", "O3"]),
                (2, client.read_holding_registers, ["pH", "COD", "TSS", "NH4", "Temp", "Flow"]),
            ):
                t0 = time.time_ns()
                reply = await read(0, count=12, device_id=unit)
                t1 = time.time_ns()
                assert not reply.isError()
                decoded = [client.convert_from_registers(reply.registers[2 * i : 2 * i + 2], F32) for i in range(6)]
                served = [e for e in read_truth(truth_path) if e["kind"] == "value" and t0 <= e["t_ns"] <= t1]
                assert [e["parameter"] for e in served] == params
                assert [e["unit_id"] for e in served] == [unit] * 6
                assert [e["value"] for e in served] == decoded  # exact: float32 both sides
            by = {
                e["parameter"]: e["value"] for e in read_truth(truth_path) if e["kind"] == "value" and e["unit_id"] == 1
            }
            assert by["PM2,5"] <= by["PM10"]  # correlated: PM2,5 is part of PM10
            reply = await client.read_input_registers(100, count=1, device_id=1)
            assert reply.registers == [0]
            reply = await client.read_input_registers(50, count=1, device_id=1)
            assert reply.isError() and reply.exception_code == 2
            # a unit id nobody has: silence on an RTU bus (no gateway to answer exception 11)
            started = time.monotonic()
            try:
                reply = await client.read_input_registers(0, count=2, device_id=9)
                silent = reply.isError() and not getattr(reply, "exception_code", 0)
            except ModbusException:
                silent = True
            assert silent and time.monotonic() - started >= 0.4
            client.close()

    run(main)


# --------------------------------------------------------------------------- #
# Every built-in profile against its simulator
# --------------------------------------------------------------------------- #


def _station_for(tmp_path: Path, name: str):
    profile = load_profile(name)
    if profile.protocol == "serial_ascii":
        return field_station(tmp_path, [ascii_device("dev", name, tmp_path / "ttyS")]), profile
    # a neighbour on the same bus, so the profile is exercised on a shared line
    return field_station(
        tmp_path, [rtu("dev", name, 7, tmp_path / "bus"), rtu("other", "generic-modbus-float", 8, tmp_path / "bus")]
    ), profile


@pytest.mark.parametrize("name", list_profiles())
def test_every_builtin_profile_decodes_against_its_simulator(name: str, tmp_path: Path) -> None:
    station, profile = _station_for(tmp_path, name)
    truth_path = tmp_path / "truth.jsonl"
    sources = {s.device_id: s for s in sources_for_station(station)}
    source = sources["dev"]

    async def poll_and_check() -> list:
        readings = await source.poll()
        assert_matches_truth(readings, read_truth(truth_path), time.time_ns())
        assert [r.parameter for r in readings] == profile.parameters
        return readings

    async def main() -> None:
        async with StationSimulator(station, truth_path) as sim:
            for _ in range(2):
                readings = await poll_and_check()
                assert all(r.status == "00" and r.value is not None and r.cause == "" for r in readings)
                if profile.protocol == "modbus":
                    for r, spec in zip(readings, profile.values):
                        assert spec.range is None or spec.range[0] <= r.value <= spec.range[1] * 1.5, (r, spec.range)
            st = profile.status
            # every status condition, one at a time
            if profile.protocol == "modbus" and st is not None:
                for raw, (code, cause) in st.codes.items() if st.has_register else ():
                    sim.set_status("dev", raw)
                    readings = await poll_and_check()
                    assert {(r.status, r.cause) for r in readings} == {(code, cause)}
                sim.set_status("dev", None) if st.has_register else None
                for j, bit in enumerate(st.bits):
                    sim.set_bits("dev", {j: bit.active})
                    readings = await poll_and_check()
                    assert {(r.status, r.cause) for r in readings} == {(bit.status, bit.cause)}, bit
                    sim.set_bits("dev", None)
                if st.bits:
                    both = {i: b.active for i, b in enumerate(st.bits)}
                    sim.set_bits("dev", both)  # all at once: the worst wins, every cause kept
                    readings = await poll_and_check()
                    worst = max((b.status for b in st.bits), key=int)
                    assert {r.status for r in readings} == {worst}
                    every = "; ".join(b.cause for b in st.bits)
                    assert readings[0].cause == (every if len(every) <= 256 else every[:253] + "...")
                    sim.set_bits("dev", None)
            if profile.protocol == "serial_ascii" and st is not None:
                for flag in st.flags:
                    sim.set_flags("dev", {flag.field: "1"})
                    readings = await poll_and_check()
                    assert {(r.status, r.cause) for r in readings} == {(flag.status, flag.cause)}
                    sim.set_flags("dev", {flag.field: "0"})
            # sentinels and NaN: no value, the device status kept, the cause says why
            for spec in profile.values:
                sentinels = list(spec.sentinels) + (
                    [float("nan")] if getattr(spec, "type", "") in ("float32", "float64") else []
                )
                for s in sentinels:
                    sim.force_raw("dev", spec.parameter, s)
                    by = {r.parameter: r for r in await poll_and_check()}
                    assert by[spec.parameter].value is None and "sentinel" in by[spec.parameter].cause
                    assert by[spec.parameter].status == "00"
                sim.force_raw("dev", spec.parameter, None)
                if getattr(spec, "loop", None) is not None:
                    sim.set_fault("dev", "burnout", parameter=spec.parameter)
                    by = {r.parameter: r for r in await poll_and_check()}
                    assert (by[spec.parameter].value, by[spec.parameter].status) == (None, "02")
                    assert by[spec.parameter].cause.startswith("loop current 0.00 mA < 3.8 mA")
                    sim.clear_fault("dev", "burnout")
            readings = await poll_and_check()
            assert all(r.status == "00" and r.value is not None for r in readings)
            for s in sources.values():
                await s.close()

    run(main)


# --------------------------------------------------------------------------- #
# Bus discipline
# --------------------------------------------------------------------------- #


def test_one_exchange_at_a_time_with_the_inter_frame_gap_and_turnaround(tmp_path: Path) -> None:
    bus = tmp_path / "bus0"
    station = field_station(
        tmp_path,
        [
            rtu("aqms1", "demo-ambient-air", 1, bus, baud=9600),
            rtu("wq1", "demo-wastewater", 2, bus, baud=9600, turnaround_delay_s=0.02),
            rtu("t400", "teledyne-t400", 3, bus, baud=9600),
        ],
    )
    gap = rtu_frame_gap_s(9600, "N", 1, 8)
    assert abs(gap - 3.5 * 10 / 9600) < 1e-9  # 3.646 ms: 10 bits per character with 8N1

    async def main() -> None:
        async with StationSimulator(station, tmp_path / "truth.jsonl") as sim:
            sources = sources_for_station(station)
            assert len({id(s.line) for s in sources}) == 1  # one line for the port
            for _ in range(4):
                await asyncio.gather(*(s.poll() for s in sources))
            exchanges = list(sim.bus("aqms1").exchanges)
            assert len(exchanges) == 4 * (2 + 1 + 2)
            gaps = []
            for (_rx1, _, tx1), (rx2, unit2, _) in zip(exchanges, exchanges[1:]):
                assert tx1 is not None and rx2 > tx1  # the next request only after the reply: never two at once
                gaps.append((rx2 - tx1) / 1e9)
                needed = gap + (0.02 if unit2 == 2 else 0.0)
                assert (rx2 - tx1) / 1e9 >= needed * 0.98, (unit2, (rx2 - tx1) / 1e9, needed)
            print(
                f"\nmeasured silence between frames: min {min(gaps) * 1000:.2f} ms "
                f"(t3.5 = {gap * 1000:.2f} ms), max {max(gaps) * 1000:.2f} ms"
            )
            assert {u for _, u, _ in exchanges} == {1, 2, 3}
            for s in sources:
                await s.close()

    run(main)


def test_a_dead_slave_is_isolated_and_never_delays_the_others_beyond_its_timeout(tmp_path: Path) -> None:
    bus = tmp_path / "bus0"
    timeout = 0.25
    station = field_station(
        tmp_path,
        [
            rtu("dead", "teledyne-t400", 1, bus, timeout_s=timeout, isolate_after=2, isolated_poll_every=3),
            rtu("t300", "teledyne-t300", 2, bus, timeout_s=timeout),
            rtu("odo", "xylem-odo-rtu", 3, bus, timeout_s=timeout),
        ],
    )
    truth_path = tmp_path / "truth.jsonl"

    async def main() -> None:
        async with StationSimulator(station, truth_path) as sim:
            sources = sources_for_station(station)
            sim.set_fault("dead", "no_reply")
            durations, delays, dead_causes = [], [], []
            for _ in range(8):
                t0 = time.time_ns()
                batches = await asyncio.gather(*(s.poll() for s in sources))
                durations.append((time.time_ns() - t0) / 1e9)
                readings = [r for b in batches for r in b]
                healthy = [r for r in readings if r.device != "dead"]
                assert all(r.value is not None and r.status == "00" for r in healthy)
                assert_matches_truth(healthy, read_truth(truth_path), time.time_ns())
                delays.append(max(r.ts_ns - t0 for r in healthy) / 1e9)
                dead_causes.append({r.cause for r in readings if r.device == "dead"})
            print(
                f"\ncycle durations (s): {[round(d, 3) for d in durations]}; "
                f"healthy slaves' request delay max {max(delays):.3f} s (timeout {timeout} s)"
            )
            assert all(d < timeout + 0.15 for d in durations)  # never more than the dead slave's one timeout
            assert all(d < timeout + 0.1 for d in delays)
            # tried on cycles 1, 2 (then isolated), 5, 8: four requests in eight cycles
            unanswered = [e for e in read_truth(truth_path) if e["kind"] == "fault" and e["device"] == "dead"]
            assert len(unanswered) == 4
            assert [d > timeout * 0.9 for d in durations] == [True, True, False, False, True, False, False, True]
            assert dead_causes[0] == {"no reply: timeout after 0.25 s"}
            assert all(c.pop().startswith("device isolated after") for c in (dead_causes[2], dead_causes[3]))
            assert sources[0].isolated
            sim.clear_fault("dead")
            for _ in range(3):
                readings = await sources[0].poll()
            assert not sources[0].isolated and all(r.value is not None for r in readings)
            for s in sources:
                await s.close()

    run(main)


# --------------------------------------------------------------------------- #
# Faults on demand (RTU)
# --------------------------------------------------------------------------- #


def _rtu_pair(tmp_path: Path, **kw):
    bus = tmp_path / "bus0"
    station = field_station(tmp_path, [rtu("t100", "teledyne-t100", 1, bus, **kw), rtu("odo", "xylem-odo-rtu", 2, bus)])
    return station, tmp_path / "truth.jsonl"


def test_rtu_transport_faults_are_flagged_never_guessed(tmp_path: Path) -> None:
    station, truth_path = _rtu_pair(tmp_path, retries=1)

    async def main() -> None:
        async with StationSimulator(station, truth_path) as sim:
            t100, odo = sources_for_station(station)

            async def polls():
                a, b = await asyncio.gather(t100.poll(), odo.poll())
                assert all(r.value is not None and r.status == "00" for r in b)  # the neighbour is never affected
                return {r.parameter: r for r in a}

            sim.set_fault("t100", "no_reply")
            r = (await polls())["SO2"]
            assert (r.value, r.status, r.cause) == (None, "02", "no reply: timeout after 0.3 s")
            sim.clear_fault("t100")

            sim.set_fault("t100", "garbled")  # every reply: the retry is garbled too
            r = (await polls())["SO2"]
            assert (r.value, r.status) == (None, "02") and r.cause.startswith("broken reply: bad CRC"), r
            assert t100.last_poll.requests[0].attempts == 2
            served = [e for e in read_truth(truth_path) if e["device"] == "t100" and e["fault"] == "garbled"]
            assert len(served) == 2  # served twice (the status bits, the first request), stored never
            sim.clear_fault("t100")

            sim.set_fault("t100", "garbled", count=1)  # line noise once: the retry gets it
            readings = await t100.poll()
            assert_matches_truth(readings, read_truth(truth_path), time.time_ns())
            assert readings[0].value is not None and t100.last_poll.requests[0].attempts == 2

            sim.set_fault("t100", "truncated")
            r = (await polls())["SO2"]
            assert (r.value, r.status) == (
                None,
                "02",
            ) and r.cause == "broken reply: truncated frame, 3 of 6 bytes in 0.3 s", (
                r
            )  # the status bits come first: a 6-byte reply
            sim.clear_fault("t100")

            sim.set_fault("t100", "slow", delay_s=0.1)  # slow but inside the timeout: fine
            readings = await t100.poll()
            assert readings[0].value is not None and t100.last_poll.requests[0].latency_s >= 0.1
            sim.clear_fault("t100")

            sim.set_fault("t100", "slow", delay_s=0.45, count=1)  # answers after the timeout ...
            r = (await polls())["SO2"]
            assert (r.value, r.cause) == (None, "no reply: timeout after 0.3 s")
            await asyncio.sleep(0.25)  # ... the late reply arrives now, before the next request
            stale = t100.line.stale_bytes
            readings = await t100.poll()
            assert t100.line.stale_bytes > stale  # it was thrown away, not taken as the next answer
            assert_matches_truth(readings, read_truth(truth_path), time.time_ns())
            for s in (t100, odo):
                await s.close()

    run(main)


def test_rtu_value_faults_calibration_error_stuck_spike(tmp_path: Path) -> None:
    station, truth_path = _rtu_pair(tmp_path)

    async def main() -> None:
        async with StationSimulator(station, truth_path) as sim:
            t100, odo = sources_for_station(station)
            before = (await t100.poll())[0].value
            sim.set_fault("t100", "calibration", which="span")
            for _ in range(2):
                readings = await t100.poll()
                assert_matches_truth(readings, read_truth(truth_path), time.time_ns())
                assert (readings[0].value, readings[0].status, readings[0].cause) == (
                    before,
                    "01",
                    "span calibration",
                )  # held
            sim.clear_fault("t100", "calibration")
            readings = await t100.poll()
            assert readings[0].status == "00" and readings[0].value != before

            sim.set_fault("t100", "device_error", which="invalid")
            readings = await t100.poll()
            assert (readings[0].status, readings[0].cause) == ("02", "invalid concentration")
            sim.clear_fault("t100")

            sim.set_fault("odo", "stuck", parameter="DO")
            values = [{r.parameter: r.value for r in await odo.poll()} for _ in range(3)]
            assert len({v["DO"] for v in values}) == 1 and len({v["Temp"] for v in values}) == 3
            sim.clear_fault("odo")

            sim.set_fault("odo", "spike", parameter="Temp", factor=10.0, count=1)
            readings = await odo.poll()
            e = truth_for(readings[1], read_truth(truth_path), time.time_ns())
            assert (
                e["fault"] == "spike" and readings[1].value == e["value"] > 100
            )  # passed on: the collector's QC flags spikes
            for s in (t100, odo):
                await s.close()

    run(main)


def test_serial_port_disconnect_and_reconnect(tmp_path: Path) -> None:
    station, truth_path = _rtu_pair(tmp_path)

    async def main() -> None:
        async with StationSimulator(station, truth_path) as sim:
            t100, odo = sources_for_station(station)
            assert (await t100.poll())[0].value is not None
            await sim.disconnect("t100")  # the USB adapter is pulled: the whole bus goes
            r1, r2 = await asyncio.gather(t100.poll(), odo.poll())
            causes = {r.cause for r in r1 + r2}
            assert all(r.value is None and r.status == "02" for r in r1 + r2)
            assert all(
                c.startswith(("no reply: port", "no reply: cannot write", "no connection: cannot open")) for c in causes
            ), causes
            readings = await t100.poll()
            assert readings[0].cause == f"no connection: cannot open {tmp_path / 'bus0'}: No such file or directory"
            await sim.reconnect("t100")  # plugged back: a new pty behind the same path
            readings = await t100.poll()
            assert_matches_truth(readings, read_truth(truth_path), time.time_ns())
            assert t100.line.opens == 2
            for s in (t100, odo):
                await s.close()

    run(main)


# --------------------------------------------------------------------------- #
# Serial ASCII: a checksummed, regex-parsed line with error letters
# --------------------------------------------------------------------------- #

CHECKED_PROFILE = r"""
profile: test-ascii-checked
manufacturer: test
model: line with xor checksum and error letters
source: test
protocol: serial_ascii
init_command: "\r\r\r"
init_wait_s: 0.05
poll_command: "RD\r"
line_terminator: "\r\n"
ignore_lines: '^\*'
parse:
  regex: '^(?P<no2>[-0-9.]+|-----) (?P<o3>[-0-9.]+) (?P<err>[-A-Z]+)$'
checksum: {algorithm: xor8-hex, separator: "*", skip_start: 1}
values:
  - {parameter: NO2, field: no2, unit: ug/m3, range: [0, 500], sentinels: ["-----", -9999], decimals: 1,
     signal: {base: 40.0, noise: 3.0, min: 0.0}}
  - {parameter: O3, field: o3, unit: ug/m3, range: [0, 500], decimals: 1, signal: {base: 60.0, noise: 4.0, min: 0.0}}
status:
  letters:
    field: err
    map: {Z: ["01", "zero calibration"], S: ["01", "span calibration"], F: ["02", "flow fault"]}
sim:
  template: "{no2} {o3} {err}"
  prefix: "$"
  echo: true
"""


def test_serial_ascii_checksum_letters_sentinels_and_faults(tmp_path: Path) -> None:
    pdir = tmp_path / "profiles"
    pdir.mkdir()
    (pdir / "test-ascii-checked.yaml").write_text(CHECKED_PROFILE)
    station = field_station(
        tmp_path,
        [ascii_device("gas", "test-ascii-checked", tmp_path / "ttyS1", retries=1, isolate_after=10)],
        profiles_dir=pdir,
    )
    truth_path = tmp_path / "truth.jsonl"

    async def main() -> None:
        async with StationSimulator(station, truth_path) as sim:
            (src,) = sources_for_station(station)

            async def poll():
                readings = await src.poll()
                assert_matches_truth(readings, read_truth(truth_path), time.time_ns())
                return {r.parameter: r for r in readings}

            by = await poll()
            assert all(r.status == "00" and r.value is not None for r in by.values())
            assert src.last_poll.line.startswith("$") and "*" in src.last_poll.line
            sim.set_flags("gas", letters="ZF")  # two letters: the worst wins, both causes kept
            by = await poll()
            assert {(r.status, r.cause) for r in by.values()} == {("02", "zero calibration; flow fault")}
            sim.set_flags("gas", letters="Q")
            by = await poll()
            assert by["O3"].status == "02" and by["O3"].cause == "unknown error letter Q"
            sim.set_flags("gas", letters="-")
            sim.force_raw("gas", "NO2", "-----")
            by = await poll()
            assert (by["NO2"].value, by["NO2"].status, by["NO2"].cause) == (None, "00", "sentinel '-----'")
            sim.force_raw("gas", "NO2", -9999.0)
            by = await poll()
            assert (by["NO2"].value, by["NO2"].cause) == (None, "sentinel -9999")
            sim.force_raw("gas", "NO2", None)

            sim.set_fault("gas", "garbled")
            readings = await src.poll()
            assert all(
                r.value is None and r.status == "02" and r.cause.startswith("broken reply: bad checksum")
                for r in readings
            ), readings
            sim.clear_fault("gas")
            sim.set_fault("gas", "truncated")
            readings = await src.poll()
            assert readings[0].cause.startswith("broken reply: incomplete line '$") and readings[0].value is None
            sim.clear_fault("gas")
            sim.set_fault("gas", "no_reply")
            readings = await src.poll()
            assert {r.cause for r in readings} == {"no reply: timeout after 0.4 s"}
            sim.clear_fault("gas")
            sim.set_fault("gas", "calibration", which="span")
            by = await poll()
            assert {(r.status, r.cause) for r in by.values()} == {("01", "span calibration")}
            await src.close()

    run(main)


# --------------------------------------------------------------------------- #
# Modbus TCP: transport faults and reconnect back-off
# --------------------------------------------------------------------------- #


def test_tcp_transport_faults_and_reconnect_backoff(tmp_path: Path) -> None:
    from supervisor.process import free_port

    port = free_port()
    station = field_station(
        tmp_path,
        [
            {
                "id": "cems",
                "profile": "sick-marsic300",
                "transport": "modbus_tcp",
                "host": "127.0.0.1",
                "port": port,
                "timeout_s": 0.3,
            }
        ],
        kind="stack_emission",
    )
    truth_path = tmp_path / "truth.jsonl"

    async def main() -> None:
        sim = StationSimulator(station, truth_path)
        await sim.start()
        (src,) = sources_for_station(station)
        readings = await src.poll()
        assert_matches_truth(readings, read_truth(truth_path), time.time_ns())
        assert src.requests_per_poll == 3  # values, discrete inputs 1000-1004, 1024-1026
        sim.set_fault("cems", "garbled", count=1)
        readings = await src.poll()
        assert all(r.value is None and r.status == "02" for r in readings)
        assert readings[0].cause == "broken reply: expected 5 bits, got 0"  # the status bits are read first
        for kind in ("no_reply", "truncated"):
            sim.set_fault("cems", kind, count=1)
            readings = await src.poll()
            assert {r.cause for r in readings} == {"no reply: timeout after 0.3 s"}, kind
        sim.set_fault("cems", "device_error", which="malfunction")
        readings = await src.poll()
        assert {(r.status, r.cause) for r in readings} == {("02", "malfunction")}
        sim.clear_fault("cems")
        await sim.disconnect("cems")
        attempts = src.connect_attempts
        for _ in range(8):
            readings = await src.poll()
            assert all(r.value is None and r.status == "02" for r in readings), readings
        made = src.connect_attempts - attempts
        print(f"\nconnect attempts in 8 polls against a dead port: {made}")
        assert 2 <= made <= 5  # two at once, then exponential back-off with jitter
        await sim.reconnect("cems")
        await asyncio.sleep(src.backoff_s + 0.01)
        readings = await src.poll()
        assert all(r.value is not None for r in readings), readings
        await src.close()
        await sim.aclose()

    run(main)


def test_float_encoding_of_the_rtu_simulator_matches_struct(tmp_path: Path) -> None:
    """The bytes on the pty are IEEE-754 big-endian for an ABCD profile (read raw, no Modbus library)."""
    import os

    from edge_agent.codec import parse_rtu_reply, rtu_read_request

    station = field_station(tmp_path, [rtu("odo", "xylem-odo-rtu", 5, tmp_path / "bus")])

    async def main() -> None:
        async with StationSimulator(station, tmp_path / "truth.jsonl"):
            fd = os.open(tmp_path / "bus", os.O_RDWR | os.O_NOCTTY)
            try:
                os.write(fd, rtu_read_request(5, "input_register", 2, 2))
                await asyncio.sleep(0.05)
                frame = os.read(fd, 64)
            finally:
                os.close(fd)
            regs = parse_rtu_reply(frame, 5, "input_register", 2)
            (value,) = struct.unpack(">f", frame[3:7])
            served = [e for e in read_truth(tmp_path / "truth.jsonl") if e["parameter"] == "DO"]
            assert served[-1]["value"] == value and regs == [
                int.from_bytes(frame[3:5], "big"),
                int.from_bytes(frame[5:7], "big"),
            ]

    run(main)
