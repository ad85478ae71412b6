"""The durable queue of TT10 files to deliver: one row per target per cycle, the file's bytes in it.

SQLite in WAL mode with ``synchronous=FULL``: a file is in the queue (and the target's cursor
past its cycle) in one committed transaction before any upload is tried, so a crash or a
province outage loses nothing. A row is ``sent`` only after the rename on the server
succeeded; sent rows are kept ``retention_days`` (the regulation's 60) for audit and re-sending.
A cycle whose file could not be written (bad data) keeps a row with the reason, never silently.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    target TEXT NOT NULL,
    cycle_end_ns INTEGER NOT NULL,
    name TEXT NOT NULL,
    remote_dir TEXT NOT NULL,
    content BLOB,                -- NULL: the cycle's file could not be written, see error
    sha256 TEXT NOT NULL,
    lines INTEGER NOT NULL,
    queued_ns INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_try_ns INTEGER NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT '',
    sent_ns INTEGER,
    PRIMARY KEY (target, cycle_end_ns)
);
CREATE INDEX IF NOT EXISTS files_pending ON files(target, cycle_end_ns) WHERE sent_ns IS NULL AND content IS NOT NULL;
CREATE INDEX IF NOT EXISTS files_sent ON files(sent_ns) WHERE sent_ns IS NOT NULL;
CREATE TABLE IF NOT EXISTS cursors (target TEXT PRIMARY KEY, last_cycle_end_ns INTEGER NOT NULL);
"""

DAY_NS = 86_400 * 10**9


@dataclass(frozen=True, slots=True)
class QueuedFile:
    target: str
    cycle_end_ns: int
    name: str
    remote_dir: str
    content: bytes
    attempts: int
    next_try_ns: int


class Tt10Queue:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    def last_cycle(self, target: str) -> int | None:
        """The end of the last cycle handled for ``target`` (queued, empty or unwritable); None: never started."""
        row = self._db.execute("SELECT last_cycle_end_ns FROM cursors WHERE target = ?", (target,)).fetchone()
        return None if row is None else row[0]

    def start_at(self, target: str, cycle_end_ns: int) -> None:
        self._db.execute(
            "INSERT OR IGNORE INTO cursors(target, last_cycle_end_ns) VALUES (?, ?)", (target, cycle_end_ns)
        )

    def add_cycle(
        self,
        target: str,
        cycle_end_ns: int,
        *,
        name: str = "",
        remote_dir: str = "",
        content: bytes | None = None,
        lines: int = 0,
        error: str = "",
    ) -> None:
        """Record a finished cycle: its file (``content``), why it has none (``error``), or nothing (no readings)."""
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            if content is not None or error:
                self._db.execute(
                    "INSERT OR IGNORE INTO files(target, cycle_end_ns, name, remote_dir, content, sha256, lines,"
                    " queued_ns, last_error) VALUES (?,?,?,?,?,?,?,?,?)",
                    (
                        target,
                        cycle_end_ns,
                        name,
                        remote_dir,
                        content,
                        hashlib.sha256(content).hexdigest() if content is not None else "",
                        lines,
                        time.time_ns(),
                        error,
                    ),
                )
            self._db.execute(
                "INSERT INTO cursors(target, last_cycle_end_ns) VALUES (?, ?) ON CONFLICT(target)"
                " DO UPDATE SET last_cycle_end_ns = max(last_cycle_end_ns, excluded.last_cycle_end_ns)",
                (target, cycle_end_ns),
            )

    def pending(self, target: str, limit: int = 100) -> list[QueuedFile]:
        """The target's unsent files, oldest cycle first."""
        rows = self._db.execute(
            "SELECT target, cycle_end_ns, name, remote_dir, content, attempts, next_try_ns FROM files"
            " WHERE target = ? AND sent_ns IS NULL AND content IS NOT NULL ORDER BY cycle_end_ns LIMIT ?",
            (target, limit),
        ).fetchall()
        return [QueuedFile(*row) for row in rows]

    def mark_sent(self, target: str, cycle_end_ns: int, now_ns: int | None = None) -> None:
        with self._db:
            self._db.execute(
                "UPDATE files SET sent_ns = ?, last_error = '' WHERE target = ? AND cycle_end_ns = ?",
                (now_ns or time.time_ns(), target, cycle_end_ns),
            )

    def mark_failed(self, target: str, cycle_end_ns: int, error: str, next_try_ns: int) -> None:
        with self._db:
            self._db.execute(
                "UPDATE files SET attempts = attempts + 1, last_error = ?, next_try_ns = ?"
                " WHERE target = ? AND cycle_end_ns = ?",
                (error, next_try_ns, target, cycle_end_ns),
            )

    def expire(self, target: str, retention_days: float, now_ns: int | None = None) -> int:
        """Drop files sent more than ``retention_days`` ago (and unwritable records as old). Returns how many."""
        cutoff = (now_ns or time.time_ns()) - int(retention_days * DAY_NS)
        with self._db:
            return self._db.execute(
                "DELETE FROM files WHERE target = ? AND ((sent_ns IS NOT NULL AND sent_ns < ?)"
                " OR (content IS NULL AND queued_ns < ?))",
                (target, cutoff, cutoff),
            ).rowcount

    def counts(self, target: str) -> dict[str, int | None]:
        pending, sent, unwritable, oldest = self._db.execute(
            "SELECT coalesce(sum(sent_ns IS NULL AND content IS NOT NULL), 0), count(sent_ns),"
            " coalesce(sum(content IS NULL), 0), min(CASE WHEN sent_ns IS NULL AND content IS NOT NULL"
            " THEN cycle_end_ns END) FROM files WHERE target = ?",
            (target,),
        ).fetchone()
        return {"pending": pending, "sent": sent, "unwritable": unwritable, "oldest_pending_ns": oldest}

    def sent(self, target: str) -> list[tuple[int, str, bytes, int]]:
        """(cycle end, name, content, sent ns) of the files sent, oldest cycle first (audit, tests)."""
        return self._db.execute(
            "SELECT cycle_end_ns, name, content, sent_ns FROM files WHERE target = ? AND sent_ns IS NOT NULL"
            " ORDER BY cycle_end_ns",
            (target,),
        ).fetchall()
