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

from bisect import bisect_left
from dataclasses import dataclass

import numpy as np

from vocabulary.qc_flags import FAIL, FLAGS, MISSING, NOT_EVALUATED, PASS, SUSPECT  # noqa: F401 - collector.qc re-exports them

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


class QcColumns:
    """The verdicts on many readings as columns, for writers that take whole columns.

    ``flag`` is an int8 array; ``check``, ``cause`` and ``checks`` (the
    fired checks joined by commas, the ``qc_checks`` column) are lists with
    "" where a reading passed.
    """

    __slots__ = ("flag", "check", "cause", "checks", "_fired", "_fired_order")

    def __init__(
        self, flag: np.ndarray, check: list[str], cause: list[str], checks: list[str], fired: dict[int, tuple[str, ...]]
    ) -> None:
        self.flag, self.check, self.cause, self.checks, self._fired = flag, check, cause, checks, fired
        self._fired_order: list[int] | None = None

    @classmethod
    def passed(cls, n: int) -> QcColumns:
        return cls(np.full(n, PASS, dtype=np.int8), [""] * n, [""] * n, [""] * n, {})

    def __len__(self) -> int:
        return len(self.flag)

    def set(self, i: int, result: QcResult) -> None:
        self.flag[i] = result.flag
        self.check[i], self.cause[i], self.checks[i] = result.check, result.cause, result.checks_text
        if result.checks:
            self._fired[i] = result.checks
            self._fired_order = None

    def fill(self, indexes: list[int], results: list[QcResult]) -> None:
        """``set`` for many readings at once (results without fired checks, e.g. "not evaluated")."""
        if not indexes:
            return
        self.flag[indexes] = [r.flag for r in results]
        check, cause, checks = self.check, self.cause, self.checks
        for i, r in zip(indexes, results):
            check[i], cause[i], checks[i] = r.check, r.cause, r.checks_text
            if r.checks:
                self._fired[i] = r.checks
                self._fired_order = None

    def result(self, i: int) -> QcResult:
        fired = self._fired.get(i, ())
        return (
            PASSED
            if self.flag[i] == PASS and not self.check[i] and not fired
            else QcResult(int(self.flag[i]), self.check[i], self.cause[i], fired)
        )

    def results(self) -> list[QcResult]:
        return [self.result(i) for i in range(len(self.flag))]

    def slice(self, start: int, stop: int) -> QcColumns:
        order = self._order()
        # Only the fired entries inside the slice: a flush slices once per message.
        inside = order[bisect_left(order, start) : bisect_left(order, stop)]
        fired = {i - start: self._fired[i] for i in inside}
        return QcColumns(
            self.flag[start:stop], self.check[start:stop], self.cause[start:stop], self.checks[start:stop], fired
        )

    def fired(self) -> list[tuple[int, tuple[str, ...]]]:
        """(index, checks that fired) of every reading where at least one check fired."""
        return [(i, self._fired[i]) for i in self._order()]

    def _order(self) -> list[int]:
        if self._fired_order is None:
            self._fired_order = sorted(self._fired)
        return self._fired_order
