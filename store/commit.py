"""One flush of the collector into the warehouse, in the order its promises need.

Readings first: a ledger entry (``batches``) promises that its batch's
readings are stored, and the sequence tracker trusts the ledger after a
restart. Then the revisions of stored readings they changed, the ledger,
the rejects, the station events and the gaps. Each table is one transaction; a flush that fails
half-way is written again whole (every table is keyed with DEDUP UPSERT KEYS, so the repeat is harmless).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from store.ilp_writer import (
    IlpRow,
    ReadingColumns,
    RejectRow,
    SerialisedRows,
    WarehouseRefused,
    WarehouseUnavailable,
    WarehouseWriter,
)
from store.payload_store import PayloadStore
from store.schema import BATCHES, READING_REVISIONS, SEQUENCE_GAPS, STATION_EVENTS, TOUCHED_HOURS

REJECTS_PER_REQUEST_BYTES = 32 * 1024 * 1024  # base64 payload heads: far below QuestDB's 100 MiB request limit


@dataclass(slots=True)
class FlushRecords:
    """What a flush writes once its readings are committed (rows as ``ilp_row`` builds them)."""

    ledger: list[IlpRow]
    rejects: list[RejectRow]
    events: list[IlpRow]
    gaps: list[IlpRow]
    revisions: list[IlpRow] = field(default_factory=list)  # stored readings these readings changed
    touched: list[IlpRow] = field(default_factory=list)  # (station, hour) the readings fell in: the aggregator's feed


class Warehouse:
    """The collector's two connections to QuestDB.

    Readings are committed from a thread of their own with their own
    connection, so the next flush is judged, flagged and serialised meanwhile
    (the client waits for QuestDB without holding the interpreter lock).
    """

    def __init__(self, ilp_conf: str, payload_store: PayloadStore | None = None) -> None:
        self.payload_store = payload_store  # None: a large reject keeps only its first REJECT_HEAD_BYTES
        self.writer = WarehouseWriter(ilp_conf)
        self._readings_writer = WarehouseWriter(ilp_conf)
        self._send_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="readings-send")

    def serialise_readings(self, columns: ReadingColumns) -> SerialisedRows:
        return self.writer.serialise_readings(columns)

    def send_readings(self, rows: SerialisedRows) -> Future:
        """Start the readings' transaction on the readings thread; ``commit`` waits for it."""
        return self._send_pool.submit(self._readings_writer.send, rows)

    def write_readings(self, columns: ReadingColumns) -> int:
        """Readings as a transaction of their own, now (one message's, after QuestDB refused a whole flush)."""
        return self.writer.write_reading_columns(columns)

    def commit(
        self,
        readings: Future | SerialisedRows,
        refused: Callable[[WarehouseRefused], int],
        records: Callable[[], FlushRecords],
    ) -> tuple[int, FlushRecords]:
        """Commit a flush: its readings (sent already, or now), then the records of what got in.

        ``refused`` handles QuestDB refusing the readings (it writes them message by message and
        returns how many it wrote); ``records`` is asked only after, because a refused message
        becomes a reject and gets no ledger entry. Returns the readings written and the records.
        """
        try:
            written = readings.result() if isinstance(readings, Future) else self.writer.send(readings)
        except WarehouseRefused as exc:
            written = refused(exc)
        rows = records()
        # Right after the readings: the aggregator recomputes what these rows name, and waits for the
        # readings' WAL before reading them (analysis/aggregator.py).
        self.writer.write_rows(TOUCHED_HOURS, rows.touched)
        # Before the ledger: a ledger entry promises its batch is stored whole, its revisions included
        # (a failure here writes the flush again: the revisions' dedup keys make the repeat harmless).
        self.writer.write_rows(READING_REVISIONS, rows.revisions)
        self.writer.write_rows(BATCHES, rows.ledger)
        rejects = self.store_large_payloads(rows.rejects)
        for chunk in _chunks_by_size(rejects, REJECTS_PER_REQUEST_BYTES):
            # Several requests are safe: a retry upserts the same (ts, payload hash) rows.
            self.writer.write_rejects(chunk)
        self.writer.write_rows(STATION_EVENTS, rows.events)
        self.writer.write_rows(SEQUENCE_GAPS, rows.gaps)
        return written, rows

    def store_large_payloads(self, rejects: list[RejectRow]) -> list[RejectRow]:
        """The whole bytes of every reject too large for its row, durably in the payload store, before
        the row is written (and so before the message is acknowledged); the rows say so."""
        if self.payload_store is None:
            return rejects
        try:
            return [
                replace(row, payload_stored=self.payload_store.put(row.payload) == row.payload_sha256)
                if row.truncated
                else row
                for row in rejects
            ]
        except OSError as exc:  # a full or broken disk: keep the messages with the broker and try again later
            raise WarehouseUnavailable(f"payload store {self.payload_store.root}: {exc}") from exc

    def close(self) -> None:
        self._send_pool.shutdown(wait=True)
        self.writer.close()
        self._readings_writer.close()


def _chunks_by_size(rows: list[RejectRow], limit: int) -> Iterator[list[RejectRow]]:
    chunk, size = [], 0
    for row in rows:
        row_size = len(row.payload_b64) + len(row.detail)
        if chunk and size + row_size > limit:
            yield chunk
            chunk, size = [], 0
        chunk.append(row)
        size += row_size
    if chunk:
        yield chunk
