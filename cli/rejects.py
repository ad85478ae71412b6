"""`quantrac rejects list|export`: the messages the collector refused, with their reasons and payloads.

Every refused message is kept in QuestDB's ``rejects`` table (topic, claimed
station, reason, detail, the payload's first 64 KiB in base64, its size and
SHA-256); the whole bytes of a larger payload are in the collector's payload
store (``collector run --reject-store DIR``, files named by the SHA-256).
``list`` shows the newest ones as a table for an operator at a terminal;
``export`` writes every field of every matching reject, payload included, as
JSON lines or CSV, for an investigation or for re-playing a payload after a
fix; given the payload store (``--reject-store``) it writes whole payloads.

A message redelivered after a collector crash can be rejected twice, with two
receive times: the payload's SHA-256 tells such repeats apart.
"""

from __future__ import annotations

import base64
import csv
import json
import os
import re
import sys
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from store.errors import WarehouseUnavailable
from store.payload_store import REJECT_HEAD_BYTES, PayloadStore

if TYPE_CHECKING:  # store.queries brings psycopg, which every other quantrac command (the agent) must not load
    from store.queries import RejectRecord

FORMATS = ("jsonl", "csv")
EXPORT_FIELDS = (
    "received_at",
    "received_ns",
    "topic",
    "claimed_station",
    "reason",
    "detail",
    "payload_sha256",
    "payload_size",  # the whole payload's bytes (empty for rejects stored before sizes were kept)
    "payload_stored",  # its whole bytes are in the collector's payload store
    "payload_whole",  # payload_b64 holds the whole payload (not only its first 64 KiB)
    "payload_b64",  # last, so a whole payload from the store can be streamed into a JSON line
)
_STORE_CHUNK = 3 * 256 * 1024  # a multiple of 3: base64 of each chunk joins without padding
_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class RejectsError(RuntimeError):
    """A bad argument or an unreachable warehouse, said so that an operator can act on it."""


def pg_conninfo(questdb_pg: str) -> str:
    """libpq conninfo for QuestDB's PostgreSQL wire at ``host:port``."""
    from store.questdb_server import QuestDBEndpoints

    try:
        return QuestDBEndpoints.at(questdb_pg).pg_conninfo
    except ValueError as exc:
        raise RejectsError(f"--questdb-pg: {exc}") from exc


def parse_when(value: str | datetime | None, now: datetime | None = None) -> datetime | None:
    """An ISO 8601 time (UTC when it names no zone) or an age before now: ``90s``, ``30m``, ``24h``, ``7d``, ``2w``."""
    if value is None or isinstance(value, datetime):
        moment = value
    else:
        age = _AGE.match(value)
        if age:
            moment = (now or datetime.now(UTC)) - timedelta(**{_UNITS[age.group(2)]: float(age.group(1))})
        else:
            try:
                moment = datetime.fromisoformat(value.strip())
            except ValueError as exc:
                raise RejectsError(
                    f"{value!r} is neither an ISO 8601 time (2026-05-01T08:00:00+07:00) nor an age (30m, 24h, 7d)"
                ) from exc
    if moment is not None and moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # everything inside quantrac is UTC
    return moment


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())  # a detail may hold newlines; a table row must not
    return text if len(text) <= width else text[: width - 1] + "…"


def _payload_cell(r: RejectRecord) -> str:
    """The payload's size, and where its whole bytes are: ``in row``, ``store`` or ``first 64 KiB`` only."""
    if r.payload_size is None:
        return "in row"  # stored before payloads were bounded: the row holds it whole
    where = "store" if r.payload_stored else ("in row" if r.payload_size <= REJECT_HEAD_BYTES else "first 64 KiB")
    return f"{r.payload_size} B {where}"


def format_table(rows: list[RejectRecord]) -> list[str]:
    headers = ("time (UTC)", "station", "reason", "detail", "topic", "sha256", "payload")
    cells = [
        (
            r.received_at.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3],
            r.claimed_station or "-",
            r.reason,
            _clip(r.detail, 60),
            _clip(r.topic, 48),
            r.payload_sha256[:12],
            _payload_cell(r),
        )
        for r in rows
    ]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, h in enumerate(headers)]
    return ["  ".join(v.ljust(w) for v, w in zip(line, widths)).rstrip() for line in [headers, *cells]]


