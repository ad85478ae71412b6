"""The station's durable outbox (SQLite in WAL mode).

A reading's life: ``append`` stages it (committed and fsynced before the
agent treats it as taken) -> ``seal_next`` moves staged readings into a
signed batch with the next sequence number, in one transaction, so a
reading is either staged or in exactly one batch -> ``mark_acked`` records
the broker's PUBACK. The sealed payload is kept as sent, for audit and for
re-sending the identical bytes after a restart.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from broker_bridge.envelope import BatchBody, Reading, seal
from broker_bridge.keys import SigningKey

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS station_name (name TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS staged (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts_ns INTEGER NOT NULL, device TEXT NOT NULL, parameter TEXT NOT NULL,
    value REAL, unit TEXT NOT NULL, status TEXT NOT NULL, cause TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS batches (
    seq INTEGER PRIMARY KEY,
    sealed_ns INTEGER NOT NULL,
    readings INTEGER NOT NULL,
    first_ts_ns INTEGER NOT NULL,
    payload BLOB NOT NULL,
    acked_ns INTEGER
);
CREATE INDEX IF NOT EXISTS batches_unacked ON batches(seq) WHERE acked_ns IS NULL;
"""


@dataclass(frozen=True, slots=True)
class SealedBatch:
    seq: int
    payload: bytes
    readings: int


class Outbox:
    def __init__(self, path: Path, station_id: str) -> None:
        self.path = Path(path)
        self.station_id = station_id
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None)  # explicit BEGIN/COMMIT below
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: in WAL mode every commit is fsynced, so a committed reading
        # survives a power cut; commits are grouped per poll cycle.
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        self._db.execute("INSERT OR IGNORE INTO meta(key, value) VALUES('last_seq', 0)")
        names = [r[0] for r in self._db.execute("SELECT name FROM station_name")]
        if not names:
            self._db.execute("INSERT INTO station_name(name) VALUES(?)", (station_id,))
        elif names[0] != station_id:
            raise ValueError(f"{self.path}: this outbox belongs to station {names[0]}, not {station_id}")

    def close(self) -> None:
        self._db.close()

    def append(self, readings: Iterable[Reading]) -> int:
        rows = [(r.ts_ns, r.device, r.parameter, r.value, r.unit, r.status, r.cause) for r in readings]
        if not rows:
            return 0
        with self._transaction():
            self._db.executemany(
                "INSERT INTO staged(ts_ns, device, parameter, value, unit, status, cause) VALUES (?,?,?,?,?,?,?)", rows
            )
        return len(rows)

    def seal_next(self, key: SigningKey, max_readings: int, historical_after_s: float) -> SealedBatch | None:
        """Seal the oldest staged readings into the next batch, or None if nothing is staged."""
        now = time.time_ns()
        with self._transaction():
            rows = self._db.execute(
                "SELECT id, ts_ns, device, parameter, value, unit, status, cause FROM staged ORDER BY id LIMIT ?",
                (max_readings,),
            ).fetchall()
            if not rows:
                return None
            last_seq = self._db.execute("SELECT value FROM meta WHERE key='last_seq'").fetchone()[0]
            seq = last_seq + 1
            readings = tuple(Reading(*row[1:]) for row in rows)
            first_ts = min(r.ts_ns for r in readings)
            body = BatchBody(
                station=self.station_id,
                seq=seq,
                sent_ns=now,
                readings=readings,
                # Readings that waited out an outage are marked so that the
                # warehouse can tell a replay from live data.
                historical=(now - first_ts) > historical_after_s * 1e9,
            )
            payload = seal(body, key.key_id, key.private_key)
            self._db.execute(
                "INSERT INTO batches(seq, sealed_ns, readings, first_ts_ns, payload) VALUES (?,?,?,?,?)",
                (seq, now, len(rows), first_ts, payload),
            )
            self._db.execute("DELETE FROM staged WHERE id <= ?", (rows[-1][0],))
            self._db.execute("UPDATE meta SET value=? WHERE key='last_seq'", (seq,))
        return SealedBatch(seq, payload, len(rows))

    def mark_acked(self, seqs: Iterable[int]) -> None:
        now = time.time_ns()
        with self._transaction():
            self._db.executemany(
                "UPDATE batches SET acked_ns=? WHERE seq=? AND acked_ns IS NULL", [(now, s) for s in seqs]
            )

    def unacked(self, limit: int, after_seq: int = 0) -> list[SealedBatch]:
        rows = self._db.execute(
            "SELECT seq, payload, readings FROM batches WHERE acked_ns IS NULL AND seq > ? ORDER BY seq LIMIT ?",
            (after_seq, limit),
        ).fetchall()
        return [SealedBatch(*row) for row in rows]

    def counts(self) -> dict[str, int]:
        staged = self._db.execute("SELECT count(*) FROM staged").fetchone()[0]
        unacked, unacked_readings = self._db.execute(
            "SELECT count(*), coalesce(sum(readings), 0) FROM batches WHERE acked_ns IS NULL"
        ).fetchone()
        acked = self._db.execute("SELECT count(*) FROM batches WHERE acked_ns IS NOT NULL").fetchone()[0]
        last_seq = self._db.execute("SELECT value FROM meta WHERE key='last_seq'").fetchone()[0]
        return {
            "staged_readings": staged,
            "unacked_batches": unacked,
            "unacked_readings": unacked_readings,
            "acked_batches": acked,
            "last_seq": last_seq,
        }

    def _transaction(self):
        return _Transaction(self._db)


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, tb) -> None:
        self._db.execute("COMMIT" if exc_type is None else "ROLLBACK")
