"""The YAML traps, caught the same way in all four kinds of configuration file: a
duplicate key, an unquoted yes/no word, a tab in the indentation, a file that is
not UTF-8. Each error names the file, the line and a fix."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from collector.qc import ThresholdsError, ThresholdSource
from collector.registry import RegistryError, StationRegistry
from configuration.errors import ConfigError
from station_profiles.loader import PROFILES_DIR, load_profile, load_station

PROFILE = """\
profile: p
manufacturer: quantrac
model: test
source: test
protocol: modbus
address_base: 0
values:
  - parameter: "PM10"
    table: input_register
    address: 0
    type: float32
    unit: ug/m3
"""

STATION = """\
station: {id: S1, name: "Station 1", kind: ambient_air}
poll_interval_s: 2.0
devices:
  - id: d1
    profile: demo-ambient-air
    transport: modbus_tcp
    host: 127.0.0.1
    port: 15020
    unit_id: 1
"""

QC = """\
qc:
  clock: {max_offset_s: 5}
  parameters:
    PM10:
      ug/m3:
        spike: {suspect: 50}
"""

REGISTRY = """\
stations:
  S1:
    enabled: true
    keys:
      - {public_key: BCkLZtvjhzPZ8RwFS/aO6CEFCOSz0xgPDjG1dWsGk1E=, state: active}
"""


def _profile(path: Path) -> None:
    load_profile(path)


def _station(path: Path) -> None:
    load_station(path, PROFILES_DIR)


def _thresholds(path: Path) -> None:
    ThresholdSource(path)


def _registry(path: Path) -> None:
    StationRegistry(path)


# kind -> (file name, good text, loader, error class)
KINDS: dict[str, tuple[str, str, Callable[[Path], None], type[Exception]]] = {
    "profile": ("p.yaml", PROFILE, _profile, ConfigError),
    "station": ("s.yaml", STATION, _station, ConfigError),
    "qc": ("qc.yaml", QC, _thresholds, ThresholdsError),
    "registry": ("registry.yaml", REGISTRY, _registry, RegistryError),
}

# trap -> (replace this line fragment, with this, the line the error names, message fragment, fix fragment)
TRAPS = {
    "profile": {
        "duplicate": (
            "    unit: ug/m3\n",
            "    unit: ug/m3\n    unit: mg/m3\n",
            13,
            "duplicate key 'unit'",
            "remove one of them",
        ),
        "yes_no": (
            '  - parameter: "PM10"\n',
            "  - parameter: NO\n",
            8,
            "unquoted word 'NO' as the boolean False",
            'put it in quotes, e.g. parameter: "NO"',
        ),
        "tab": ("    address: 0\n", "\taddress: 0\n", 10, "a tab in the indentation", "indent with spaces"),
    },
    "station": {
        "duplicate": (
            "    unit_id: 1\n",
            "    unit_id: 1\n    port: 15021\n",
            10,
            "duplicate key 'port'",
            "remove one of them",
        ),
        "yes_no": (
            "    host: 127.0.0.1\n",
            "    host: on\n",
            7,
            "unquoted word 'on' as the boolean True",
            'put it in quotes, e.g. host: "on"',
        ),
        "tab": ("    port: 15020\n", "  \tport: 15020\n", 8, "a tab in the indentation", "indent with spaces"),
    },
    "qc": {
        "duplicate": (
            "  clock: {max_offset_s: 5}\n",
            "  clock: {max_offset_s: 5}\n  clock: {max_offset_s: 9}\n",
            3,
            "duplicate key 'clock'",
            "remove one of them",
        ),
        "yes_no": ("    PM10:\n", "    NO:\n", 4, "unquoted key 'NO' as the boolean False", 'put it in quotes: "NO":'),
        "tab": ("        spike", "\t\tspike", 6, "a tab in the indentation", "indent with spaces"),
    },
    "registry": {
        "duplicate": (
            "    enabled: true\n",
            "    enabled: true\n    enabled: false\n",
            4,
            "duplicate key 'enabled'",
            "remove one of them",
        ),
        "yes_no": (
            "    enabled: true\n",
            "    enabled: yes\n",
            3,
            "unquoted word 'yes' as the boolean True",
            "for a yes/no setting write true",
        ),
        "tab": ("    keys:\n", "\tkeys:\n", 4, "a tab in the indentation", "indent with spaces"),
    },
}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_the_good_file_loads(tmp_path: Path, kind: str) -> None:
    name, text, load, _error = KINDS[kind]
    (tmp_path / name).write_text(text)
    load(tmp_path / name)


@pytest.mark.parametrize(("kind", "trap"), [(k, t) for k in sorted(TRAPS) for t in TRAPS[k]])
def test_a_yaml_trap_names_file_line_and_fix(tmp_path: Path, kind: str, trap: str) -> None:
    name, text, load, error = KINDS[kind]
    old, new, line, message, fix = TRAPS[kind][trap]
    assert old in text
    path = tmp_path / name
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(error) as exc:
        load(path)
    assert isinstance(exc.value, ConfigError)
    match = [i for i in exc.value.issues if message in i.message]
    assert match, [str(i) for i in exc.value.issues]
    issue = match[0]
    assert (issue.line, fix in issue.fix) == (line, True), str(issue)
    assert re.match(rf"^.*{re.escape(name)}:{line}: .*\(fix: .+\)$", str(issue)), str(issue)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_file_that_is_not_utf8_names_the_line(tmp_path: Path, kind: str) -> None:
    name, text, load, error = KINDS[kind]
    lines = text.splitlines(keepends=True)
    raw = (
        "".join(lines[:2]).encode() + "# Trâm quan trác\n".encode("cp1252") + "".join(lines[2:]).encode()
    )  # saved by a Windows editor
    path = tmp_path / name
    path.write_bytes(raw)
    with pytest.raises(error) as exc:
        load(path)
    (issue,) = exc.value.issues
    assert (issue.line, "not UTF-8" in issue.message, "save the file as UTF-8" in issue.fix) == (3, True, True), str(
        issue
    )


def test_the_qc_files_off_is_not_a_trap(tmp_path: Path) -> None:
    path = tmp_path / "qc.yaml"
    path.write_text(QC.replace("spike: {suspect: 50}", "spike: off"))
    assert ThresholdSource(path).param("S", "d", "PM10", "ug/m3").spike is None
