"""collector.qc thresholds: shipped defaults, layered overrides, hot reload, errors with FILE:LINE."""

from __future__ import annotations

import os
import re
import textwrap
from pathlib import Path
from types import MappingProxyType

import pytest
import yaml

import station_profiles.loader as loader
from collector.qc import (
    DEFAULTS_PATH,
    PASS,
    SUSPECT,
    QualityControl,
    ThresholdsError,
    ThresholdSource,
    parse_thresholds,
)
from tests.collector.qc.test_qc_checks import RECEIVED, R
from vocabulary.parameters import REGULATION_SYMBOLS

# The regulation's symbols (vocabulary) less P and VHg, whose units the reference does not give:
# defaults.yaml leaves them out on purpose.
BANG_34 = [symbol for symbol in REGULATION_SYMBOLS if symbol not in ("P", "VHg")]


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def bump_mtime(path: Path) -> None:
    """Make the change visible even on filesystems with coarse timestamps."""
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))


# --------------------------------------------------------------------------- #
# Defaults
# --------------------------------------------------------------------------- #


def test_shipped_defaults_load_and_cover_the_regulation_symbols():
    src = ThresholdSource()
    missing = [sym for sym in BANG_34 if not src.units_for(sym)]
    assert missing == []  # P and VHg are left out on purpose (units unknown), see defaults.yaml
    pm = src.param("ST", "d", "PM2,5", "ug/m3")
    assert pm.gross_range["fail"] == (-10.0, 1000.0)
    assert pm.spike["suspect"] == 50.0 and pm.flat_line["suspect_s"] == 3600.0
    assert src.param("ST", "d", "SO2", "mg/Nm3").gross_range["fail"][1] == 5000.0  # unit-specific
    assert src.param("ST", "d", "PM2,5", "mg/L") is None
    rules = {(r.lesser, r.greater) for r in src.station("ST").rules}
    assert {("PM2,5", "PM10"), ("NO2", "NOx")} <= rules


def test_defaults_file_is_plain_yaml_without_duplicate_keys():
    # The loader rejects duplicates; a plain safe_load would silently keep the last.
    parse_thresholds(DEFAULTS_PATH.read_text(), str(DEFAULTS_PATH))
    assert "qc" in yaml.safe_load(DEFAULTS_PATH.read_text())


def test_demo_analyzer_values_pass_the_defaults():
    """The demo simulators' base values must not be flagged by the default thresholds."""
    qc = QualityControl(ThresholdSource())
    readings = []
    for name in ("demo-ambient-air", "demo-wastewater", "demo-stack-cems"):
        for spec in loader.load_profile(name).values:
            readings.append(R(1, float(spec.signal.base), parameter=spec.parameter, unit=spec.unit, device=name))
    # No station kind is configured here, so Temp and Flow use the generic (widest) entries.
    res = qc.evaluate("DEMO", readings, RECEIVED)
    assert [(r.parameter, q.cause) for r, q in zip(readings, res) if q.flag != PASS] == []


# --------------------------------------------------------------------------- #
# Layers
# --------------------------------------------------------------------------- #


OVERRIDES = """
qc:
  clock: {max_offset_s: 30}
  parameters:
    "PM2,5":
      ug/m3:
        spike: {suspect: 20}
  kinds:
    stack_emission:
      timestamps: {future_skew_s: 60}
  stations:
    HN_AIR_001:
      parameters:
        "PM2,5":
          ug/m3:
            gross_range: {suspect: [0, 300]}
            flat_line: off
      devices:
        bam2:
          parameters:
            "PM2,5":
              ug/m3:
                spike: {suspect: 5, fail: 7}
    STACK_1: {}
"""
# A station's kind is its registry entry's (StationRegistry.kinds), not the QC file's.
KINDS = MappingProxyType({"HN_AIR_001": "ambient_air", "STACK_1": "stack_emission"})


