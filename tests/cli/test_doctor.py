"""``quantrac agent doctor``: a station whose profile is subtly wrong, probed against simulators
that serve the right map. The doctor must show the raw registers and point at the mistake."""

from __future__ import annotations

import asyncio
import re
import threading
from pathlib import Path

from cli.doctor import run_doctor
from firmware_sim.station import StationSimulator
from station_profiles.loader import PROFILES_DIR, load_station
from supervisor.process import free_port
from tests.field_rig import rtu, write_station

RIGHT = (PROFILES_DIR / "xylem-odo-rtu.yaml").read_text()


def _profiles(tmp: Path, name: str, text: str) -> Path:
    d = tmp / name
    d.mkdir()
    (d / "site-odo.yaml").write_text(text.replace("profile: xylem-odo-rtu", "profile: site-odo"))
    (d / "site-t400.yaml").write_text(
        (PROFILES_DIR / "teledyne-t400.yaml").read_text().replace("profile: teledyne-t400", "profile: site-t400")
    )
    return d


def test_doctor_points_at_word_order_address_and_wiring_mistakes(tmp_path: Path) -> None:
    bus = tmp_path / "bus0"
    devices = [
        rtu("odo", "site-odo", 1, bus),
        rtu("t400", "site-t400", 2, bus),
        rtu("ghost", "site-t400", 9, bus, timeout_s=0.2),
    ]
    served = _profiles(tmp_path, "served", RIGHT)
    # What the technician wrote: Temp's word order swapped, DO one register off.
    wrong_text = RIGHT.replace(
        "    address: 6\n    type: float32\n    word_order: ABCD",
        "    address: 6\n    type: float32\n    word_order: CDAB",
    ).replace("    address: 2\n", "    address: 3\n")
    assert wrong_text.count("CDAB") == 1 and "address: 3" in wrong_text
    wrong = _profiles(tmp_path, "wrong", wrong_text)
    sim_station = load_station(
        write_station(tmp_path, [d for d in devices if d["id"] != "ghost"], station_id="SIM"), served
    )
    station_file = write_station(tmp_path, devices, station_id="SITE")

    ready, stop = threading.Event(), threading.Event()

    def serve() -> None:
        async def main() -> None:
            async with StationSimulator(sim_station, tmp_path / "truth.jsonl") as sim:
                sim.force_raw("odo", "Temp", 29.57)  # 41EC 8F5C: read CDAB it is -1.086e-29
                ready.set()
                while not stop.is_set():
                    await asyncio.sleep(0.02)

        asyncio.run(main())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(10)
    out: list[str] = []
    try:
        code = run_doctor(station_file, profiles_dirs=[wrong], echo=out.append)
    finally:
        stop.set()
        thread.join(10)
    text = out[0]
    print(text)
    assert code == 1
    sections = {m.group(1): m.group(0) for m in re.finditer(r"== (\w+) \(.*?(?=\n== |\Z)", text, re.S)}
    assert set(sections) == {"odo", "t400", "ghost"}
    assert "PROBLEM" in sections["odo"].splitlines()[0] and "OK" in sections["t400"].splitlines()[0], text
    odo = sections["odo"]
    # DO at 3: the read 3..4 hits an undefined register -> exception 2 -> address_base hint
    assert re.search(
        r"DO .*modbus exception 2 \(illegal data address\)"
        r".*the address is wrong or off by one - check the profile's address_base",
        odo,
    )
    # Temp decoded CDAB from ABCD registers: absurd, and the doctor finds the order that fits the range
    temp = next(line for line in odo.splitlines() if line.strip().startswith("Temp"))
    assert re.search(r"input_register 6\s+41EC 8F5C\s+-1\.086e-29\s", temp), temp
    assert "try word order ABCD (gives 29.57); compare with the analyzer's display" in temp, temp
    t400 = sections["t400"]
    assert re.search(
        r"O3\s+input_register 18\s+[0-9A-F]{4} [0-9A-F]{4}\s+\d+(\.\d+)?\s+ppb\s+00\s+-\s+[0-9.]+$", t400, re.M
    ), t400  # no hint for a low ambient value
    assert "(status)" in t400 and "0=0" in t400  # the discrete inputs, bit by bit
    assert "check unit id (9), baud/parity (19200 8N1), wiring" in sections["ghost"]


def test_doctor_rejects_a_bad_station_file(tmp_path: Path, capsys) -> None:
    bad = write_station(tmp_path, [rtu("odo", "xylem-odo-rtu", 1, "dev/ttyUSB0")])
    assert run_doctor(bad) == 2
    err = capsys.readouterr().err
    assert (
        "devices[0].port: port 'dev/ttyUSB0' is not a device path "
        "(fix: write the full path, preferably the stable one: /dev/serial/by-id/" in err
    )


def tcp(device_id: str, port: int, unit_id: int) -> dict:
    return {"id": device_id, "profile": "demo-ambient-air", "transport": "modbus_tcp",
            "host": "127.0.0.1", "port": port, "unit_id": unit_id, "timeout_s": 0.5}  # fmt: skip


def test_doctor_names_the_unit_id_for_exception_4_and_shows_whole_causes(tmp_path: Path) -> None:
    """An analyzer that answers a unit id it does not serve with exception 4 (not silence, not 11), and
    a host with nothing listening, whose cause (``no connection: 127.0.0.1:N refused or unreachable``,
    over 48 characters) must be shown whole, wrapped under its column."""
    served, nobody = free_port(), free_port()
    sim_station = load_station(write_station(tmp_path, [tcp("aqms", served, 1)], station_id="SIM4"))
    station_file = write_station(tmp_path, [tcp("aqms", served, 7), tcp("gone", nobody, 1)], station_id="SITE4")
    ready, stop = threading.Event(), threading.Event()

    def serve() -> None:
        async def main() -> None:
            async with StationSimulator(sim_station, unknown_unit="device_failure"):
                ready.set()
                while not stop.is_set():
                    await asyncio.sleep(0.02)

        asyncio.run(main())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(10)
    out: list[str] = []
    try:
        code = run_doctor(station_file, echo=out.append)
    finally:
        stop.set()
        thread.join(10)
    text = out[0]
    print(text)
    assert code == 1
    sections = {m.group(1): m.group(0) for m in re.finditer(r"== (\w+) \(.*?(?=\n== |\Z)", text, re.S)}
    aqms, gone = sections["aqms"], sections["gone"]
    assert "modbus exception 4 (server device failure)" in aqms
    assert "check unit_id (7) first - some analyzers answer a unit id they do not serve with exception 4" in aqms
    # The whole cause, wrapped: its words, joined back across the continuation lines, are all there.
    cause = f"no connection: 127.0.0.1:{nobody} refused or unreachable"
    assert len(cause) > 48
    lines = gone.splitlines()
    first = next(i for i, line in enumerate(lines) if line.strip().startswith("PM10"))
    column = lines[first].index("no connection:")
    shown = lines[first][column:].split("  ")[0].strip()
    follow = lines[first + 1]
    assert follow[:column].strip() == "" and cause == f"{shown} {follow[column:].strip()}", gone
    assert "check host and port" in lines[first]  # the hint stays on the value's own line
