"""The SQL of the bulk downloads (``store/bulk_export``): which stations and parameters a day holds,
each station's province, a file's rows, and the open gaps that keep a day provisional.

Times are UTC nanoseconds (``ts::long`` keeps the nanoseconds the PG wire would round away). A file's rows
are read in one query on a connection kept for the day (``export_reader``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from store.queries import connect
from store.schema import STATION_METADATA

#: The columns of a published readings row, in file order, as the SELECT below gives them (after ts).
READING_COLUMNS = (
    "station",
    "device",
    "parameter",
    "value",
    "unit",
    "status",
    "cause",
    "qc_flag",
    "qc_check",
    "qc_cause",
    "qc_checks",
    "source",
    "file_sha256",
)


@dataclass(frozen=True, slots=True)
class ExportRow:
    """One stored reading as a published file carries it; ``ts_ns`` UTC, text None where the column is NULL."""

    ts_ns: int
    station: str
    device: str
    parameter: str
    value: float | None
    unit: str | None
    status: str | None
    cause: str | None
    qc_flag: int | None
    qc_check: str | None
    qc_cause: str | None
    qc_checks: str | None
    source: str | None
    file_sha256: str | None


def station_provinces(conninfo: str) -> dict[str, str | None]:
    """Each station's province code from its newest ``station_metadata`` row (None: the row names none).

    A station without a row is absent; a warehouse older than the table gives ``{}`` (every station
    is then of no known province) rather than an error.
    """
    with connect(conninfo) as conn:
        present = conn.execute("SELECT count() FROM tables() WHERE table_name = %s", (STATION_METADATA.name,))
        if not present.fetchone()[0]:
            return {}
        rows = conn.execute(
            f"SELECT station, province_code FROM {STATION_METADATA.name} LATEST ON ts PARTITION BY station"
        ).fetchall()
    return {station: (province or None) for station, province in rows}


def day_series(conninfo: str, low_ns: int, high_ns: int) -> list[tuple[str, str]]:
    """(station, parameter) of every reading with ``low_ns <= ts < high_ns``, each pair once, sorted."""
    with connect(conninfo) as conn:
        rows = conn.execute(
            "SELECT DISTINCT station, parameter FROM readings"
            " WHERE ts >= cast(%s AS TIMESTAMP_NS) AND ts < cast(%s AS TIMESTAMP_NS)",
            (low_ns, high_ns),
        ).fetchall()
    return sorted(rows)


class ExportReader:
    """One connection for the many files of a day (opening one per file cost 24 ms each here)."""

    def __init__(self, conn) -> None:
        self._conn = conn

    def rows(self, parameter: str, stations: Sequence[str], low_ns: int, high_ns: int) -> list[ExportRow]:
        """The readings of ``parameter`` at ``stations`` with ``low_ns <= ts < high_ns``, in file order
        (station, device, time: the same rows always come in the same order, so an unchanged day
        re-exports to the same bytes). One province's day of one parameter: fetched whole, as its file is
        built whole (single-row streaming cost more than encoding the file)."""
        if not stations:
            return []
        marks = ", ".join(["%s"] * len(stations))
        cursor = self._conn.execute(
            f"SELECT ts::long, {', '.join(READING_COLUMNS)} FROM readings WHERE parameter = %s"
            f" AND station IN ({marks}) AND ts >= cast(%s AS TIMESTAMP_NS) AND ts < cast(%s AS TIMESTAMP_NS)"
            " ORDER BY station, device, ts",
            (parameter, *stations, low_ns, high_ns),
        )
        return [ExportRow(*row) for row in cursor.fetchall()]


@contextmanager
def export_reader(conninfo: str) -> Iterator[ExportReader]:
    with connect(conninfo) as conn:
        yield ExportReader(conn)


def open_gaps_seen_since(conninfo: str, stations: Sequence[str], since_ns: int) -> dict[str, list[tuple[int, int]]]:
    """Per station, the (first, last) missing sequence numbers of its gaps still open (asked for again)
    that were seen at or after ``since_ns``. A gap seen earlier cannot hold readings taken later: the
    batch after it, which revealed it, was received before then."""
    if not stations:
        return {}
    marks = ", ".join(["%s"] * len(stations))
    found: dict[str, list[tuple[int, int]]] = {}
    with connect(conninfo) as conn:
        for station, first, last in conn.execute(
            "SELECT station, first_missing, last_missing FROM sequence_gaps"
            f" WHERE (state IS NULL OR state = 'open') AND ts >= cast(%s AS TIMESTAMP_NS) AND station IN ({marks})"
            " ORDER BY station, first_missing",
            (since_ns, *stations),
        ):
            found.setdefault(station, []).append((first, last))
    return found