def test_layers_merge_key_by_key(tmp_path):
    src = ThresholdSource(write(tmp_path / "qc.yaml", OVERRIDES), station_kinds=lambda: KINDS)
    anywhere = src.param("OTHER", "d", "PM2,5", "ug/m3")
    assert anywhere.spike == {"suspect": 20.0, "fail": 150.0, "window": 3, "max_gap_s": 3600.0}  # file over defaults
    station = src.param("HN_AIR_001", "bam1", "PM2,5", "ug/m3")
    assert station.gross_range == {"fail": (-10.0, 1000.0), "suspect": (0.0, 300.0)}
    assert station.flat_line is None  # switched off for the station
    assert station.spike["suspect"] == 20.0
    device = src.param("HN_AIR_001", "bam2", "PM2,5", "ug/m3")
    assert (device.spike["suspect"], device.spike["fail"]) == (5.0, 7.0)
    assert src.station("OTHER").clock_max_offset_s == 30.0
    assert src.station("STACK_1").future_skew_ns == 60 * 10**9  # kind layer
    assert src.station("HN_AIR_001").future_skew_ns == 300 * 10**9


def test_kind_defaults_apply_through_the_station_kind(tmp_path):
    src = ThresholdSource(write(tmp_path / "qc.yaml", OVERRIDES), station_kinds=lambda: KINDS)
    assert src.param("HN_AIR_001", "met", "Temp", "oC").gross_range["suspect"] == (5.0, 45.0)
    assert src.param("STACK_1", "cems", "Temp", "oC").gross_range["suspect"] == (0.0, 600.0)
    assert src.param("UNKNOWN_KIND", "x", "Temp", "oC").gross_range["suspect"] is None


def test_a_kind_changed_in_the_registry_applies_at_the_next_reload(tmp_path):
    kinds = {"current": MappingProxyType({"HN_AIR_001": "ambient_air"})}
    src = ThresholdSource(write(tmp_path / "qc.yaml", OVERRIDES), station_kinds=lambda: kinds["current"])
    assert src.param("HN_AIR_001", "met", "Temp", "oC").gross_range["suspect"] == (5.0, 45.0)
    assert src.reload_if_changed() is False  # same mapping: nothing to do
    kinds["current"] = MappingProxyType({"HN_AIR_001": "stack_emission"})
    assert src.reload_if_changed() is True
    assert src.param("HN_AIR_001", "met", "Temp", "oC").gross_range["suspect"] == (0.0, 600.0)


def test_a_check_switched_off_can_be_switched_on_again_lower_down(tmp_path):
    text = """
    qc:
      parameters:
        "PM2,5": {ug/m3: {spike: off}}
      stations:
        S1:
          parameters:
            "PM2,5": {ug/m3: {spike: {suspect: 9}}}
    """
    src = ThresholdSource(write(tmp_path / "qc.yaml", text))
    assert src.param("S0", "d", "PM2,5", "ug/m3").spike is None
    assert src.param("S1", "d", "PM2,5", "ug/m3").spike == {
        "suspect": 9.0,
        "fail": float("inf"),
        "window": 3,
        "max_gap_s": 3600.0,
    }


def test_an_override_may_set_one_key_and_inherit_the_rest(tmp_path):
    text = """
    qc:
      parameters:
        "PM2,5": {ug/m3: {spike: {fail: 500}, gross_range: {suspect: [0, 900]}}}
      stations:
        S1:
          devices:
            d9:
              parameters:
                "PM2,5": {ug/m3: {flat_line: {suspect_s: 60}}}
    """
    src = ThresholdSource(write(tmp_path / "qc.yaml", text))
    pm = src.param("S0", "d", "PM2,5", "ug/m3")
    assert (pm.spike["suspect"], pm.spike["fail"]) == (50.0, 500.0)
    assert pm.gross_range == {"fail": (-10.0, 1000.0), "suspect": (0.0, 900.0)}
    assert src.param("S1", "d9", "PM2,5", "ug/m3").flat_line["suspect_s"] == 60.0


def test_overrides_change_verdicts(tmp_path):
    qc = QualityControl(ThresholdSource(write(tmp_path / "qc.yaml", OVERRIDES), station_kinds=lambda: KINDS))
    pm = [
        R(0, 40.0, parameter="PM2,5", unit="ug/m3"),
        R(1, 40.0, parameter="PM2,5", unit="ug/m3"),
        R(2, 65.0, parameter="PM2,5", unit="ug/m3"),
    ]
    assert [q.flag for q in qc.evaluate("OTHER", pm, RECEIVED)] == [PASS, PASS, SUSPECT]  # 25 > 20 (file)
    assert (
        qc.evaluate("HN_AIR_001", [R(1, 400.0, parameter="PM2,5", unit="ug/m3", device="bam1")], RECEIVED)[0].check
        == "gross_range"
    )


