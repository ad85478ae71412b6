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


STATION_METADATA = Table(
    # What the registry says about each station (collector/registry.py is the source; the collector writes
    # a row per station whenever it loads the registry), so readers (api/, exports) learn names, places and
    # kinds through store/ alone. Read the newest row per station (LATEST ON ts PARTITION BY station).
    name="station_metadata",
    columns=(
        ("ts", "TIMESTAMP_NS"),  # when the registry was loaded (UTC)
        ("station", "SYMBOL"),
        ("name", "VARCHAR"),  # what people call it (Vietnamese, as the operator wrote it)
        ("province_code", "SYMBOL"),  # the administrative province (the TT10 file name's <Tinh>), not a broker user
        ("facility", "VARCHAR"),  # the facility (<CoSo>) for industrial stations
        ("kind", "SYMBOL"),  # vocabulary.stations.STATION_KINDS
        ("latitude", "DOUBLE"),  # WGS 84 degrees
        ("longitude", "DOUBLE"),
        ("enabled", "BOOLEAN"),
        ("parameters", "VARCHAR"),  # JSON: parameter symbol -> logging interval in seconds, where known
    ),
    dedup_keys=("ts", "station"),
    partition_by="MONTH",
)


# -- what the warehouse computes from the readings (analysis/: averages, VN_AQI, QCVN exceedances, alerts) ----

TOUCHED_HOURS = Table(
    # Written by the collector after each commit of readings: which (station, hour) a flush wrote into,
    # so the aggregator (analysis/aggregator.py) recomputes exactly those hours, late backlogs included.
    name="touched_hours",
    columns=(
        ("ts", "TIMESTAMP_NS"),  # when the collector wrote this row, after the readings' commit
        ("station", "SYMBOL"),
        ("hour_end", "TIMESTAMP_NS"),  # the touched hour, labelled by its END (UTC): readings in [end-1h, end)
        ("readings", "INT"),  # readings of the flush in that hour
    ),
    dedup_keys=("ts", "station", "hour_end"),
)

_MEAN_COLUMNS = (
    ("station", "SYMBOL"),
    ("device", "SYMBOL"),
    ("parameter", "SYMBOL"),
    ("unit", "SYMBOL"),
    ("mean", "DOUBLE"),  # of the valid readings (or valid hours); NULL when none
    ("min", "DOUBLE"),
    ("max", "DOUBLE"),
    ("n_valid", "INT"),  # readings (hourly) or hours (8-hour, daily) that went in
    ("n_expected", "INT"),
    ("coverage", "DOUBLE"),  # n_valid / n_expected
    ("valid", "BOOLEAN"),  # the completeness rule (``rule``) is met: the only means ever published
    ("worst_flag", "BYTE"),  # the worst QARTOD flag of what went in (hourly); of the hours' worst flags above
    ("rule", "SYMBOL"),  # e.g. ">=75% of 60 expected; status 00, qc 1,2"
    ("computed_at", "TIMESTAMP_NS"),
)

HOURLY_MEANS = Table(
    name="hourly_means",
    columns=(
        ("ts", "TIMESTAMP_NS"),  # the hour's END (UTC); readings in [ts-1h, ts)
        *_MEAN_COLUMNS,
        ("n_readings", "INT"),  # every stored reading of the hour, valid or not
        ("n_calibrating", "INT"),  # status 01
        ("n_device_error", "INT"),  # status 02
        ("n_qc_fail", "INT"),  # status 00 with qc_flag 4 (fail) or 9 (missing)
        ("n_suspect", "INT"),  # status 00 with qc_flag 3: left out (analysis/README.md says why)
    ),
    dedup_keys=("ts", "station", "device", "parameter"),
    partition_by="MONTH",
)

EIGHT_HOUR_MEANS = Table(
    name="eight_hour_means",
    columns=(("ts", "TIMESTAMP_NS"), *_MEAN_COLUMNS),  # ts: the END of the 8 hours
    dedup_keys=("ts", "station", "device", "parameter"),
    partition_by="MONTH",
)

DAILY_MEANS = Table(
    name="daily_means",
    columns=(
        ("ts", "TIMESTAMP_NS"),  # the day's END in UTC: 24:00 local (Asia/Ho_Chi_Minh) = 17:00 UTC
        *_MEAN_COLUMNS,
        ("local_day", "SYMBOL"),  # YYYY-MM-DD, the VN_AQI day (hours ending 01:00..24:00 local)
        ("max_hourly", "DOUBLE"),  # the day's largest valid hourly mean (SO2, NO2, CO: what VN_AQI uses)
    ),
    dedup_keys=("ts", "station", "device", "parameter"),
    partition_by="MONTH",
)

AQI_HOURLY = Table(
    name="aqi_hourly",
    columns=(
        ("ts", "TIMESTAMP_NS"),  # the hour's END
        ("station", "SYMBOL"),
        ("aqi", "INT"),  # NULL: no AQI (no PM10 or PM2,5 sub-index); ``reason`` says why
        ("category", "SYMBOL"),
        ("colour", "SYMBOL"),  # hex of Bảng 1's RGB
        ("dominant", "SYMBOL"),
        ("sub_indices", "VARCHAR"),  # JSON {parameter: {value, concentration, basis}}
        ("missing", "VARCHAR"),  # JSON {parameter: why}
        ("reason", "VARCHAR"),
        ("computed_at", "TIMESTAMP_NS"),
    ),
    dedup_keys=("ts", "station"),
    partition_by="MONTH",
)

