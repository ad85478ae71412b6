"""Watches QuestDB for suspended WAL tables.

A write to a suspended table still returns success, but its rows stay
invisible until an operator runs ALTER TABLE ... RESUME WAL: the collector
would acknowledge data nobody can see. So the collector asks, and shouts.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg


@dataclass(frozen=True)
class WalTable:
    name: str
    suspended: bool
    writer_txn: int
    sequencer_txn: int

    @property
    def apply_lag(self) -> int:
        return self.sequencer_txn - self.writer_txn


def wal_tables(conninfo: str) -> list[WalTable]:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        rows = conn.execute("SELECT name, suspended, writerTxn, sequencerTxn FROM wal_tables()").fetchall()
    return [WalTable(name, bool(suspended), writer, sequencer) for name, suspended, writer, sequencer in rows]


def suspended(conninfo: str) -> list[WalTable]:
    return [t for t in wal_tables(conninfo) if t.suspended]
