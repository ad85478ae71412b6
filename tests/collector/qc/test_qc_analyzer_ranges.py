"""The analyzer layer of the thresholds: a device's measuring range from its profile (the birth's
``ranges``) is the gross range's fail span, between the station's layer and the file's device layer."""

from __future__ import annotations

import textwrap
from types import MappingProxyType

from broker_bridge.envelope import Reading
from collector.qc import FAIL, NOT_EVALUATED, PASS, SUSPECT, QualityControl, SeriesState, ThresholdSource

T0 = 1_767_225_600 * 10**9
FILE = """
qc:
  parameters:
    TST:
      u: {gross_range: {fail: [-10, 1000], suspect: [0, 500]}}
  stations:
    ST1:
      devices:
        fixed: {parameters: {TST: {u: {gross_range: {fail: [0, 2000]}}}}}
"""


def qc_with(tmp_path, ranges: dict) -> tuple[QualityControl, dict]:
    path = tmp_path / "qc.yaml"
    path.write_text(textwrap.dedent(FILE))
    holder = {"ranges": MappingProxyType(ranges)}
    source = ThresholdSource(path, analyzer_ranges=lambda: holder["ranges"])
    return QualityControl(source, SeriesState()), holder


def judge(qc: QualityControl, device: str, value: float, parameter: str = "TST", unit: str = "u"):
    (res,) = qc.evaluate("ST1", [Reading(T0, device, parameter, value, unit, "00")], T0)
    return res


def test_the_profile_range_is_the_fail_span_even_inside_the_operator_range(tmp_path):
    qc, _ = qc_with(tmp_path, {("ST1", "a1", "TST", "u"): (0.0, 200.0, "vendor-x")})
    assert judge(qc, "a1", 150.0).flag == PASS
    narrower = judge(qc, "a1", 300.0)  # inside the operator's [0, 500], outside the analyzer's [0, 200]
    assert (narrower.flag, narrower.cause) == (
        FAIL,
        "gross_range: 300.0 u outside the analyzer range [0.0, 200.0] of profile vendor-x",
    )
    assert judge(qc, "other", 300.0).flag == PASS  # another device of the station: no profile range known
    assert judge(qc, "other", 800.0).flag == SUSPECT


def test_the_files_device_block_wins_over_the_profile(tmp_path):
    qc, _ = qc_with(tmp_path, {("ST1", "fixed", "TST", "u"): (0.0, 200.0, "vendor-x")})
    res = judge(qc, "fixed", 1500.0)
    assert res.flag == SUSPECT and "operator range" in res.cause  # the file's [0, 2000] is the fail span here


def test_a_unit_without_operator_thresholds_gets_the_analyzer_range_alone(tmp_path):
    qc, _ = qc_with(tmp_path, {("ST1", "a1", "SO2", "ppm"): (0.0, 1000.0, "sick-marsic300")})
    assert judge(qc, "a1", 40.0, "SO2", "ppm").flag == PASS
    assert judge(qc, "a1", 1200.0, "SO2", "ppm").flag == FAIL
    assert judge(qc, "a2", 40.0, "SO2", "ppm").flag == NOT_EVALUATED


def test_new_ranges_apply_at_the_next_reload(tmp_path):
    qc, holder = qc_with(tmp_path, {})
    assert judge(qc, "a1", 300.0).flag == PASS
    holder["ranges"] = MappingProxyType({("ST1", "a1", "TST", "u"): (0.0, 200.0, "vendor-x")})
    assert qc.reload_thresholds() is True and qc.reload_thresholds() is False
    assert judge(qc, "a1", 300.0).flag == FAIL
