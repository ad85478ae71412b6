"""What becomes of a file, from its content alone (no I/O): accepted, held or refused, and why.

* complete (every line whole, the name's time consistent, not empty) and not known to be cut off
  by the transport: **accepted** — its readings are taken; lines the codec refused (a status 03, a
  value that is not a number) are refused for good with their reason, since sending the file again
  cannot mend them;
* incomplete: **held** until it is completed, replaced, or its wait is over;
* at the end of the wait (``final``): the whole lines are taken (**accepted**) and the cut one is
  refused with its reason; a file with no whole line at all is **refused**;
* nothing readable at all (UTF-16, every line refused): **refused**.
"""

from __future__ import annotations

from dataclasses import dataclass

from broker_bridge.tt10.codec import Tt10File, Tt10Reading
from broker_bridge.tt10.ingest.ledger import ACCEPTED, HELD, REFUSED, RefusedRow

INTERRUPTED = "the transport saw the upload cut off before its end"


@dataclass(frozen=True, slots=True)
class Verdict:
    state: str  # accepted, held or refused
    reasons: tuple[str, ...]
    readings: tuple[Tt10Reading, ...]  # what is taken (empty unless accepted)
    refused: tuple[RefusedRow, ...]


def judge(file: Tt10File, *, interrupted: bool = False, final: bool = False, held_s: float = 0.0) -> Verdict:
    refused = tuple(RefusedRow(r.line, r.raw, r.reason) for r in file.refused)
    errors = tuple(
        f.detail for f in file.findings if f.severity == "error" and f.code not in ("truncated_last_line", "empty_file")
    )
    line_reasons = tuple(f"line {r.line}: {r.reason}" for r in refused)
    waiting = file.incomplete_reasons + ((INTERRUPTED,) if interrupted else ())
    if waiting and not final:
        return Verdict(HELD, waiting, (), refused)
    after_wait = (f"held {held_s:.0f} s without being completed or sent again: only its whole lines are taken",)
    reasons = (after_wait + waiting if waiting else ()) + errors + line_reasons
    if not file.readings:
        nothing = "no line of the file could be read" if file.lines else "the file is empty"
        return Verdict(REFUSED, (nothing, *reasons), (), refused)
    return Verdict(ACCEPTED, reasons, file.readings, refused)


def keys_of(file: Tt10File) -> frozenset[tuple[str, int]]:
    """(parameter, ts) of every reading: a file holding all of a held file's keys replaces it."""
    return frozenset((r.parameter, r.ts_ns) for r in file.readings)