def list_rejects(
    conninfo: str,
    station: str | None = None,
    reason: str | None = None,
    since: str | datetime | None = None,
    limit: int = 50,
    echo: Callable[[str], None] = print,
) -> list[RejectRecord]:
    """Print the newest ``limit`` matching rejects as a table (newest first); return them."""
    from store.queries import QueryError, recent_rejects

    if limit < 1:
        raise RejectsError(f"--limit must be at least 1, not {limit}")
    try:
        rows = recent_rejects(conninfo, station=station, reason=reason, since=parse_when(since), limit=limit)
    except (QueryError, WarehouseUnavailable) as exc:
        raise RejectsError(f"cannot read rejects from QuestDB: {exc}") from exc
    if not rows:
        echo("no rejects match")
        return rows
    for line in format_table(rows):
        echo(line)
    more = " (the newest; raise --limit for more)" if len(rows) == limit else ""
    echo(
        f"{len(rows)} reject{'s' if len(rows) != 1 else ''}{more}; "
        "`quantrac rejects export` writes them with their payloads"
    )
    return rows


def _export_row(r: RejectRecord, whole_in_store: bool) -> dict[str, object]:
    row = asdict(r)
    row["received_at"] = r.received_at.replace(tzinfo=UTC).isoformat()
    row["payload_whole"] = whole_in_store or r.payload_size is None or r.payload_size <= REJECT_HEAD_BYTES
    return {name: row[name] for name in EXPORT_FIELDS}


def _stored_b64(store: PayloadStore, sha256: str):
    """The stored payload's base64, chunk by chunk."""
    for chunk in store.read_chunks(sha256, _STORE_CHUNK):
        yield base64.b64encode(chunk).decode("ascii")


def export_rejects(
    conninfo: str,
    out_path: str | Path,
    format: str = "jsonl",  # noqa: A002 - the CLI option's name
    station: str | None = None,
    reason: str | None = None,
    since: str | datetime | None = None,
    until: str | datetime | None = None,
    payload_store: str | Path | None = None,
) -> int:
    """Write every matching reject, oldest first, with every field and the base64 payload; return how many.

    A payload over 64 KiB is in its row only by its first 64 KiB; with ``payload_store`` (the
    collector's ``--reject-store``) its whole bytes are read from there, in chunks, and
    ``payload_whole`` says which rows hold the whole payload.

    ``out_path`` "-" is standard output. A file is written beside its final
    name and renamed into place at the end, so a failed export never leaves
    a file that looks complete.
    """
    from store.queries import QueryError, stream_rejects

    if format not in FORMATS:
        raise RejectsError(f"--format must be one of {', '.join(FORMATS)}, not {format!r}")
    store = None
    if payload_store is not None:
        if not Path(payload_store).is_dir():
            raise RejectsError(f"--reject-store {payload_store}: no such directory (the collector's --reject-store)")
        store = PayloadStore(payload_store, writable=False)
    rows = stream_rejects(conninfo, station=station, reason=reason, since=parse_when(since), until=parse_when(until))
    to_stdout = str(out_path) == "-"
    target = Path(out_path)
    tmp = target.with_name(f".{target.name}.partial")
    # A detail or topic is text the collector made or MQTT checked; backslashreplace only guards the export
    # against a lone surrogate, which no UTF-8 file can hold.
    handle = sys.stdout if to_stdout else tmp.open("w", encoding="utf-8", errors="backslashreplace", newline="")
    count, complete = 0, False
    try:
        writer = csv.DictWriter(handle, fieldnames=EXPORT_FIELDS) if format == "csv" else None
        if writer is not None:
            writer.writeheader()
        for record in rows:
            whole = store is not None and record.payload_stored and store.has(record.payload_sha256)
            row = _export_row(record, whole)
            if writer is not None:
                if whole:
                    row["payload_b64"] = "".join(_stored_b64(store, record.payload_sha256))
                writer.writerow(row)
            elif whole:
                # The payload goes out chunk by chunk: a stored payload may be tens of megabytes.
                row["payload_b64"] = ""
                line = json.dumps(row)
                handle.write(line[: -len('""}')] + '"')
                for part in _stored_b64(store, record.payload_sha256):
                    handle.write(part)
                handle.write('"}\n')
            else:
                handle.write(json.dumps(row) + "\n")
            count += 1
        complete = True
    except (QueryError, WarehouseUnavailable) as exc:
        raise RejectsError(f"cannot read rejects from QuestDB: {exc}") from exc
    finally:
        if to_stdout:
            sys.stdout.flush()
        else:
            handle.close()
            if not complete:
                tmp.unlink(missing_ok=True)  # a partial export must never look like a whole one
    if not to_stdout:
        os.replace(tmp, target)
    return count
