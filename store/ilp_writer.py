"""Writes rows into QuestDB over ILP/HTTP, one table per request.

One HTTP request holding one table is one QuestDB transaction, so a flush
either commits every row or none; the caller acknowledges upstream only
after ``flush_*`` returned. Rows are built in independent buffers because a
failed flush keeps their content, while the sender's own buffer would drop it.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from questdb import QuestDBError, QuestDBErrorCode, Sender, TimestampNanos

from store.errors import WarehouseRefused, WarehouseUnavailable  # noqa: F401  (their home for callers: here)
from store.payload_store import REJECT_HEAD_BYTES
from store.schema import READINGS, REJECTS, Table
from vocabulary.sources import AGENT

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


IlpRow = tuple[dict[str, str], dict[str, object], int]  # (symbols, other columns, designated timestamp in ns)

READING_SYMBOLS = list(READINGS.symbols)


def ilp_row(table: Table, ts_ns: int, **values: object) -> IlpRow:
    """One row of ``table``, its values sorted into symbols and columns by the table's definition
    (store/schema.py); a name the table lacks fails here, not as a refused transaction."""
    types = table.column_types
    symbols, columns = {}, {}
    for name, value in values.items():
        sql_type = types.get(name)
        if sql_type is None:
            raise KeyError(f"table {table.name} has no column {name!r} (store/schema.py defines its columns)")
        if sql_type == "SYMBOL":
            symbols[name] = value
        elif sql_type == "TIMESTAMP_NS":
            columns[name] = None if value is None else TimestampNanos(value)  # None: NULL (the client skips it)
        else:
            columns[name] = value
    return symbols, columns, ts_ns


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
    source: Sequence[str] = ()  # per reading, vocabulary.sources; () means every reading is an agent's
    file_sha256: Sequence[str] = ()  # per reading, a converted file's SHA-256, "" (NULL) for an agent's

    def __len__(self) -> int:
        return len(self.ts_ns)

    def frame(self) -> pd.DataFrame:
        """The DataFrame the questdb client serialises, one column per column of the readings table
        (store/schema.py), typed by it. None where a value or a QC text is absent (ILP omits it: NULL)."""
        n = len(self)
        columns = {}
        for name, sql_type in READINGS.columns:
            values = getattr(self, _READING_FIELD.get(name, name))
            if name == "source" and not len(values):
                values = [AGENT] * n
            if name.startswith("qc_") and self.qc_flag is None:
                continue  # no measurement control ran: the qc_* columns stay NULL
            if name in _BLANK_IS_NULL:
                if not any(values):  # a column of None only has no type the client accepts; absent is NULL too
                    continue
                values = [v or None for v in values]
            columns[name] = _TO_COLUMN[sql_type](values, n)
        return pd.DataFrame({k: pd.Series(v, dtype=v.dtype, copy=False) for k, v in columns.items()}, copy=False)


def _text(values: Sequence, n: int) -> np.ndarray:
    # Object columns for text: no pandas string inference (ten times cheaper).
    column = np.empty(n, dtype=object)
    column[:] = values
    return column


_TO_COLUMN = {
    "SYMBOL": _text,
    "VARCHAR": _text,
    "TIMESTAMP_NS": lambda values, n: np.asarray(values, dtype=np.int64).view("datetime64[ns]"),
    "LONG": lambda values, n: np.asarray(values, dtype=np.int64),
    "BOOLEAN": lambda values, n: np.asarray(values, dtype=bool),
    "DOUBLE": lambda values, n: np.array(values, dtype=np.float64),  # None becomes NaN: QuestDB's NULL double
    "BYTE": lambda values, n: np.asarray(values, dtype=np.int8),
}
_READING_FIELD = {"ts": "ts_ns", "received_at": "received_ns"}  # column -> ReadingColumns field, where the names differ
_BLANK_IS_NULL = frozenset({"qc_check", "qc_cause", "qc_checks", "file_sha256"})  # "" where the reading passed


@dataclass(frozen=True, slots=True)
class RejectRow:
    """A refused message as the ``rejects`` table keeps it: within bounds, whatever the payload's size.

    ``payload_b64`` holds the first ``REJECT_HEAD_BYTES`` (the whole payload when it is no larger);
    the whole bytes ride along in ``payload`` (never written to QuestDB) for the payload store.
    """

    received_ns: int
    topic: str
    claimed_station: str
    reason: str
    detail: str
    payload_sha256: str
    payload_b64: str
    payload_size: int
    payload: bytes = field(default=b"", repr=False, compare=False)
    payload_stored: bool = False  # the whole bytes are in the payload store (store/payload_store.py)

    @classmethod
    def of(cls, received_ns: int, topic: str, claimed: str, reason: str, detail: str, payload: bytes) -> RejectRow:
        return cls(
            received_ns=received_ns,
            topic=topic,
            claimed_station=claimed,
            reason=reason,
            detail=detail[:2000],
            payload_sha256=hashlib.sha256(payload).hexdigest(),
            payload_b64=base64.b64encode(payload[:REJECT_HEAD_BYTES]).decode("ascii"),
            payload_size=len(payload),
            payload=payload,
        )

    @property
    def truncated(self) -> bool:
        """Only the payload's first bytes are in the row: the whole needs the payload store."""
        return self.payload_size > REJECT_HEAD_BYTES


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
            return SerialisedRows(buffer, _put_readings(buffer, columns))
        except QuestDBError as exc:
            error = classify(exc)
            if isinstance(error, WarehouseUnavailable):
                self.close()
            raise error from exc

    def send(self, rows: SerialisedRows) -> int:
        """Commit serialised rows as one transaction; the buffer is kept, so a failed send can be repeated."""
        return self._flush(lambda buffer: rows.count, buffer=rows.buffer)

    def write_reading_columns(self, columns: ReadingColumns) -> int:
        return self._flush(lambda buffer: _put_readings(buffer, columns))

    def write_rows(self, table: Table, rows: Iterable[IlpRow]) -> int:
        """Any table: each row as ``ilp_row`` builds it."""

        def fill(buffer) -> int:
            count = 0
            for symbols, columns, ts_ns in rows:
                buffer.row(table.name, symbols=symbols, columns=columns, at=TimestampNanos(ts_ns))
                count += 1
            return count

        return self._flush(fill)

    def write_columns(self, table: Table, columns: Mapping[str, Sequence]) -> int:
        """Any table as columns (its designated timestamp under its own name, UTC ns): one transaction
        through the questdb client's DataFrame path, no Python call per row. None is NULL."""
        return self._flush(lambda buffer: _put_columns(buffer, table, columns))

    def write_rejects(self, rows: Iterable[RejectRow]) -> int:
        return self.write_rows(REJECTS, map(reject_row, rows))


