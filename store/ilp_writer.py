"""Writes rows into QuestDB over ILP/HTTP, one table per request.

One HTTP request holding one table is one QuestDB transaction, so a flush
either commits every row or none; the caller acknowledges upstream only
after ``flush_*`` returned. Rows are built in independent buffers because a
failed flush keeps their content, while the sender's own buffer would drop it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from questdb import QuestDBError, QuestDBErrorCode, Sender, TimestampNanos

from broker_bridge.envelope import Reading

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


@dataclass(frozen=True, slots=True)
class StoredReading:
    station: str
    seq: int
    historical: bool
    key_id: str
    received_ns: int
    reading: Reading
    qc_flag: int | None = None  # None: no measurement control ran
    qc_check: str = ""
    qc_cause: str = ""
    qc_checks: str = ""


IlpRow = tuple[dict[str, str], dict[str, object], int]


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

    def _flush(self, fill) -> int:
        try:
            sender = self._connected()
            buffer = sender.new_buffer()
            rows = fill(buffer)
            if rows:
                sender.flush(buffer, transactional=True)
            return rows
        except QuestDBError as exc:
            error = classify(exc)
            if isinstance(error, WarehouseUnavailable):
                self.close()  # reconnect from scratch next time
            raise error from exc

    def write_readings(self, rows: Iterable[StoredReading]) -> int:
        def fill(buffer) -> int:
            count = 0
            for row in rows:
                r = row.reading
                columns = {
                    "cause": r.cause,
                    "seq": row.seq,
                    "historical": row.historical,
                    "received_at": TimestampNanos(row.received_ns),
                }
                if r.value is not None:  # an absent ILP field is stored as NULL
                    columns["value"] = r.value
                symbols = {
                    "station": row.station,
                    "device": r.device,
                    "parameter": r.parameter,
                    "unit": r.unit,
                    "status": r.status,
                    "key_id": row.key_id,
                }
                if row.qc_flag is not None:
                    columns["qc_flag"] = row.qc_flag
                    if row.qc_check:
                        symbols["qc_check"] = row.qc_check
                        symbols["qc_checks"] = row.qc_checks
                        columns["qc_cause"] = row.qc_cause
                buffer.row("readings", symbols=symbols, columns=columns, at=TimestampNanos(r.ts_ns))
                count += 1
            return count

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