AQI_DAILY = Table(
    name="aqi_daily",
    columns=(
        ("ts", "TIMESTAMP_NS"),  # the day's END (24:00 local, in UTC)
        ("station", "SYMBOL"),
        ("local_day", "SYMBOL"),
        ("aqi", "INT"),
        ("category", "SYMBOL"),
        ("colour", "SYMBOL"),
        ("dominant", "SYMBOL"),
        ("sub_indices", "VARCHAR"),
        ("missing", "VARCHAR"),
        ("reason", "VARCHAR"),
        ("computed_at", "TIMESTAMP_NS"),
    ),
    dedup_keys=("ts", "station"),
    partition_by="MONTH",
)

EXCEEDANCE_EPISODES = Table(
    # One row per episode, keyed by when it opened; re-evaluation after late data rewrites the row
    # (state, close, peak) or marks it ``withdrawn``; every decision is also an ``alerts`` row.
    name="exceedance_episodes",
    columns=(
        ("ts", "TIMESTAMP_NS"),  # the END of the first exceeding period
        ("station", "SYMBOL"),
        ("device", "SYMBOL"),
        ("parameter", "SYMBOL"),
        ("limit_id", "SYMBOL"),  # e.g. "QCVN 19:2024/BTNMT SO2 1h zone B"
        ("period", "SYMBOL"),  # 1h / 8h / 24h
        ("limit_value", "DOUBLE"),
        ("unit", "SYMBOL"),
        ("state", "SYMBOL"),  # open / escalated / closed / withdrawn
        ("escalated_at", "TIMESTAMP_NS"),
        ("closed_at", "TIMESTAMP_NS"),  # END of the first period back under limit - hysteresis
        ("periods", "INT"),  # exceeding periods so far
        ("peak", "DOUBLE"),
        ("last_mean", "DOUBLE"),
        ("decided_at", "TIMESTAMP_NS"),
        ("version", "INT"),  # rises with every change of this row
    ),
    dedup_keys=("ts", "station", "device", "parameter", "limit_id"),
    partition_by="MONTH",
)

ALERTS = Table(
    # Each episode decision (open, escalate, close, reopen, withdraw) once, and the durable outbox of its
    # delivery: a row is rewritten (same ts and alert_id) as its webhook and MQTT deliveries succeed.
    name="alerts",
    columns=(
        ("ts", "TIMESTAMP_NS"),  # when the decision was made
        ("alert_id", "SYMBOL"),  # sha256 of (episode key, kind, transition time): one alert per decision
        ("station", "SYMBOL"),
        ("kind", "SYMBOL"),  # open / escalate / close / reopen / withdraw
        ("audience", "SYMBOL"),  # regulator (pollution) / technician (data availability)
        ("payload", "VARCHAR"),  # the JSON message (broker_bridge/alerts.py), the webhook body too
        ("webhook_state", "SYMBOL"),  # pending / delivered / none (no webhook configured)
        ("webhook_attempts", "INT"),
        ("mqtt_state", "SYMBOL"),
        ("mqtt_attempts", "INT"),
        ("last_error", "VARCHAR"),
        ("updated_at", "TIMESTAMP_NS"),
    ),
    dedup_keys=("ts", "alert_id"),
    partition_by="MONTH",
)

AGGREGATOR_PROGRESS = Table(
    # The aggregator's durable watermark over ``touched_hours.ts``: one row per advance (read the latest).
    name="aggregator_progress",
    columns=(
        ("ts", "TIMESTAMP_NS"),
        ("aggregator", "SYMBOL"),
        ("watermark", "TIMESTAMP_NS"),
    ),
    dedup_keys=("ts", "aggregator"),
    partition_by="MONTH",
)

AVAILABILITY_EPISODES = Table(
    # A data-availability condition (analysis/availability.py) from when it began until it ended; closing
    # rewrites the row. At most one open row per (station, device, parameter, condition).
    name="availability_episodes",
    columns=(
        ("ts", "TIMESTAMP_NS"),  # when the condition began: the last reading before a silence, the first 01/02
        ("station", "SYMBOL"),
        ("device", "SYMBOL"),  # "*": the whole station (silent)
        ("parameter", "SYMBOL"),  # "*": the whole station
        ("condition", "SYMBOL"),  # silent / device_error / calibration_long / incomplete
        ("state", "SYMBOL"),  # open / closed
        ("opened_at", "TIMESTAMP_NS"),  # when the monitor decided it holds
        ("closed_at", "TIMESTAMP_NS"),  # the reading (or hour) that ended it
        ("detail", "VARCHAR"),
        ("decided_at", "TIMESTAMP_NS"),
    ),
    dedup_keys=("ts", "station", "device", "parameter", "condition"),
    partition_by="MONTH",
)

ANALYSIS_TABLES = (
    TOUCHED_HOURS,
    HOURLY_MEANS,
    EIGHT_HOUR_MEANS,
    DAILY_MEANS,
    AQI_HOURLY,
    AQI_DAILY,
    EXCEEDANCE_EPISODES,
    ALERTS,
    AGGREGATOR_PROGRESS,
    AVAILABILITY_EPISODES,
)

TABLES = (
    READINGS,
    REJECTS,
    BATCHES,
    STATION_EVENTS,
    SEQUENCE_GAPS,
    READING_REVISIONS,
    TT10_FILES,
    STATION_METADATA,
    *ANALYSIS_TABLES,
)


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
