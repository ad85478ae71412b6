"""QARTOD flags, the order in which they win, and the per-reading result.

Flag values are QARTOD's (IOOS ``QartodFlags``): 1 pass, 2 not evaluated,
3 suspect, 4 fail, 9 missing. When several checks have something to say
about one reading, the worst one decides, in this order (worst first):

    4 fail  >  9 missing  >  3 suspect  >  1 pass  >  2 not evaluated

* 4 beats 9: a value that is absent *because* the analyzer was calibrating
  or in error is better explained by that (EEA validity -99 / AQS null code
  for calibration or malfunction) than by "missing".
* 9 beats 3: a suspect verdict is about a value; when there is no value, a
  suspect timestamp or clock adds nothing a consumer could act on, and 3
  would suggest there is a doubtful number to use. The suspect check is
  still listed in ``checks``.
* 1 beats 2: a reading passes when at least one check could examine its
  value and none objected; "not evaluated" is left for readings no value
  check could look at (no thresholds for the parameter in that unit).

Nothing is dropped: every reading gets exactly one result.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PASS = 1
NOT_EVALUATED = 2
SUSPECT = 3
FAIL = 4
MISSING = 9

FLAGS = (PASS, NOT_EVALUATED, SUSPECT, FAIL, MISSING)

# Severity rank per flag value (index = flag). 0 means "this check has
# nothing to say about this reading" and never wins.
SEVERITY = np.zeros(10, dtype=np.int8)
SEVERITY[NOT_EVALUATED] = 1
SEVERITY[PASS] = 2
SEVERITY[SUSPECT] = 3
SEVERITY[MISSING] = 4
SEVERITY[FAIL] = 5
FLAG_OF_SEVERITY = np.array([0, NOT_EVALUATED, PASS, SUSPECT, MISSING, FAIL], dtype=np.int8)
FIRED = SEVERITY[SUSPECT]  # a check "fired" on a reading when its flag ranks at least suspect


def worst(*flags: int) -> int:
    """The flag that wins among ``flags`` (for callers combining flags by hand)."""
    return max(flags, key=lambda f: SEVERITY[f])


@dataclass(frozen=True, slots=True)
class QcResult:
    """The verdict on one reading.

    ``check`` names the check that decided ``flag`` and ``cause`` says why in
    words; ``checks`` lists every check that fired (flag 3, 4 or 9) in check
    order, e.g. ``("spike", "rate_of_change")`` for a ``qc_checks`` column.
    """

    flag: int
    check: str
    cause: str
    checks: tuple[str, ...]

    @property
    def checks_text(self) -> str:
        return ",".join(self.checks)


# Shared instance for the common case; results are immutable, so sharing is safe
# and saves one allocation per passing reading.
PASSED = QcResult(PASS, "", "", ())
