"""The station file's tt10_out: targets load with their defaults, and mistakes name FILE:LINE and a fix."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import pytest

from broker_bridge.tt10.cycles import MODES
from broker_bridge.tt10.names import NAME_FORMS
from edge_agent.tt10_out import remote_dir
from station_profiles.loader import ConfigError, load_station
from station_profiles.profile_model import Tt10Mode, Tt10NameForm

SAMPLE = Path(__file__).resolve().parents[2] / "edge_agent" / "tt10_out" / "sample.yaml"
E = 1_774_371_900 * 10**9  # 2026-03-24T17:05:00Z = 2026-03-25 00:05 in Vietnam


def test_the_sample_loads_with_its_defaults():
    station = load_station(SAMPLE)
    (target,) = station.tt10_out
    assert (target.protocol, target.effective_port, target.cycle_s, target.mode, target.retention_days) == (
        "ftp",
        21,
        300,
        "mean",
        60.0,
    )
    assert remote_dir(target, station.id, E) == "HN_AIR_001/2026/03/25"  # the local date, not the UTC one


def test_the_station_model_speaks_the_codecs_words():
    assert get_args(Tt10NameForm) == NAME_FORMS
    assert get_args(Tt10Mode) == MODES


def write(tmp_path: Path, target: str, devices: str = "") -> Path:
    text = SAMPLE.read_text()
    head = text[: text.index("\ntt10_out:\n") + 1]
    if devices:
        head = head.replace("devices:\n", "devices:\n" + devices)
    path = tmp_path / "station.yaml"
    path.write_text(head + "tt10_out:\n" + target)
    return path


BASE = "  - {name: p, protocol: ftp, host: h, user: u, password_file: /x, "


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (BASE + "cycle_s: 420}\n", "station.yaml:9: tt10_out[0].cycle_s: cycle 420 s does not divide a day"),
        (BASE + "remote_dir: '{station}/{year}'}\n", "station.yaml:9: tt10_out[0].remote_dir: {year}"),
        (BASE + "devices: [nope]}\n", "station.yaml:9: tt10_out[0].devices[0]: no device 'nope'"),
        (BASE.replace("ftp", "scp") + "}\n", "station.yaml:9: tt10_out[0].protocol"),
        (BASE + "}\n" + BASE + "}\n", "station.yaml:10: tt10_out[1].name: target name 'p' is already used"),
    ],
)
def test_mistakes_name_the_line_and_a_fix(tmp_path, target, expected):
    with pytest.raises(ConfigError) as error:
        load_station(write(tmp_path, target))
    assert expected in str(error.value) and "(fix: " in str(error.value)


def test_a_parameter_from_two_devices_needs_a_choice(tmp_path):
    second = "  - {id: aqms2, profile: demo-ambient-air, transport: modbus_tcp, host: 127.0.0.1, port: 15021}\n"
    with pytest.raises(ConfigError, match=r"comes from devices aqms2 and aqms1 .*devices: \[aqms2\]"):
        load_station(write(tmp_path, BASE + "}\n", devices=second))
    assert load_station(write(tmp_path, BASE + "devices: [aqms2]}\n", devices=second)).tt10_out[0].devices == ["aqms2"]
