"""ensure_schema gives an older warehouse the columns it lacks (real QuestDB): the readings' provenance."""

from __future__ import annotations

import uuid
from dataclasses import replace

from store.schema import READINGS, ensure_schema
from supervisor.process import wait_until
from tests.helpers import sql


def test_an_older_readings_table_gets_source_and_file_sha256(warehouse):
    name = f"readings_old_{uuid.uuid4().hex[:8]}"
    older = replace(
        READINGS, name=name, columns=tuple(c for c in READINGS.columns if c[0] not in ("source", "file_sha256"))
    )
    pg = warehouse.pg_conninfo
    ensure_schema(pg, (older,))
    columns = lambda: {r[0]: r[1] for r in sql(pg, f"SELECT \"column\", type FROM table_columns('{name}')")}  # noqa: E731
    assert "source" not in columns()
    ensure_schema(pg, (replace(READINGS, name=name),))
    # a WAL table's ALTER becomes visible once its WAL is applied
    wait_until(lambda: "file_sha256" in columns() or None, timeout=30, what="the added columns")
    assert columns()["source"] == "SYMBOL" and columns()["file_sha256"] == "SYMBOL"
    sql(pg, f"DROP TABLE {name}")
