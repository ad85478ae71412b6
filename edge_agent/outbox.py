"""The station's durable outbox (SQLite in WAL mode).

A reading's life: ``append`` stages it (committed and fsynced before the
agent treats it as taken) -> ``seal_next`` moves staged readings into a
signed batch with the next sequence number, in one transaction, so a
reading is either staged or in exactly one batch -> ``mark_acked`` records
the broker's PUBACK. The sealed payload is kept as sent, for audit and for
re-sending the identical bytes after a restart, until retention or the byte
cap removes it (acknowledged data first, and never silently).

Two lanes keep a long backlog from starving live data: readings taken while
the uplink is down (or left waiting too long) are "historical" and sealed
into batches flagged as such; live readings are sealed separately. Each
lane keeps its own order, so a device's history goes out oldest first.
"""

from __future__ import annotations

import math
import shutil
import sqlite3
import time
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from broker_bridge.envelope import (
    MAX_ENVELOPE_BYTES,
    READING_FRAMING_BYTES,
    BatchBody,
    Reading,
    decode_body,
    open_envelope,
    seal,
)
from broker_bridge.keys import SigningKey
from edge_agent.wal_check import inspect_wal
from vocabulary.status import STATUS_CODES

log = structlog.get_logger("edge_agent.outbox")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS station_name (name TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS staged (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts_ns INTEGER NOT NULL, device TEXT NOT NULL, parameter TEXT NOT NULL,
    value REAL, unit TEXT NOT NULL, status TEXT NOT NULL, cause TEXT NOT NULL,
    historical INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS staged_lane ON staged(historical, id);
CREATE TABLE IF NOT EXISTS batches (
    seq INTEGER PRIMARY KEY,
    sealed_ns INTEGER NOT NULL,
    readings INTEGER NOT NULL,
    first_ts_ns INTEGER NOT NULL,
    last_ts_ns INTEGER NOT NULL,
    historical INTEGER NOT NULL,
    payload BLOB NOT NULL,
    payload_crc INTEGER NOT NULL,  -- lets a salvage tell an intact row from a torn one
    acked_ns INTEGER,
    receipted_ns INTEGER,  -- the warehouse's receipt covered it: delivered (see RECEIPT_COLUMNS)
    resend_due_ns INTEGER,  -- PUBACKed, no receipt yet: sent again when this passes
    resend_attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS batches_unacked ON batches(seq) WHERE acked_ns IS NULL;
CREATE INDEX IF NOT EXISTS batches_last_ts ON batches(last_ts_ns);  -- OutboxReader: a cycle's batches
CREATE TABLE IF NOT EXISTS dropped (
    id INTEGER PRIMARY KEY AUTOINCREMENT, dropped_ns INTEGER NOT NULL,
    first_seq INTEGER, last_seq INTEGER, readings INTEGER NOT NULL, reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sealed_files (
    file_sha256 TEXT PRIMARY KEY, first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL, sealed_ns INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS recoveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT, recovered_ns INTEGER NOT NULL, detail TEXT NOT NULL
);
"""

# Added after the first outboxes were made: opening an older one adds them.
RECEIPT_COLUMNS = (
    ("receipted_ns", "INTEGER"),
    ("resend_due_ns", "INTEGER"),
    ("resend_attempts", "INTEGER NOT NULL DEFAULT 0"),
)
AWAITING_RECEIPT = "acked_ns IS NOT NULL AND receipted_ns IS NULL"
# After the receipt columns exist (an older outbox gains them first): awaiting_receipt and overdue read
# this index, not every batch of 60 days.
AWAITING_INDEX = (
    f"CREATE INDEX IF NOT EXISTS batches_awaiting_receipt ON batches(resend_due_ns) WHERE {AWAITING_RECEIPT}"
)

LIVE, BACKLOG = 0, 1
DAY_NS = 86_400 * 10**9
# After a salvage that could not read the last sequence number, jump far
# ahead: reusing a number the collector already saw would look like a replay.
SEQ_JUMP_AFTER_RECOVERY = 1_000_000
OVERFLOW_POLICIES = ("drop_oldest", "refuse_new")


class OutboxFull(RuntimeError):
    """The unsent data alone fills the byte cap and the policy is to refuse new readings."""


@dataclass(frozen=True, slots=True)
class FileToSeal:
    """A converted file's readings for ``Outbox.seal_files``: its batches name the file by ``sha256``."""

    readings: Sequence[Reading]
    sha256: str
    historical: bool = False


@dataclass(frozen=True, slots=True)
class SealedBatch:
    seq: int
    payload: bytes
    readings: int


@dataclass(frozen=True, slots=True)
class StagedWindow:
    """The live lane's oldest staged readings, at most a batch of them (``Outbox.live_window``)."""

    readings: int
    wire_bytes: int  # an upper bound of their size in a sealed batch, framing of the batch itself left out


@dataclass(frozen=True)
class RetentionPolicy:
    retention_days: float = 60.0  # the regulation: keep at least the last 60 days
    max_bytes: int = 2 * 1024**3
    overflow: str = "drop_oldest"  # what to do when unsent data alone reaches max_bytes
    # Receipts from the warehouse are in use: only a receipted batch is delivered and safe to drop; a
    # PUBACK alone is not (the broker may lose it). Without receipts a PUBACK is all there is.
    require_receipts: bool = False
    receipt_timeout_s: float = 30.0  # PUBACKed, no receipt this long: send it again; doubling per attempt
    receipt_timeout_max_s: float = 600.0

    def __post_init__(self) -> None:
        if self.overflow not in OVERFLOW_POLICIES:
            raise ValueError(f"overflow policy {self.overflow!r} is not one of {OVERFLOW_POLICIES}")


@dataclass
class Recovery:
    """What opening a damaged outbox cut, kept in the outbox and reported in the station status."""

    wal_cut_bytes: int = 0
    wal_reason: str = ""
    salvaged_from: str = ""
    batches_kept: int = 0
    staged_kept: int = 0
    rows_unreadable: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def anything_cut(self) -> bool:
        return bool(self.wal_cut_bytes or self.salvaged_from)


def _plausible_staged_row(row: tuple) -> bool:
    _id, ts_ns, device, parameter, value, unit, status, cause, historical = row
    return (
        isinstance(ts_ns, int)
        and ts_ns > 0
        and isinstance(device, str)
        and device != ""
        and isinstance(parameter, str)
        and parameter != ""
        and (value is None or (isinstance(value, float) and math.isfinite(value)))
        and isinstance(unit, str)
        and status in STATUS_CODES
        and isinstance(cause, str)
        and historical in (0, 1)
    )


class Outbox:
    def __init__(self, path: Path, station_id: str, retention: RetentionPolicy | None = None) -> None:
        self.path = Path(path)
        self.station_id = station_id
        self.retention = retention or RetentionPolicy()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.recovery = Recovery()
        wal = inspect_wal(Path(f"{self.path}-wal"))
        if wal is not None and wal.cut:
            self.recovery.wal_cut_bytes, self.recovery.wal_reason = wal.cut_bytes, wal.reason
        try:
            self._db = self._open(self.path, station_id)
        except sqlite3.DatabaseError as exc:
            self._db = self._salvage(str(exc))
        if self.recovery.anything_cut:
            self._record_recovery()
        names = [r[0] for r in self._db.execute("SELECT name FROM station_name")]
        if names[0] != station_id:
            raise ValueError(f"{self.path}: this outbox belongs to station {names[0]}, not {station_id}")

    @staticmethod
    def _open(path: Path, station_id: str) -> sqlite3.Connection:
        db = sqlite3.connect(path, isolation_level=None)  # explicit BEGIN/COMMIT below
        try:
            db.execute("PRAGMA journal_mode=WAL")
            # FULL: in WAL mode every commit is fsynced, so a committed reading
            # survives a power cut; commits are grouped, never one per reading.
            db.execute("PRAGMA synchronous=FULL")
            check = db.execute("PRAGMA quick_check").fetchall()
            if check != [("ok",)]:
                raise sqlite3.DatabaseError("quick_check: " + "; ".join(r[0] for r in check[:5]))
            # One transaction for the whole schema: a new outbox costs one commit, not one per statement
            # (a TT10 bridge creates 2,000 of them: 47 ms each before, mostly fsyncs).
            with WriteTransaction(db):
                for statement in SCHEMA.split(";"):  # its comments hold no ';'
                    if statement.strip():
                        db.execute(statement)
                present = {row[1] for row in db.execute("PRAGMA table_info(batches)")}
                for name, sql_type in RECEIPT_COLUMNS:
                    if name not in present:
                        db.execute(f"ALTER TABLE batches ADD COLUMN {name} {sql_type}")
                db.execute(AWAITING_INDEX)
                db.execute("INSERT OR IGNORE INTO meta(key, value) VALUES('last_seq', 0)")
                db.execute("INSERT OR IGNORE INTO meta(key, value) VALUES('session', 0)")
                db.execute(  # a new outbox is this station's; an existing one is checked by the caller
                    "INSERT INTO station_name(name) SELECT ? WHERE NOT EXISTS (SELECT 1 FROM station_name)",
                    (station_id,),
                )
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    # -- recovery -------------------------------------------------------
    def _salvage(self, error: str) -> sqlite3.Connection:
        """Move the damaged file aside, keep every row that can still be read, start afresh."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        damaged = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        for suffix in ("", "-wal", "-shm"):
            source = Path(f"{self.path}{suffix}")
            if source.exists():
                shutil.move(source, f"{damaged}{suffix}")
        self.recovery.salvaged_from = str(damaged)
        self.recovery.errors.append(error)
        db = self._open(self.path, self.station_id)
        try:
            old = sqlite3.connect(f"file:{damaged}?mode=ro", uri=True)
            # Without this SQLite refuses a file shorter than its header says
            # (a truncation) instead of reading the pages that are there.
            old.execute("PRAGMA writable_schema=ON")
        except sqlite3.DatabaseError as exc:
            self.recovery.errors.append(f"cannot open the damaged file at all: {exc}")
            old = None
        last_seq = None
        if old is not None:
            last_seq = self._read_or_none(old, "SELECT value FROM meta WHERE key='last_seq'")
            batches = self._copy_rows(
                old,
                db,
                "batches",
                "seq",
                "seq, sealed_ns, readings, first_ts_ns, last_ts_ns, historical, payload, payload_crc, acked_ns",
                lambda row: isinstance(row[6], bytes) and zlib.crc32(row[6]) == row[7],
            )
            staged = self._copy_rows(
                old,
                db,
                "staged",
                "id",
                "id, ts_ns, device, parameter, value, unit, status, cause, historical",
                _plausible_staged_row,
            )
            self.recovery.batches_kept, self.recovery.staged_kept = batches, staged
            old.close()
        max_batch = db.execute("SELECT coalesce(max(seq), 0) FROM batches").fetchone()[0]
        if last_seq is None:
            next_floor = max_batch + SEQ_JUMP_AFTER_RECOVERY
            self.recovery.errors.append(f"last sequence number unreadable; continuing after {next_floor}")
        else:
            next_floor = max(last_seq, max_batch)
        db.execute("UPDATE meta SET value=? WHERE key='last_seq'", (next_floor,))
        return db

    @staticmethod
    def _read_or_none(db: sqlite3.Connection, query: str):
        try:
            row = db.execute(query).fetchone()
        except sqlite3.DatabaseError:
            return None
        return None if row is None else row[0]

    def _copy_rows(
        self, old: sqlite3.Connection, new: sqlite3.Connection, table: str, key: str, columns: str, intact
    ) -> int:
        """Copy the intact rows by key range; where a range is unreadable, fall back to single rows.

        SQLite pads a page cut mid-way with zeros, so a row can read back
        without an error and still be damaged: ``intact`` decides.
        """
        top = self._read_or_none(old, f"SELECT max({key}) FROM {table}")
        if top is None:
            # The table's root is damaged; probe keys upwards until reads keep failing.
            top = self._probe_top(old, table, key)
        copied, chunk, low = 0, 500, 0
        placeholders = ",".join("?" * len(columns.split(",")))
        while low < top:
            high = min(low + chunk, top)
            try:
                rows = old.execute(
                    f"SELECT {columns} FROM {table} WHERE {key} > ? AND {key} <= ?", (low, high)
                ).fetchall()
            except sqlite3.DatabaseError:
                rows = []
                for single in range(low + 1, high + 1):
                    try:
                        rows += old.execute(f"SELECT {columns} FROM {table} WHERE {key} = ?", (single,)).fetchall()
                    except sqlite3.DatabaseError:
                        self.recovery.rows_unreadable += 1
            good = [row for row in rows if intact(row)]
            self.recovery.rows_unreadable += len(rows) - len(good)
            new.executemany(f"INSERT OR IGNORE INTO {table}({columns}) VALUES ({placeholders})", good)
            copied += len(good)
            low = high
        return copied

    def _probe_top(self, old: sqlite3.Connection, table: str, key: str) -> int:
        top, probe = 0, 1
        while probe < 1 << 40:
            try:
                if old.execute(f"SELECT 1 FROM {table} WHERE {key} >= ? LIMIT 1", (probe,)).fetchone() is None:
                    break
                top = probe
            except sqlite3.DatabaseError:
                break
            probe *= 2
        return top * 2

    def _record_recovery(self) -> None:
        r = self.recovery
        detail = (
            f"wal_cut_bytes={r.wal_cut_bytes} wal_reason={r.wal_reason!r} salvaged_from={r.salvaged_from!r} "
            f"batches_kept={r.batches_kept} staged_kept={r.staged_kept} rows_unreadable={r.rows_unreadable} "
            f"errors={r.errors!r}"
        )
        self._db.execute("INSERT INTO recoveries(recovered_ns, detail) VALUES (?, ?)", (time.time_ns(), detail))
        log.error("outbox_damage_cut", station=self.station_id, path=str(self.path), detail=detail)

    def close(self) -> None:
        self._db.close()

    # -- the data path ----------------------------------------------------
    def append(self, readings: Iterable[Reading], historical: bool = False) -> int:
        return self.append_groups([(readings, historical)])

    def append_groups(self, groups: Iterable[tuple[Iterable[Reading], bool]]) -> int:
        """Stage several pollers' readings in one transaction: one fsync for all of them."""
        rows = [
            (r.ts_ns, r.device, r.parameter, r.value, r.unit, r.status, r.cause, int(historical))
            for readings, historical in groups
            for r in readings
        ]
        if not rows:
            return 0
        with self._transaction():
            self._db.executemany(
                "INSERT INTO staged(ts_ns, device, parameter, value, unit, status, cause, historical)"
                " VALUES (?,?,?,?,?,?,?,?)",
                rows,
            )
        return len(rows)

    def live_window(self, max_readings: int) -> StagedWindow | None:
        """What the live lane holds, counting at most ``max_readings`` of its oldest readings (None: nothing)."""
        count, wire_bytes = self._db.execute(
            f"SELECT count(*), sum({READING_FRAMING_BYTES} + length(CAST(device AS BLOB))"
            " + length(CAST(parameter AS BLOB)) + length(CAST(unit AS BLOB)) + length(CAST(status AS BLOB))"
            " + length(CAST(cause AS BLOB)))"
            " FROM (SELECT * FROM staged WHERE historical=0 ORDER BY id LIMIT ?)",
            (max_readings,),
        ).fetchone()
        return StagedWindow(count, wire_bytes) if count else None

    def seal_next(
        self,
        key: SigningKey,
        max_readings: int,
        historical_after_s: float,
        lane: int | None = None,
        before_ns: int | None = None,
    ) -> SealedBatch | None:
        """Seal the oldest staged readings of a lane (default: live if any, else backlog) into the next batch.

        ``before_ns``: only the lane's oldest readings taken before then (a live window's end); the first
        one taken later and every one after it wait. A batch is cut short to stay within the envelope's
        byte limit."""
        now = time.time_ns()
        with self._transaction():
            # Live readings that waited too long become history: they are no longer "now".
            self._db.execute(
                "UPDATE staged SET historical=1 WHERE historical=0 AND ts_ns < ?",
                (now - int(historical_after_s * 1e9),),
            )
            lanes = (lane,) if lane is not None else (LIVE, BACKLOG)
            rows = []
            for chosen in lanes:
                rows = self._db.execute(
                    "SELECT id, ts_ns, device, parameter, value, unit, status, cause FROM staged"
                    " WHERE historical=? ORDER BY id LIMIT ?",
                    (chosen, max_readings),
                ).fetchall()
                if rows:
                    break
            if before_ns is not None:
                # A prefix in staging order: the DELETE below removes every row up to the last one sealed.
                rows = rows[: next((i for i, row in enumerate(rows) if row[1] >= before_ns), len(rows))]
            if not rows:
                return None
            seq = self._db.execute("SELECT value FROM meta WHERE key='last_seq'").fetchone()[0] + 1
            while True:
                readings = tuple(Reading(*row[1:]) for row in rows)
                body = BatchBody(
                    station=self.station_id, seq=seq, sent_ns=now, readings=readings, historical=chosen == BACKLOG
                )
                payload = seal(body, key.key_id, key.private_key)
                if len(payload) <= MAX_ENVELOPE_BYTES or len(rows) == 1:
                    break
                # Collectors refuse a larger payload unread: keep what fits, with a margin, and leave the rest staged.
                rows = rows[: max(1, len(rows) * MAX_ENVELOPE_BYTES // len(payload) * 9 // 10)]
            ts = [r.ts_ns for r in readings]
            self._db.execute(
                "INSERT INTO batches(seq, sealed_ns, readings, first_ts_ns, last_ts_ns, historical, payload,"
                " payload_crc) VALUES (?,?,?,?,?,?,?,?)",
                (seq, now, len(rows), min(ts), max(ts), int(chosen == BACKLOG), payload, zlib.crc32(payload)),
            )
            self._db.execute("DELETE FROM staged WHERE historical=? AND id <= ?", (chosen, rows[-1][0]))
            self._db.execute("UPDATE meta SET value=? WHERE key='last_seq'", (seq,))
        return SealedBatch(seq, payload, len(rows))

    def seal_file(
        self,
        key: SigningKey,
        readings: Sequence[Reading],
        *,
        source: str,
        file_sha256: str,
        max_readings: int = 1000,
        historical: bool = False,
    ) -> tuple[int, int, bool]:
        """Seal a converted file's readings (a TT10 bridge's) into batches that name the file, once per file.

        One transaction seals every batch of the file and records its SHA-256, so a caller killed at
        any point finds the file either wholly sealed or not at all, and sealing it again is a no-op.
        Returns (first seq, last seq, sealed now); ``sealed now`` is False when it was sealed before.
        """
        return self.seal_files(key, [FileToSeal(readings, file_sha256, historical)], source=source,
                               max_readings=max_readings)[0]  # fmt: skip

    def seal_files(
        self, key: SigningKey, files: Sequence[FileToSeal], *, source: str, max_readings: int = 1000
    ) -> list[tuple[int, int, bool]]:
        """``seal_file`` for several files in one transaction (one commit, one fsync for all of them), in
        order: each file is wholly sealed or not at all, and a file sealed before (or earlier in ``files``)
        is not sealed again. Returns (first seq, last seq, sealed now) per file."""
        for file in files:
            if not file.readings:
                raise ValueError(f"{file.sha256}: a file with no readings has nothing to seal")
        now = time.time_ns()
        results = []
        with self._transaction():
            seq = self._db.execute("SELECT value FROM meta WHERE key='last_seq'").fetchone()[0]
            for file in files:
                done = self._db.execute(
                    "SELECT first_seq, last_seq FROM sealed_files WHERE file_sha256=?", (file.sha256,)
                ).fetchone()
                if done is not None:
                    results.append((done[0], done[1], False))
                    continue
                first = seq + 1
                rows = []
                for start in range(0, len(file.readings), max_readings):
                    seq += 1
                    chunk = tuple(file.readings[start : start + max_readings])
                    body = BatchBody(self.station_id, seq, now, chunk, file.historical, source, file.sha256)
                    payload = seal(body, key.key_id, key.private_key)
                    ts = [r.ts_ns for r in chunk]
                    rows.append((seq, now, len(chunk), min(ts), max(ts), int(file.historical), payload,
                                 zlib.crc32(payload)))  # fmt: skip
                self._db.executemany(
                    "INSERT INTO batches(seq, sealed_ns, readings, first_ts_ns, last_ts_ns, historical, payload,"
                    " payload_crc) VALUES (?,?,?,?,?,?,?,?)",
                    rows,
                )
                self._db.execute(
                    "INSERT INTO sealed_files(file_sha256, first_seq, last_seq, sealed_ns) VALUES (?,?,?,?)",
                    (file.sha256, first, seq, now),
                )
                results.append((first, seq, True))
            self._db.execute("UPDATE meta SET value=? WHERE key='last_seq'", (seq,))
        return results

    def keep_sealed(self, payloads: Iterable[bytes]) -> list[SealedBatch]:
        """Keep batches this station signed elsewhere, byte for byte, in one transaction (a relay's outbox).

        Each payload must be one of this station's envelopes; the signature is the
        receiver's to check, not ours (the relay holds no keys).  A sequence number
        already kept is left as it was (a redelivery).  Returns the batches that were new.
        """
        now = time.time_ns()
        rows, kept = [], []
        for payload in payloads:
            body = decode_body(open_envelope(payload).body)  # EnvelopeError for anything else
            if body.station != self.station_id:
                raise ValueError(
                    f"{self.path}: a batch of station {body.station} cannot go into {self.station_id}'s outbox"
                )
            ts = [r.ts_ns for r in body.readings] or [body.sent_ns]
            rows.append(
                (
                    body.seq,
                    now,
                    len(body.readings),
                    min(ts),
                    max(ts),
                    int(body.historical),
                    payload,
                    zlib.crc32(payload),
                )
            )
        with self._transaction():
            for row in rows:
                if self._db.execute(
                    "INSERT OR IGNORE INTO batches(seq, sealed_ns, readings, first_ts_ns, last_ts_ns, historical,"
                    " payload, payload_crc) VALUES (?,?,?,?,?,?,?,?)",
                    row,
                ).rowcount:
                    kept.append(SealedBatch(row[0], row[6], row[2]))
            if rows:
                self._db.execute("UPDATE meta SET value=max(value, ?) WHERE key='last_seq'", (max(r[0] for r in rows),))
        return kept

    def staged_lanes(self) -> tuple[bool, bool]:
        """(live readings staged, backlog readings staged)."""
        live = self._db.execute("SELECT 1 FROM staged WHERE historical=0 LIMIT 1").fetchone() is not None
        backlog = self._db.execute("SELECT 1 FROM staged WHERE historical=1 LIMIT 1").fetchone() is not None
        return live, backlog

    def mark_acked(self, seqs: Iterable[int]) -> None:
        now = time.time_ns()
        due = now + int(self.retention.receipt_timeout_s * 1e9)
        with self._transaction():
            self._db.executemany(
                "UPDATE batches SET acked_ns=?, resend_due_ns=coalesce(resend_due_ns, ?)"
                " WHERE seq=? AND acked_ns IS NULL",
                [(now, due, s) for s in seqs],
            )

    def mark_receipted(self, watermark: int, ranges: Iterable[tuple[int, int]]) -> int:
        """The warehouse committed these batches: delivered. Returns how many became so now."""
        now = time.time_ns()
        with self._transaction():
            changed = self._db.execute(
                "UPDATE batches SET receipted_ns=?, acked_ns=coalesce(acked_ns, ?)"
                " WHERE receipted_ns IS NULL AND seq<=?",
                (now, now, watermark),
            ).rowcount
            for first, last in ranges:
                changed += self._db.execute(
                    "UPDATE batches SET receipted_ns=?, acked_ns=coalesce(acked_ns, ?)"
                    " WHERE receipted_ns IS NULL AND seq BETWEEN ? AND ?",
                    (now, now, first, last),
                ).rowcount
        return changed

    def awaiting_receipt(self) -> bool:
        """A PUBACKed batch no receipt covered yet (``overdue`` will return it once its time-out passes)."""
        return self._db.execute(f"SELECT 1 FROM batches WHERE {AWAITING_RECEIPT} LIMIT 1").fetchone() is not None

    def overdue(self, limit: int, now_ns: int | None = None) -> list[SealedBatch]:
        """PUBACKed batches no receipt covered in time, oldest first: to send again."""
        rows = self._db.execute(
            f"SELECT seq, payload, readings FROM batches WHERE {AWAITING_RECEIPT} AND resend_due_ns <= ?"
            " ORDER BY seq LIMIT ?",
            (now_ns or time.time_ns(), limit),
        ).fetchall()
        return [SealedBatch(*row) for row in rows]

    def resent_for_receipt(self, seqs: Iterable[int], now_ns: int | None = None) -> None:
        """Sent again for want of a receipt: the next time-out is twice as long, up to the cap."""
        now = now_ns or time.time_ns()
        policy = self.retention
        with self._transaction():
            self._db.executemany(
                "UPDATE batches SET resend_attempts = resend_attempts + 1,"
                " resend_due_ns = ? + CAST(min(? * (1 << min(resend_attempts + 1, 30)), ?) * 1e9 AS INTEGER)"
                " WHERE seq = ?",
                [(now, policy.receipt_timeout_s, policy.receipt_timeout_max_s, s) for s in seqs],
            )

    def unacked(self, limit: int, after_seq: int = 0) -> list[SealedBatch]:
        rows = self._db.execute(
            "SELECT seq, payload, readings FROM batches WHERE acked_ns IS NULL AND seq > ? ORDER BY seq LIMIT ?",
            (after_seq, limit),
        ).fetchall()
        return [SealedBatch(*row) for row in rows]

    def batches_between(self, first_seq: int, last_seq: int) -> list[SealedBatch]:
        """Kept batches in a range, acknowledged or not: for a re-send the warehouse asks for."""
        rows = self._db.execute(
            "SELECT seq, payload, readings FROM batches WHERE seq BETWEEN ? AND ? ORDER BY seq", (first_seq, last_seq)
        ).fetchall()
        return [SealedBatch(*row) for row in rows]

    def next_session(self) -> int:
        """A new MQTT session number (Sparkplug's bdSeq): the will and the birth carry it."""
        with self._transaction():
            self._db.execute("UPDATE meta SET value = value + 1 WHERE key='session'")
            return self._db.execute("SELECT value FROM meta WHERE key='session'").fetchone()[0]

    # -- retention and the byte cap -----------------------------------------
    def bytes_used(self) -> int:
        page_size = self._db.execute("PRAGMA page_size").fetchone()[0]
        pages = (
            self._db.execute("PRAGMA page_count").fetchone()[0]
            - self._db.execute("PRAGMA freelist_count").fetchone()[0]
        )
        return pages * page_size

    def enforce_retention(self, now_ns: int | None = None) -> dict[str, int]:
        """Drop acknowledged data past retention, then the oldest acknowledged data over the cap;
        if unsent data alone exceeds the cap, apply the overflow policy, loudly."""
        now_ns = now_ns or time.time_ns()
        policy = self.retention
        removed = {"expired": 0, "over_cap_acked": 0, "over_cap_unsent": 0}
        delivered = self._delivered()
        with self._transaction():
            cutoff = now_ns - int(policy.retention_days * DAY_NS)
            removed["expired"] = self._db.execute(
                f"DELETE FROM batches WHERE {delivered} AND last_ts_ns < ?", (cutoff,)
            ).rowcount
            self._db.execute("DELETE FROM sealed_files WHERE sealed_ns < ?", (cutoff,))
        while (excess := self.bytes_used() - policy.max_bytes) > 0:
            oldest = self._oldest_covering(excess, acked=True)
            if not oldest:
                break
            with self._transaction():
                removed["over_cap_acked"] += self._db.execute(
                    f"DELETE FROM batches WHERE {delivered} AND seq <= ?", (oldest[-1][0],)
                ).rowcount
        if self.bytes_used() > policy.max_bytes:
            log.error(
                "outbox_full_of_unsent_data",
                station=self.station_id,
                bytes_used=self.bytes_used(),
                max_bytes=policy.max_bytes,
                policy=policy.overflow,
            )
            if policy.overflow == "drop_oldest":
                removed["over_cap_unsent"] = self._drop_oldest_unsent()
        return removed

    def _drop_oldest_unsent(self) -> int:
        dropped = 0
        while (excess := self.bytes_used() - self.retention.max_bytes) > 0:
            rows = self._oldest_covering(excess, acked=False)
            if not rows:
                # During a long outage everything is still staged, not sealed.
                dropped_now = self._drop_oldest_staged(excess)
                if not dropped_now:
                    break
                dropped += dropped_now
                continue
            with self._transaction():
                first, last = rows[0][0], rows[-1][0]
                count = sum(r[1] for r in rows)
                self._db.execute("DELETE FROM batches WHERE acked_ns IS NULL AND seq BETWEEN ? AND ?", (first, last))
                # The loss is recorded and published; the collector will also see the gap.
                self._db.execute(
                    "INSERT INTO dropped(dropped_ns, first_seq, last_seq, readings, reason) VALUES (?,?,?,?,?)",
                    (time.time_ns(), first, last, count, "byte cap reached by unsent data"),
                )
                dropped += count
            log.error("outbox_dropped_unsent", station=self.station_id, first_seq=first, last_seq=last, readings=count)
        return dropped

    def _drop_oldest_staged(self, excess_bytes: int) -> int:
        row_bytes = (
            self._db.execute(
                "SELECT avg(40 + length(device) + length(parameter) + length(unit) + length(cause))"
                " FROM (SELECT * FROM staged ORDER BY id LIMIT 1000)"
            ).fetchone()[0]
            or 64
        )
        with self._transaction():
            ids = self._db.execute(
                "SELECT id, ts_ns FROM staged ORDER BY id LIMIT ?", (min(10_000, int(excess_bytes / row_bytes) + 1),)
            ).fetchall()
            if not ids:
                return 0
            self._db.execute("DELETE FROM staged WHERE id <= ?", (ids[-1][0],))
            self._db.execute(
                "INSERT INTO dropped(dropped_ns, first_seq, last_seq, readings, reason) VALUES (?,NULL,NULL,?,?)",
                (
                    time.time_ns(),
                    len(ids),
                    f"byte cap reached by unsent data: staged readings taken {ids[0][1]}..{ids[-1][1]} ns",
                ),
            )
        log.error("outbox_dropped_unsent", station=self.station_id, staged_readings=len(ids))
        return len(ids)

    def _oldest_covering(self, excess_bytes: int, acked: bool) -> list[tuple[int, int]]:
        """The oldest batches (seq, readings) whose payloads add up to at least ``excess_bytes``."""
        chosen, total = [], 0
        condition = self._delivered() if acked else "acked_ns IS NULL"
        for seq, readings, size in self._db.execute(
            f"SELECT seq, readings, length(payload) FROM batches WHERE {condition} ORDER BY seq LIMIT 10000"
        ):
            chosen.append((seq, readings))
            total += size
            if total >= excess_bytes:
                break
        return chosen

    def _delivered(self) -> str:
        """Which batches are safe to drop: receipted, or (without receipts) PUBACKed."""
        return "receipted_ns IS NOT NULL" if self.retention.require_receipts else "acked_ns IS NOT NULL"

    def check_room(self) -> None:
        """Raise OutboxFull when the policy is to refuse new readings and unsent data fills the cap."""
        if self.retention.overflow == "refuse_new" and self.bytes_used() > self.retention.max_bytes:
            raise OutboxFull(f"{self.path}: unsent data fills the {self.retention.max_bytes}-byte cap")

    # -- status -----------------------------------------------------------
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

    def receipt_counts(self, now_ns: int | None = None) -> dict[str, int]:
        """Delivered (receipted), PUBACKed awaiting a receipt, and of those the overdue (to be sent again)."""
        receipted, awaiting, overdue = self._db.execute(
            f"SELECT count(receipted_ns), coalesce(sum({AWAITING_RECEIPT}), 0),"
            f" coalesce(sum({AWAITING_RECEIPT} AND resend_due_ns <= ?), 0) FROM batches",
            (now_ns or time.time_ns(),),
        ).fetchone()
        return {"receipted_batches": receipted, "unreceipted_batches": awaiting, "overdue_batches": overdue}

    def status(self, now_ns: int | None = None) -> dict[str, object]:
        """Buffer fullness and backlog age for the station's status message."""
        now_ns = now_ns or time.time_ns()
        oldest = [
            self._db.execute("SELECT min(ts_ns) FROM staged").fetchone()[0],
            self._db.execute("SELECT min(first_ts_ns) FROM batches WHERE acked_ns IS NULL").fetchone()[0],
        ]
        oldest_unsent = min((t for t in oldest if t is not None), default=None)
        used = self.bytes_used()
        dropped = self._db.execute("SELECT coalesce(sum(readings), 0), count(*) FROM dropped").fetchone()
        recoveries = self._db.execute("SELECT count(*) FROM recoveries").fetchone()[0]
        return {
            **self.counts(),
            "bytes_used": used,
            "max_bytes": self.retention.max_bytes,
            "fullness": round(used / self.retention.max_bytes, 6),
            "backlog_age_s": 0.0 if oldest_unsent is None else round((now_ns - oldest_unsent) / 1e9, 3),
            "dropped_readings": dropped[0],
            "drop_events": dropped[1],
            "recoveries": recoveries,
            **self.receipt_counts(now_ns),
        }

    def _transaction(self):
        return WriteTransaction(self._db)


class WriteTransaction:
    """``with WriteTransaction(db):`` BEGIN IMMEDIATE (the write lock at once: no upgrade deadlock), then
    COMMIT, or ROLLBACK on an exception. For connections opened with ``isolation_level=None``."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, tb) -> None:
        self._db.execute("COMMIT" if exc_type is None else "ROLLBACK")


class OutboxReader:
    """Another thread's read-only view of an outbox's readings, staged and sealed (TT10 out reads its cycles here).

    Its own connection in WAL mode: it never blocks the agent's writes, and one read
    transaction sees the staged rows and the batches as of one moment, so a reading sealed
    meanwhile is seen exactly once.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False)

    def readings_between(self, low_ns: int, high_ns: int) -> list[Reading]:
        """Every reading taken at ``low_ns <= ts_ns < high_ns``, ordered by time."""
        found: dict[tuple[int, str, str], Reading] = {}
        self._db.execute("BEGIN")
        try:
            for ts_ns, device, parameter, value, unit, status, cause in self._db.execute(
                "SELECT ts_ns, device, parameter, value, unit, status, cause FROM staged"
                " WHERE ts_ns >= ? AND ts_ns < ?",
                (low_ns, high_ns),
            ):
                found.setdefault(
                    (ts_ns, device, parameter), Reading(ts_ns, device, parameter, value, unit, status, cause)
                )
            for (payload,) in self._db.execute(
                "SELECT payload FROM batches WHERE first_ts_ns < ? AND last_ts_ns >= ? ORDER BY seq",
                (high_ns, low_ns),
            ):
                for r in decode_body(open_envelope(payload).body).readings:
                    if low_ns <= r.ts_ns < high_ns:
                        found.setdefault((r.ts_ns, r.device, r.parameter), r)
        finally:
            self._db.execute("COMMIT")
        return sorted(found.values(), key=lambda r: (r.ts_ns, r.device, r.parameter))

    def close(self) -> None:
        self._db.close()
