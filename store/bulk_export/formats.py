"""A file's bytes from its rows: CSV (RFC 4180, UTF-8) and Parquet (pyarrow). Pure: no I/O.

Both carry the same columns (``COLUMNS``). Times twice: ``ts_utc`` and ``ts_local`` (Vietnam, +07:00),
the same instant; in CSV as ISO 8601 text with nine fraction digits, in Parquet as nanosecond
timestamps (UTC, and zone ``+07:00``). An absent value (NULL) is an empty CSV cell and a Parquet null.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from store.bulk_export.layout import iso_local, iso_utc
from store.export_queries import ExportRow

#: (column, what it holds): the published readings file, in order (store/bulk_export/README.md says why these).
COLUMNS: tuple[tuple[str, str], ...] = (
    ("ts_utc", "when the station measured it, UTC"),
    ("ts_local", "the same instant in Vietnam local time (UTC+7)"),
    ("province", "the station's province code (unknown: the warehouse has none)"),
    ("station", "station id"),
    ("device", "the analyzer at the station"),
    ("parameter", "the regulation's symbol (TT 10/2021), e.g. PM2,5"),
    ("value", "the measured value; empty when the analyzer gave no usable value"),
    ("unit", "the unit the station reported"),
    ("status", "the regulation's instrument status: 00 measuring, 01 calibrating, 02 device error"),
    ("cause", "why the status, as the station said"),
    ("qc_flag", "QARTOD flag of the measurement controls: 1 pass, 2 not evaluated, 3 suspect, 4 fail, 9 missing"),
    ("qc_check", "the control that decided the flag"),
    ("qc_cause", "why it decided so"),
    ("qc_checks", "every control that fired"),
    ("source", "agent (the station's own signed agent) or tt10 (converted from a TT10 file)"),
    ("file_sha256", "for tt10 rows: the SHA-256 of the TT10 file the reading came from"),
)
COLUMN_NAMES = tuple(name for name, _ in COLUMNS)
AGENT = "agent"  # a NULL source: a row written before the column existed, an agent's (store/schema.py)

PARQUET_SCHEMA = pa.schema(
    [
        ("ts_utc", pa.timestamp("ns", tz="UTC")),
        ("ts_local", pa.timestamp("ns", tz="+07:00")),
        ("province", pa.string()),
        ("station", pa.string()),
        ("device", pa.string()),
        ("parameter", pa.string()),
        ("value", pa.float64()),
        ("unit", pa.string()),
        ("status", pa.string()),
        ("cause", pa.string()),
        ("qc_flag", pa.int8()),
        ("qc_check", pa.string()),
        ("qc_cause", pa.string()),
        ("qc_checks", pa.string()),
        ("source", pa.string()),
        ("file_sha256", pa.string()),
    ]
)
assert tuple(PARQUET_SCHEMA.names) == COLUMN_NAMES


def _record(province: str, r: ExportRow) -> tuple:
    return (
        r.ts_ns,
        r.ts_ns,
        province,
        r.station,
        r.device,
        r.parameter,
        r.value,
        r.unit,
        r.status,
        r.cause,
        r.qc_flag,
        r.qc_check,
        r.qc_cause,
        r.qc_checks,
        r.source or AGENT,
        r.file_sha256,
    )


def encode_csv(province: str, rows: Iterable[ExportRow]) -> tuple[bytes, int]:
    """(file bytes, row count). A header line, then one line per reading; CRLF line ends and quoting where
    needed (RFC 4180: ``"PM2,5"``); UTF-8 without a byte-order mark."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\r\n")
    writer.writerow(COLUMN_NAMES)
    count = 0
    for r in rows:
        # The csv module writes None as an empty cell and a float as repr() (the shortest text that reads
        # back as the same double): the values go in as they are.
        writer.writerow((iso_utc(r.ts_ns), iso_local(r.ts_ns), *_record(province, r)[2:]))
        count += 1
    return text.getvalue().encode("utf-8"), count


def encode_parquet(province: str, rows: Iterable[ExportRow]) -> tuple[bytes, int]:
    """(file bytes, row count): one row group, Snappy (what every Parquet reader takes), no pandas metadata."""
    records = [_record(province, r) for r in rows]
    columns = list(zip(*records)) if records else [[] for _ in COLUMN_NAMES]
    table = pa.Table.from_arrays(
        [pa.array(values, type=field.type) for values, field in zip(columns, PARQUET_SCHEMA)], schema=PARQUET_SCHEMA
    )
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="snappy")
    return sink.getvalue().to_pybytes(), len(records)


ENCODERS = {"csv": encode_csv, "parquet": encode_parquet}