def _put_readings(buffer, columns: ReadingColumns) -> int:
    if len(columns):
        frame = columns.frame()
        symbols = [c for c in READING_SYMBOLS if c in frame]
        buffer.dataframe(frame, table_name=READINGS.name, symbols=symbols, at=READINGS.timestamp)
    return len(columns)


def table_frame(table: Table, columns: Mapping[str, Sequence]) -> pd.DataFrame:
    """The DataFrame of ``table``'s rows given as columns, each typed by store/schema.py. A column the
    table lacks fails here; integer columns holding None stay Python objects (None: NULL)."""
    ts_name = table.columns[0][0]
    n = len(columns[ts_name])
    types = {ts_name: "TIMESTAMP_NS", **table.column_types}
    frame = {}
    for name, values in columns.items():
        sql_type = types.get(name)
        if sql_type is None:
            raise KeyError(f"table {table.name} has no column {name!r} (store/schema.py defines its columns)")
        if len(values) != n:
            raise ValueError(f"column {name!r} of {table.name} has {len(values)} values, {ts_name} has {n}")
        if all(v is None for v in values):
            continue  # a column of None only has no type the client accepts; absent is NULL too
        if sql_type in _INTEGER_TYPES and any(v is None for v in values):
            column = _text(values, n)  # Python ints and None: the client writes an integer or nothing
        else:
            column = _TO_COLUMN["LONG" if sql_type in _INTEGER_TYPES else sql_type](values, n)
        frame[name] = pd.Series(column, dtype=column.dtype, copy=False)
    return pd.DataFrame(frame, copy=False)


_INTEGER_TYPES = frozenset({"INT", "LONG", "SHORT", "BYTE"})


def _put_columns(buffer, table: Table, columns: Mapping[str, Sequence]) -> int:
    frame = table_frame(table, columns)
    if len(frame):
        symbols = [name for name in frame.columns if table.column_types.get(name) == "SYMBOL"]
        buffer.dataframe(frame, table_name=table.name, symbols=symbols, at=table.columns[0][0])
    return len(frame)


def reject_row(row: RejectRow) -> IlpRow:
    return ilp_row(
        REJECTS,
        row.received_ns,
        topic=row.topic,
        claimed_station=row.claimed_station,
        reason=row.reason,
        detail=row.detail,
        payload_sha256=row.payload_sha256,
        payload_b64=row.payload_b64,
        payload_size=row.payload_size,
        payload_stored=row.payload_stored,
    )
