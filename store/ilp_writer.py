"""Writes rows into QuestDB over ILP/HTTP, one table per request.

One HTTP request holding one table is one QuestDB transaction, so a flush
either commits every row or none; the caller acknowledges upstream only
after ``flush_*`` returned. Rows are built in independent buffers because a
failed flush keeps their content, while the sender's own buffer would drop it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from questdb import QuestDBError, QuestDBErrorCode, Sender, TimestampNanos


# Errors after which the same rows may succeed later: the server is down,
# restarting or overloaded. Anything else means these rows can never commit.
TRANSIENT_CODES = frozenset(
    {
        QuestDBErrorCode.SocketError,
        QuestDBErrorCode.CouldNotResolveAddr,
        QuestDBErrorCode.ProtocolVersionError,
        QuestDBErrorCode.ConnectTimeout,
        QuestDBErrorCode.ServerInternalError,
    }
)


class WarehouseUnavailable(RuntimeError):
    """QuestDB could not take the rows now; retry the same rows later."""


class WarehouseRefused(RuntimeError):
    """QuestDB refused the rows themselves (schema, names); retrying will not help."""


IlpRow = tuple[dict[str, str], dict[str, object], int]

READING_SYMBOLS = ["station", "device", "parameter", "unit", "status", "key_id", "qc_check", "qc_checks"]


@dataclass(slots=True)
class ReadingColumns:
    """Readings on their way into the warehouse, as columns: entry i of every field is reading i.

    The collector's form: one flush of many messages becomes one of these,
    and the questdb client serialises it column by column (its DataFrame
    path) instead of one Python call per reading.
    """

    station: Sequence[str]
    seq: Sequence[int]
    historical: Sequence[bool]
    key_id: Sequence[str]
    received_ns: Sequence[int]
    ts_ns: Sequence[int]
    device: Sequence[str]
    parameter: Sequence[str]
    value: Sequence[float | None]  # None (or NaN): no usable value, stored as NULL
    unit: Sequence[str]
    status: Sequence[str]
    cause: Sequence[str]
    qc_flag: Sequence[int] | None = None  # None: no measurement control ran, the qc_* columns stay NULL
    qc_check: Sequence[str] = ()  # "" where the reading passed: NULL
    qc_cause: Sequence[str] = ()
    qc_checks: Sequence[str] = ()

    def __len__(self) -> int:
        return len(self.ts_ns)

    def frame(self) -> pd.DataFrame:
        """The DataFrame the questdb client serialises: object columns for text (no pandas string
        inference: ten times cheaper), None where a value or a QC text is absent (ILP omits it: NULL)."""
        n = len(self)

        def text(values: Sequence[str], blank_is_null: bool = False) -> np.ndarray:
            column = np.empty(n, dtype=object)
            column[:] = [v or None for v in values] if blank_is_null else values
            return column

        def ns(values: Sequence[int]) -> np.ndarray:
            return np.asarray(values, dtype=np.int64).view("datetime64[ns]")

        columns = {
            "station": text(self.station),
            "device": text(self.device),
            "parameter": text(self.parameter),
            "unit": text(self.unit),
            "status": text(self.status),
            "key_id": text(self.key_id),
            "cause": text(self.cause),
            "seq": np.asarray(self.seq, dtype=np.int64),
            "historical": np.asarray(self.historical, dtype=bool),
            "received_at": ns(self.received_ns),
            "value": np.array(self.value, dtype=np.float64),  # None becomes NaN: QuestDB's NULL double
        }
        if self.qc_flag is not None:
            columns["qc_flag"] = np.asarray(self.qc_flag, dtype=np.int8)
            for name, values in (("qc_check", self.qc_check), ("qc_cause", self.qc_cause), ("qc_checks", self.qc_checks)):
                if any(values):  # a column of None only has no type the client accepts; absent is NULL too
                    columns[name] = text(values, blank_is_null=True)
        columns["ts"] = ns(self.ts_ns)
        return pd.DataFrame({k: pd.Series(v, dtype=v.dtype, copy=False) for k, v in columns.items()}, copy=False)


@dataclass(frozen=True, slots=True)
class RejectRow:
    received_ns: int
    topic: str
    claimed_station: str
    reason: str
    detail: str
    payload_sha256: str
    payload_b64: str


def classify(error: QuestDBError) -> RuntimeError:
    code = getattr(error, "code", None)
    text = str(error)
    # A 5xx after the client's own retries, or a refused connection, is an
    # outage; a 4xx ("invalid", "does not exist") is about the data.
    if code in TRANSIENT_CODES or (code == QuestDBErrorCode.ServerFlushError and '"code":"invalid"' not in text):
        return WarehouseUnavailable(text)
    return WarehouseRefused(text)


@dataclass(frozen=True, slots=True)
class SerialisedRows:
    buffer: object  # the questdb client's Buffer
    count: int


class WarehouseWriter:
    def __init__(self, ilp_conf: str) -> None:
        self._conf = ilp_conf
        self._sender: Sender | None = None

    def _connected(self) -> Sender:
        if self._sender is None:
            sender = Sender.from_conf(self._conf)
            sender.establish()
            self._sender = sender
        return self._sender

    def close(self) -> None:
        if self._sender is not None:
            sender, self._sender = self._sender, None
            sender.close()

    def _flush(self, fill, buffer=None) -> int:
        try:
            sender = self._connected()
            buffer = sender.new_buffer() if buffer is None else buffer
            rows = fill(buffer)
            if rows:
                sender.flush(buffer, transactional=True)
            return rows
        except QuestDBError as exc:
            error = classify(exc)
            if isinstance(error, WarehouseUnavailable):
                self.close()  # reconnect from scratch next time
            raise error from exc

    def serialise_readings(self, columns: ReadingColumns) -> SerialisedRows:
        """The CPU half of writing readings: one transaction's ILP bytes, for ``send`` (of this writer
        or another one, so the network half can run in another thread while this one goes on)."""
        try:
            buffer = self._connected().new_buffer()
            if len(columns):
                frame = columns.frame()
                buffer.dataframe(frame, table_name="readings", symbols=[c for c in READING_SYMBOLS if c in frame], at="ts")
            return SerialisedRows(buffer, len(columns))
        except QuestDBError as exc:
            error = classify(exc)
            if isinstance(error, WarehouseUnavailable):
                self.close()
            raise error from exc

    def send(self, rows: SerialisedRows) -> int:
        """Commit serialised rows as one transaction; the buffer is kept, so a failed send can be repeated."""
        return self._flush(lambda buffer: rows.count, buffer=rows.buffer)

    def write_reading_columns(self, columns: ReadingColumns) -> int:
        def fill(buffer) -> int:
            if not len(columns):
                return 0
            frame = columns.frame()
            buffer.dataframe(frame, table_name="readings", symbols=[c for c in READING_SYMBOLS if c in frame], at="ts")
            return len(frame)

        return self._flush(fill)

    def write_rows(self, table: str, rows: Iterable[IlpRow]) -> int:
        """Any table: each row as (symbols, columns, designated timestamp in ns)."""

        def fill(buffer) -> int:
            count = 0
            for symbols, columns, ts_ns in rows:
                buffer.row(table, symbols=symbols, columns=columns, at=TimestampNanos(ts_ns))
                count += 1
            return count

        return self._flush(fill)

    def write_rejects(self, rows: Iterable[RejectRow]) -> int:
        def fill(buffer) -> int:
            count = 0
            for row in rows:
                buffer.row(
                    "rejects",
                    symbols={
                        "claimed_station": row.claimed_station,
                        "reason": row.reason,
                        "payload_sha256": row.payload_sha256,
                    },
                    columns={"topic": row.topic, "detail": row.detail, "payload_b64": row.payload_b64},
                    at=TimestampNanos(row.received_ns),
                )
                count += 1
            return count

        return self._flush(fill)