# --------------------------------------------------------------------------- #
# Hot reload
# --------------------------------------------------------------------------- #


def test_changed_file_applies_without_restart(tmp_path):
    path = write(tmp_path / "qc.yaml", "qc:\n  parameters:\n    X: {u: {gross_range: {fail: [0, 100]}}}\n")
    qc = QualityControl(ThresholdSource(path))
    assert qc.evaluate("S", [R(1, 80.0, parameter="X")], RECEIVED)[0].flag == PASS
    assert qc.reload_thresholds() is False  # unchanged file: nothing to do

    write(path, "qc:\n  parameters:\n    X: {u: {gross_range: {fail: [0, 100], suspect: [0, 50]}}}\n")
    bump_mtime(path)
    assert qc.reload_thresholds() is True
    res = qc.evaluate("S", [R(2, 80.0, parameter="X")], RECEIVED)[0]
    assert (res.flag, res.check) == (SUSPECT, "gross_range")


def test_broken_file_keeps_the_last_good_thresholds(tmp_path):
    path = write(
        tmp_path / "qc.yaml", "qc:\n  parameters:\n    X: {u: {gross_range: {fail: [0, 100], suspect: [0, 50]}}}\n"
    )
    src = ThresholdSource(path)
    qc = QualityControl(src)
    write(path, "qc:\n  parameters:\n    X: {u: {gross_range: {fail: [0, 100], suspect: [0, 500]}}}\n")
    bump_mtime(path)
    assert qc.reload_thresholds() is False
    assert src.last_error is not None and "not inside the fail span" in str(src.last_error)
    assert qc.evaluate("S", [R(1, 80.0, parameter="X")], RECEIVED)[0].flag == SUSPECT  # still the old span
    write(path, "qc:\n  parameters:\n    X: {u: {gross_range: {fail: [0, 100]}}}\n")
    bump_mtime(path)
    assert qc.reload_thresholds() is True and src.last_error is None
    assert qc.evaluate("S", [R(2, 80.0, parameter="X")], RECEIVED)[0].flag == PASS


def test_missing_file_at_start_is_an_error(tmp_path):
    with pytest.raises(ThresholdsError, match="file not found"):
        ThresholdSource(tmp_path / "nope.yaml")


def test_empty_file_means_defaults(tmp_path):
    src = ThresholdSource(write(tmp_path / "qc.yaml", ""))
    assert src.param("S", "d", "PM10", "ug/m3") is not None


def test_lookback_is_the_longest_flat_line_window(tmp_path):
    src = ThresholdSource(
        write(tmp_path / "qc.yaml", "qc:\n  parameters:\n    X: {u: {flat_line: {suspect_s: 10, fail_s: 200000}}}\n")
    )
    assert src.lookback_s() == 200000.0


# --------------------------------------------------------------------------- #
# Errors name the file, the line and a fix
# --------------------------------------------------------------------------- #


