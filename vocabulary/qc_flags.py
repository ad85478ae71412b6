"""QARTOD quality flags (IOOS ``QartodFlags``), as stored in ``readings.qc_flag``.

Which flag wins when several checks speak is the measurement controls' rule
(``collector/qc/flags.py``); the values themselves are shared by every reader.
"""

from __future__ import annotations

PASS = 1
NOT_EVALUATED = 2
SUSPECT = 3
FAIL = 4
MISSING = 9

FLAGS: tuple[int, ...] = (PASS, NOT_EVALUATED, SUSPECT, FAIL, MISSING)

FLAG_NAMES: dict[int, str] = {
    PASS: "pass",
    NOT_EVALUATED: "not_evaluated",
    SUSPECT: "suspect",
    FAIL: "fail",
    MISSING: "missing",
}
