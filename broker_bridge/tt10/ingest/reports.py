"""File receipts in the warehouse: the ledger's rows written to QuestDB's ``tt10_files`` over ILP.

Why the bridge writes them itself (through ``store``'s writer) rather than publishing a message for
the collector: a receipt is the bridge's own account of a file, not a station's measurement, so
none of the collector's checks (signature per station, sequence, measurement controls) applies to
it; the ledger already holds the durable truth and ``report_due`` says what QuestDB has not seen, so
a restart or an outage of QuestDB only delays the rows (``DEDUP UPSERT KEYS(ts, station, sha256)``
makes writing one again harmless, and a state change rewrites the row). The price: the bridge needs
the warehouse's ILP port. A bridge that can reach only a broker leaves ``ilp_conf`` unset and its
receipts stay in its ledger (``quantrac bridge tt10 files``).
"""

from __future__ import annotations

import time

import structlog

from broker_bridge.tt10.ingest.ledger import FileRow, Ledger
from store.ilp_writer import IlpRow, WarehouseRefused, WarehouseUnavailable, WarehouseWriter, ilp_row
from store.schema import TT10_FILES

log = structlog.get_logger("broker_bridge.tt10.ingest")

REASONS_MAX_CHARS = 8000
RETRY_MAX_S = 60.0


def file_row(row: FileRow) -> IlpRow:
    values: dict[str, object] = dict(
        station=row.station, sha256=row.sha256, name=row.name, account=row.account, transport=row.transport,
        peer=row.peer, size=row.size, interrupted=row.interrupted, state=row.state, readings=row.readings,
        refused=row.refused_lines, reasons="\n".join(row.reasons)[:REASONS_MAX_CHARS], upload=row.id,
    )  # fmt: skip
    for name in ("duplicate_of", "superseded_by", "first_seq", "last_seq"):
        if getattr(row, name) is not None:
            values[name] = getattr(row, name)
    if row.decided_ns is not None:
        values["decided_at"] = row.decided_ns
    return ilp_row(TT10_FILES, row.received_ns, **values)


class FileReporter:
    def __init__(self, ilp_conf: str) -> None:
        self.writer = WarehouseWriter(ilp_conf)
        self._retry_at = 0.0
        self._failures = 0

    def report(self, ledger: Ledger) -> int:
        """Write the rows the warehouse has not seen; on an outage try again later (back-off)."""
        if time.monotonic() < self._retry_at:
            return 0
        rows = ledger.report_due(limit=1000)
        if not rows:
            return 0
        try:
            self.writer.write_rows(TT10_FILES, [file_row(r) for r in rows])
        except (WarehouseUnavailable, WarehouseRefused) as exc:
            self._failures += 1
            delay = min(RETRY_MAX_S, 0.5 * 2**self._failures)
            self._retry_at = time.monotonic() + delay
            log.error("tt10_files_not_written", rows=len(rows), error=str(exc)[:500], retry_in_s=delay)
            return 0
        self._failures = 0
        ledger.mark_reported(rows)
        return len(rows)

    def close(self) -> None:
        self.writer.close()
