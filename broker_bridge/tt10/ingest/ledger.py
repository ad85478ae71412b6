"""The bridge's durable record of every file it received and what became of it (SQLite, WAL, FULL).

One row per upload, written before ``take`` returns (``record``), then moved through its states by
the sink's one worker thread, each move in one transaction (several moves may share one):

    received -> accepted | held | refused | duplicate        (judged)
    held     -> accepted | refused                            (its wait is over: whole lines taken)
    held     -> superseded                                    (a later upload replaced it)
    accepted: converted_ns set once its readings are sealed in the station's outbox

The refused lines of a judged file (line number, raw text, reason) are kept beside it. ``report_due``
marks rows whose state the warehouse's ``tt10_files`` table has not seen yet.

``transaction()`` groups several of the worker's moves into one commit (one fsync for a round of
judgements, not one per file); ``record`` waits for it, so an upload is still durable when ``record``
returns, and is never part of a transaction the worker could roll back.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from broker_bridge.tt10.sources.upload import Upload
from edge_agent.outbox import WriteTransaction

RECEIVED, ACCEPTED, HELD, REFUSED, DUPLICATE, SUPERSEDED = (
    "received", "accepted", "held", "refused", "duplicate", "superseded",
)  # fmt: skip
STATES = (RECEIVED, ACCEPTED, HELD, REFUSED, DUPLICATE, SUPERSEDED)
#: States a file never leaves (an accepted file still waits for its conversion: ``converted_ns``).
FINAL_STATES = frozenset({ACCEPTED, REFUSED, DUPLICATE, SUPERSEDED})

SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sha256 TEXT NOT NULL, account TEXT NOT NULL, station TEXT NOT NULL, name TEXT NOT NULL,
    path TEXT NOT NULL, transport TEXT NOT NULL, peer TEXT NOT NULL, received_ns INTEGER NOT NULL,
    size INTEGER NOT NULL, interrupted INTEGER NOT NULL,
    state TEXT NOT NULL, reasons TEXT NOT NULL DEFAULT '[]',
    readings INTEGER NOT NULL DEFAULT 0, refused_lines INTEGER NOT NULL DEFAULT 0,
    hold_until_ns INTEGER, decided_ns INTEGER, converted_ns INTEGER, first_seq INTEGER, last_seq INTEGER,
    duplicate_of INTEGER, superseded_by INTEGER,
    report_due INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS files_copy ON files(station, sha256);
CREATE INDEX IF NOT EXISTS files_state ON files(state, station);
CREATE INDEX IF NOT EXISTS files_report ON files(report_due) WHERE report_due = 1;
CREATE TABLE IF NOT EXISTS refused_lines (
    file_id INTEGER NOT NULL, line INTEGER NOT NULL, raw TEXT NOT NULL, reason TEXT NOT NULL,
    PRIMARY KEY (file_id, line)
);
"""

_COLUMNS = (
    "id, sha256, account, station, name, path, transport, peer, received_ns, size, interrupted, state, reasons,"
    " readings, refused_lines, hold_until_ns, decided_ns, converted_ns, first_seq, last_seq, duplicate_of,"
    " superseded_by"
)


@dataclass(frozen=True, slots=True)
class FileRow:
    id: int
    sha256: str
    account: str
    station: str
    name: str
    path: str
    transport: str
    peer: str
    received_ns: int
    size: int
    interrupted: bool
    state: str
    reasons: tuple[str, ...]
    readings: int
    refused_lines: int
    hold_until_ns: int | None
    decided_ns: int | None
    converted_ns: int | None
    first_seq: int | None
    last_seq: int | None
    duplicate_of: int | None
    superseded_by: int | None

    @classmethod
    def of(cls, row: tuple) -> FileRow:
        values = list(row)
        values[10] = bool(values[10])
        values[12] = tuple(json.loads(values[12]))
        return cls(*values)


@dataclass(frozen=True, slots=True)
class RefusedRow:
    line: int
    raw: str
    reason: str


