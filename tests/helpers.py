"""Small helpers shared by the end-to-end tests."""

from __future__ import annotations

import os
import shutil
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
import pytest

from broker_bridge import session
from supervisor.process import wait_until


def require_tool(program: str, *, package: str) -> str:
    """The path of an external ``program`` a test runs; fails (never skips) when it is missing.

    Every program listed here must be in scripts/bootstrap.sh's PROGRAMS, which
    apt-get installs ``package`` for it.
    """
    found = shutil.which(program)
    for sbin in ("/usr/sbin", "/usr/local/sbin"):
        if found is None and os.access(Path(sbin) / program, os.X_OK):
            found = str(Path(sbin) / program)
    if found is None:
        pytest.fail(
            f"{program} not found: run `bash scripts/bootstrap.sh` (it apt-get installs {package})", pytrace=False
        )
    return found


def unique_station(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def sql(conninfo: str, query: str, params=None) -> list[tuple]:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        cursor = conn.execute(query, params)
        return cursor.fetchall() if cursor.description is not None else []


def wal_applied(conninfo: str) -> bool:
    """True once QuestDB made every committed WAL transaction visible to queries."""
    return all(
        writer == sequencer
        for _, writer, sequencer in sql(conninfo, "SELECT name, writerTxn, sequencerTxn FROM wal_tables()")
    )


def wait_for_count(conninfo: str, query: str, expected: int, timeout: float = 30.0, params=None) -> int:
    def settled():
        count = sql(conninfo, query, params)[0][0]
        return count if count >= expected and wal_applied(conninfo) else None

    wait_until(settled, timeout=timeout, interval=0.2, what=f"{expected} rows from {query!r}")
    return sql(conninfo, query, params)[0][0]


def publish_all(port: int, topic: str, payloads: list[bytes], timeout: float = 20.0) -> None:
    """Publish at QoS 1 and return once the broker acknowledged every message."""
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-pub-{uuid.uuid4().hex[:6]}", protocol=mqtt.MQTTv5
    )
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        infos = [client.publish(topic, p, qos=session.QOS) for p in payloads]
        deadline = time.monotonic() + timeout
        for info in infos:
            info.wait_for_publish(timeout=max(0.1, deadline - time.monotonic()))
            assert info.is_published(), "broker did not acknowledge a test publish"
    finally:
        client.disconnect()
        client.loop_stop()
