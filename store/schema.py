"""Warehouse schema, created idempotently over SQL before anything writes.

ILP auto-creation is switched off in the server config (store/questdb_server.py),
so these statements are the only way a table or column comes to exist.
Columns are listed once here; ``ensure_schema`` adds any that an older
warehouse lacks, so upgrades need no manual migration.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from store.queries import connect


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[tuple[str, str], ...]  # (name, SQL type); the first is the designated timestamp
    dedup_keys: tuple[str, ...]
    partition_by: str = "DAY"
    column_types: dict[str, str] = field(init=False, repr=False, compare=False)  # of the columns after the timestamp

    def __post_init__(self) -> None:
        object.__setattr__(self, "column_types", dict(self.columns[1:]))

    def create_sql(self) -> str:
        cols = ",\n  ".join(f"{name} {sql_type}" for name, sql_type in self.columns)
        return (
            f"CREATE TABLE IF NOT EXISTS {self.name} (\n  {cols}\n) TIMESTAMP({self.columns[0][0]}) "
            f"PARTITION BY {self.partition_by} WAL DEDUP UPSERT KEYS({', '.join(self.dedup_keys)})"
        )

    @property
    def timestamp(self) -> str:
        return self.columns[0][0]

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(name for name, sql_type in self.columns if sql_type == "SYMBOL")


READINGS = Table(
    name="readings",
    columns=(
        ("ts", "TIMESTAMP_NS"),  # when the station measured it (UTC)
        ("station", "SYMBOL"),
        ("device", "SYMBOL"),
        ("parameter", "SYMBOL"),
        ("value", "DOUBLE"),  # NULL when the analyzer gave no usable value
        ("unit", "SYMBOL"),
        ("status", "SYMBOL"),  # regulation code 00 / 01 / 02
        ("cause", "VARCHAR"),
        ("seq", "LONG"),  # the station's batch sequence number
        ("historical", "BOOLEAN"),
        ("key_id", "SYMBOL"),
        ("received_at", "TIMESTAMP_NS"),
        # Measurement controls (collector/qc): QARTOD flag 1 pass, 2 not evaluated,
        # 3 suspect, 4 fail, 9 missing; the deciding check, why, and every check
        # that fired. Nothing is dropped: a failed value stays with its flag.
        ("qc_flag", "BYTE"),
        ("qc_check", "SYMBOL"),
        ("qc_cause", "VARCHAR"),
        ("qc_checks", "SYMBOL"),
        # Provenance (vocabulary/sources.py): agent (signed by the station's own agent) or tt10 (converted
        # from a TT10 file by the bridge, signed with its key), and that file's SHA-256 (NULL for an agent's).
        # NULL source: a row written before the column existed, an agent's.
        ("source", "SYMBOL"),
        ("file_sha256", "SYMBOL"),
    ),
    dedup_keys=("ts", "station", "device", "parameter"),
)

REJECTS = Table(
    name="rejects",
    columns=(
        ("ts", "TIMESTAMP_NS"),  # when the collector received it
        ("topic", "VARCHAR"),
        ("claimed_station", "SYMBOL"),
        ("reason", "SYMBOL"),
        ("detail", "VARCHAR"),
        ("payload_sha256", "SYMBOL"),
        # The payload's first 64 KiB (REJECT_HEAD_BYTES) in base64, its whole size, and whether
        # its whole bytes are in the collector's payload store (--reject-store, files named by
        # the SHA-256): no reject can overflow a QuestDB request, none is lost.
        ("payload_b64", "VARCHAR"),
        ("payload_size", "LONG"),
        ("payload_stored", "BOOLEAN"),
    ),
    # A message redelivered after a crash lands on the same key only if it
    # keeps its receive time, which it does not; the hash lets queries
    # collapse such repeats (SELECT DISTINCT payload_sha256 ...).
    dedup_keys=("ts", "payload_sha256"),
)

BATCHES = Table(
    # The ledger of accepted batches: which sequence numbers arrived, with
    # which content; keyed on the station's own send time so a redelivery
    # overwrites its own row.
    name="batches",
    columns=(
        ("ts", "TIMESTAMP_NS"),  # the batch's sent_ns
        ("station", "SYMBOL"),
        ("seq", "LONG"),
        ("payload_sha256", "VARCHAR"),
        ("readings", "INT"),
        ("historical", "BOOLEAN"),
        ("key_id", "SYMBOL"),
        ("received_at", "TIMESTAMP_NS"),
    ),
    dedup_keys=("ts", "station", "seq"),
)

STATION_EVENTS = Table(
    name="station_events",
    columns=(
        ("ts", "TIMESTAMP_NS"),  # when the collector received it
        ("station", "SYMBOL"),
        ("state", "SYMBOL"),  # online / offline
        ("session", "LONG"),  # a will from an older session never overrides a newer birth
        ("planned", "BOOLEAN"),
        ("payload", "VARCHAR"),
    ),
    dedup_keys=("ts", "station", "session"),
)

SEQUENCE_GAPS = Table(
    name="sequence_gaps",
    columns=(
        ("ts", "TIMESTAMP_NS"),  # when the gap was seen
        ("station", "SYMBOL"),
        ("first_missing", "LONG"),
        ("last_missing", "LONG"),
        # open (asked for again, with back-off, until closed; NULL in rows of older collectors),
        # filled (every batch arrived) or lost_at_source (the station no longer holds some: ``lost``
        # batches, the ranges in ``detail``). A state change rewrites the row (same ts and first_missing).
        ("state", "SYMBOL"),
        ("lost", "LONG"),
        ("detail", "VARCHAR"),
    ),
    dedup_keys=("ts", "station", "first_missing"),
)

READING_REVISIONS = Table(
    # A stored reading that a later batch (another seq) sent again with another value or status:
    # the new one is in ``readings`` (DEDUP UPSERT keeps the newest), the old one is kept here.
    name="reading_revisions",
    columns=(
        ("ts", "TIMESTAMP_NS"),  # the reading's own time: with station, device, parameter its key
        ("station", "SYMBOL"),
        ("device", "SYMBOL"),
        ("parameter", "SYMBOL"),
        ("old_value", "DOUBLE"),
        ("old_status", "SYMBOL"),
        ("old_qc_flag", "BYTE"),
        ("old_seq", "LONG"),
        ("new_value", "DOUBLE"),
        ("new_status", "SYMBOL"),
        ("new_qc_flag", "BYTE"),
        ("new_seq", "LONG"),
        ("revised_at", "TIMESTAMP_NS"),  # when the collector received the new batch
    ),
    dedup_keys=("ts", "station", "device", "parameter", "new_seq"),
)

TT10_FILES = Table(
    # The TT10 bridge's receipt for every file a station sent (broker_bridge/tt10/ingest): what became of
    # it and why, so a province can tell a station why its file was not taken. Written by the bridge from
    # its ledger; a state change rewrites the row (held, then accepted; accepted, then converted).
    name="tt10_files",
    columns=(
        ("ts", "TIMESTAMP_NS"),  # when the upload ended (UTC)
        ("station", "SYMBOL"),
        ("sha256", "SYMBOL"),  # the file's SHA-256: its name in the bridge's archive
        ("name", "VARCHAR"),
        ("account", "SYMBOL"),
        ("transport", "SYMBOL"),  # ftp, ftps, sftp, watch, pull
        ("peer", "VARCHAR"),
        ("size", "LONG"),
        ("interrupted", "BOOLEAN"),  # the transport saw the upload cut off
        ("state", "SYMBOL"),  # accepted, held, refused, duplicate, superseded
        ("readings", "INT"),  # readings taken (accepted)
        ("refused", "INT"),  # lines refused
        ("reasons", "VARCHAR"),  # why, one reason per line (refused lines as "line N: ...")
        ("upload", "LONG"),  # the bridge ledger's upload number (duplicate_of and superseded_by refer to it)
        ("duplicate_of", "LONG"),
        ("superseded_by", "LONG"),
        ("first_seq", "LONG"),  # the batches its readings went out in
        ("last_seq", "LONG"),
        ("decided_at", "TIMESTAMP_NS"),
    ),
    dedup_keys=("ts", "station", "sha256"),
)

TABLES = (READINGS, REJECTS, BATCHES, STATION_EVENTS, SEQUENCE_GAPS, READING_REVISIONS, TT10_FILES)


def ensure_schema(conninfo: str, tables: tuple[Table, ...] = TABLES) -> None:
    with connect(conninfo) as conn:
        for table in tables:
            conn.execute(table.create_sql())
            # QuestDB refuses "ADD COLUMN IF NOT EXISTS" as a no-op on WAL
            # tables, so add only what is really missing.
            present = {row[0] for row in conn.execute(f"SELECT \"column\" FROM table_columns('{table.name}')")}
            for name, sql_type in table.columns:
                if name not in present:
                    conn.execute(f"ALTER TABLE {table.name} ADD COLUMN {name} {sql_type}")