class Ledger:
    """Thread-safe: sources record from their threads, the sink's worker moves the states."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Re-entrant: the moves inside a worker's transaction() take it again. Sources' record() waits for
        # the whole transaction (it shares the connection, so it must not land inside an open one).
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a recorded upload survives a power cut
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """The worker's moves inside are one transaction: committed together on leaving, rolled back on an
        exception. The moves read their own uncommitted writes (one connection), so a round judges as one
        file at a time would."""
        with self._lock, self._write():
            yield

    @contextmanager
    def _write(self) -> Iterator[None]:
        with self._lock:
            if self._db.in_transaction:  # inside transaction(): its commit is ours
                yield
            else:
                with WriteTransaction(self._db):
                    yield

    def _select(self, where: str, params: Sequence = ()) -> list[FileRow]:
        with self._lock:
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM files WHERE {where}", params).fetchall()
        return [FileRow.of(r) for r in rows]

    # -- the stream: one row per upload ------------------------------------
    def record(self, upload: Upload, sha256: str) -> int:
        with self._lock:
            if self._db.in_transaction:  # only the worker's own thread could get here: a bug, not a race
                raise RuntimeError("record() inside the worker's transaction would not be durable on return")
            return self._insert(upload, sha256)

    def _insert(self, upload: Upload, sha256: str) -> int:
        return self._db.execute(
            "INSERT INTO files(sha256, account, station, name, path, transport, peer, received_ns, size,"
            " interrupted, state) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (
                sha256,
                upload.account,
                upload.station,
                upload.name,
                upload.path,
                upload.transport,
                upload.peer,
                upload.received_ns,
                len(upload.data),
                int(upload.interrupted),
                RECEIVED,
            ),  # fmt: skip
        ).lastrowid

    def record_all(self, uploads: Sequence[tuple[Upload, str]]) -> list[int]:
        """``record`` for several uploads (and their SHA-256s) in one transaction: one commit for all."""
        with self._lock:
            if self._db.in_transaction:
                raise RuntimeError("record_all() inside the worker's transaction would not be durable on return")
            with WriteTransaction(self._db):
                return [self._insert(upload, sha256) for upload, sha256 in uploads]

    # -- the worker's reads ------------------------------------------------
    def get(self, file_id: int) -> FileRow | None:
        rows = self._select("id=?", (file_id,))
        return rows[0] if rows else None

    def received(self, limit: int = 1000) -> list[FileRow]:
        return self._select("state=? ORDER BY id LIMIT ?", (RECEIVED, limit))

    def earlier_copy(self, station: str, sha256: str, before_id: int) -> FileRow | None:
        """The first earlier upload of the same bytes for the station that was judged (not a duplicate)."""
        rows = self._select(
            "station=? AND sha256=? AND id<? AND state NOT IN (?, ?) ORDER BY id LIMIT 1",
            (station, sha256, before_id, RECEIVED, DUPLICATE),
        )
        return rows[0] if rows else None

    def held(self, station: str) -> list[FileRow]:
        return self._select("state=? AND station=? ORDER BY id", (HELD, station))

    def due_holds(self, now_ns: int) -> list[FileRow]:
        return self._select("state=? AND hold_until_ns<=? ORDER BY id", (HELD, now_ns))

    def to_convert(self, limit: int = 1000) -> list[FileRow]:
        return self._select("state=? AND converted_ns IS NULL ORDER BY id LIMIT ?", (ACCEPTED, limit))

    def report_due(self, limit: int = 1000) -> list[FileRow]:
        return self._select("report_due=1 ORDER BY id LIMIT ?", (limit,))

    def files(self, station: str | None = None, limit: int | None = None) -> list[FileRow]:
        where = "station=?" if station else "1=1"
        params: list = [station] if station else []
        where += " ORDER BY id DESC"
        if limit:
            where += " LIMIT ?"
            params.append(limit)
        return self._select(where, params)[::-1]

    def refused_of(self, file_id: int) -> list[RefusedRow]:
        with self._lock:
            rows = self._db.execute(
                "SELECT line, raw, reason FROM refused_lines WHERE file_id=? ORDER BY line", (file_id,)
            ).fetchall()
        return [RefusedRow(*r) for r in rows]

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT state, count(*) FROM files GROUP BY state").fetchall()
            unconverted = self._db.execute(
                "SELECT count(*) FROM files WHERE state=? AND converted_ns IS NULL", (ACCEPTED,)
            ).fetchone()[0]
        return {**{s: 0 for s in STATES}, **dict(rows), "unconverted": unconverted}

    # -- the worker's moves, one transaction each ----------------------------
    def decide(
        self,
        file_id: int,
        state: str,
        reasons: Iterable[str],
        *,
        readings: int = 0,
        refused: Iterable[RefusedRow] = (),
        hold_until_ns: int | None = None,
        duplicate_of: int | None = None,
        supersedes: Iterable[int] = (),
    ) -> None:
        """Judge a file (and retire the holds it replaces) in one transaction."""
        if state not in STATES or state == RECEIVED:
            raise ValueError(f"{state!r} is not a judgement")
        refused = list(refused)
        now = time.time_ns()
        with self._write():
            self._db.execute(
                "UPDATE files SET state=?, reasons=?, readings=?, refused_lines=?, hold_until_ns=?, decided_ns=?,"
                " duplicate_of=?, report_due=1 WHERE id=?",
                (
                    state,
                    json.dumps(list(reasons), ensure_ascii=False),
                    readings,
                    len(refused),
                    hold_until_ns,
                    now,
                    duplicate_of,
                    file_id,
                ),  # fmt: skip
            )
            self._db.execute("DELETE FROM refused_lines WHERE file_id=?", (file_id,))
            self._db.executemany(
                "INSERT INTO refused_lines(file_id, line, raw, reason) VALUES (?,?,?,?)",
                [(file_id, r.line, r.raw, r.reason) for r in refused],
            )
            for old in supersedes:
                self._db.execute(
                    "UPDATE files SET state=?, superseded_by=?, decided_ns=?, report_due=1,"
                    " reasons=json_insert(reasons, '$[#]', ?) WHERE id=? AND state=?",
                    (SUPERSEDED, file_id, now, f"replaced by upload #{file_id} before its wait was over", old, HELD),
                )

    def mark_converted(self, file_id: int, first_seq: int, last_seq: int) -> None:
        with self._write():
            self._db.execute(
                "UPDATE files SET converted_ns=?, first_seq=?, last_seq=?, report_due=1 WHERE id=?",
                (time.time_ns(), first_seq, last_seq, file_id),
            )

    def mark_reported(self, rows: Iterable[FileRow]) -> None:
        """The warehouse has these rows as they were read: clear their flag unless they changed since."""
        with self._lock, WriteTransaction(self._db):
            self._db.executemany(
                "UPDATE files SET report_due=0 WHERE id=? AND state=? AND converted_ns IS ?",
                [(r.id, r.state, r.converted_ns) for r in rows],
            )

    # -- retention -----------------------------------------------------------
    def prune(self, cutoff_ns: int) -> list[str]:
        """Forget files received before ``cutoff_ns`` that are finished (final, converted if accepted,
        reported); returns the SHA-256s no remaining row names (their archived bytes may go)."""
        finished = (
            "received_ns < ? AND report_due = 0 AND state IN (?, ?, ?, ?) AND (state != ? OR converted_ns IS NOT NULL)"
        )
        params = (cutoff_ns, *sorted(FINAL_STATES), ACCEPTED)
        with self._lock, WriteTransaction(self._db):
            shas = {r[0] for r in self._db.execute(f"SELECT DISTINCT sha256 FROM files WHERE {finished}", params)}
            ids = [r[0] for r in self._db.execute(f"SELECT id FROM files WHERE {finished}", params)]
            self._db.executemany("DELETE FROM refused_lines WHERE file_id=?", [(i,) for i in ids])
            self._db.execute(f"DELETE FROM files WHERE {finished}", params)
            kept = {r[0] for r in self._db.execute("SELECT DISTINCT sha256 FROM files")}
        return sorted(shas - kept)