BROKEN = [
    # (text, line, fragment of the message, fragment of the fix)
    (
        "qc:\n  parameters:\n    X:\n      u:\n        spkie: {suspect: 1}\n",
        5,
        "unknown key 'spkie'",
        "did you mean 'spike'?",
    ),
    (
        "qc:\n  consistency:\n    - {lesser: NO, greater: NOx}\n",
        3,
        "as the boolean False",
        'put it in quotes, e.g. lesser: "NO"',
    ),
    ("qc:\n  parameters:\n    NO:\n      u: {spike: {suspect: 1}}\n", 3, "as the boolean False", '"NO":'),
    (
        "qc:\n  parameters:\n    X:\n      u:\n        spike: {suspect: '12'}\n",
        5,
        "expected a number, got '12'",
        "without quotes",
    ),
    (
        (
            "qc:\n  parameters:\n    X:\n      u:\n"
            "        gross_range:\n          fail: [0, 100]\n          suspect: [0, 200]\n"
        ),
        7,
        "not inside the fail span",
        "narrow the suspect span",
    ),
    (
        "qc:\n  parameters:\n    X:\n      u:\n        spike: {fail: 5}\n",
        5,
        "spike needs `suspect`",
        "add suspect: ...",
    ),
    (
        "qc:\n  parameters:\n    X:\n      spike: {suspect: 1}\n",
        4,
        "'spike' is a check, but this level names the unit",
        "put the unit first",
    ),
    (
        "qc:\n  parameters:\n    X:\n      u:\n        gross_range: {fail: [100, 0]}\n",
        5,
        "low 100 is not below high 0",
        "low < high",
    ),
    (
        "qc:\n  parameters:\n    X:\n      u:\n        spike: {suspect: 1, window: 20}\n",
        5,
        "spike window 20 is more than 8",
        "use a window of 1 to 8",
    ),
    (
        "qc:\n  parameters:\n    X:\n      u:\n        rate_of_change: {suspect_per_s: -1}\n",
        5,
        "must be greater than 0",
        "positive number",
    ),
    ("qc:\n  stations:\n    'bad id!':\n      clock: {max_offset_s: 1}\n", 3, "is not a station id", "A-Z a-z 0-9"),
    ("qc:\n  kinds:\n    ambient: {}\n", 3, "'ambient' is not a station kind", "did you mean ambient_air?"),
    (
        "qc:\n  stations:\n    S1:\n      kind: ambient_air\n",
        4,
        "kind is no longer set in the QC file",
        "set the kind in the registry: quantrac station set-kind S1 ambient_air",
    ),
    ("qc:\n  parameters:\n    X:\n      u:\n        spike: {suspect: 1\n", 6, "not valid YAML", "fix the YAML syntax"),
    (
        "qc:\n  parameters:\n    X:\n      u:\n        spike: {suspect: 1}\n        spike: {suspect: 2}\n",
        6,
        "duplicate key 'spike'",
        "remove one",
    ),
    ("parameters:\n  X: {}\n", 1, "unknown key 'parameters'", "allowed keys here: qc"),
    ("qc:\n  timestamps: {not_before: yesterday}\n", 2, "expected a date", "2020-01-01"),
    (
        "qc:\n  parameters:\n    X:\n      u:\n        flat_line: {suspect_s: 600, fail_s: 60}\n",
        5,
        "fail_s 60 is below suspect_s 600",
        "make fail_s at least suspect_s",
    ),
]


@pytest.mark.parametrize(("text", "line", "message", "fix"), BROKEN, ids=[b[2][:30] for b in BROKEN])
def test_config_errors_name_file_line_and_fix(tmp_path, text, line, message, fix):
    path = tmp_path / "qc.yaml"
    path.write_text(text)
    with pytest.raises(ThresholdsError) as err:
        ThresholdSource(path)
    issues = err.value.issues
    match = [i for i in issues if message in i.message]
    assert match, f"no issue says {message!r}: {[str(i) for i in issues]}"
    issue = match[0]
    assert issue.line == line, str(issue)
    assert fix in issue.fix, str(issue)
    assert re.match(rf"^.*qc\.yaml:{line}: .*\(fix: .+\)$", str(issue)), str(issue)


def test_every_issue_is_reported_at_once(tmp_path):
    path = write(
        tmp_path / "qc.yaml",
        """
    qc:
      parameters:
        X:
          u:
            spkie: {suspect: 1}
            rate_of_change: {suspect_per_s: 0}
    """,
    )
    with pytest.raises(ThresholdsError) as err:
        ThresholdSource(path)
    assert [i.line for i in err.value.issues] == [6, 7]


def test_merge_error_between_file_and_defaults_points_at_the_override(tmp_path):
    # the defaults' PM2,5 fail span is [-10, 1000]; a suspect span beyond it is wrong only in combination
    path = write(
        tmp_path / "qc.yaml",
        """
    qc:
      stations:
        S1:
          parameters:
            "PM2,5":
              ug/m3:
                gross_range:
                  suspect: [0, 5000]
    """,
    )
    with pytest.raises(ThresholdsError) as err:
        ThresholdSource(path)
    (issue,) = err.value.issues
    assert issue.file.endswith("qc.yaml") and issue.line == 9
    assert issue.path == "qc.stations.S1.parameters.PM2,5.ug/m3.gross_range"
    assert "not inside the fail span [-10, 1000]" in issue.message


def test_parse_thresholds_accepts_a_station_file_section():
    """The layout station files will embed: the same keys under qc.stations.<id>."""
    f = parse_thresholds(
        "qc:\n  stations:\n    S1:\n      parameters:\n        COD: {mg/L: {spike: {suspect: 40}}}\n", "station.yaml"
    )
    assert f.stations["S1"].parameters["COD"]["mg/L"]["spike"]["suspect"].line == 5
