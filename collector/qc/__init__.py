"""quantrac measurement controls (QC): QARTOD-style flags for every reading the collector stores.

See README.md. The collector calls ``QualityControl.evaluate`` per accepted batch.
"""

from collector.qc.engine import QualityControl
from collector.qc.flags import FAIL, MISSING, NOT_EVALUATED, PASS, PASSED, SUSPECT, QcResult, worst
from collector.qc.state import SeriesState
from collector.qc.thresholds import DEFAULTS_PATH, ThresholdsError, ThresholdSource, parse_thresholds

__all__ = [
    "DEFAULTS_PATH",
    "FAIL",
    "MISSING",
    "NOT_EVALUATED",
    "PASS",
    "PASSED",
    "SUSPECT",
    "QcResult",
    "QualityControl",
    "SeriesState",
    "ThresholdSource",
    "ThresholdsError",
    "parse_thresholds",
    "worst",
]
