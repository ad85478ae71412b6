"""``quantrac bridge tt10 files``: what became of every file, from the bridge's ledger (the real CLI)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from broker_bridge.keys import write_new_key
from broker_bridge.session import BrokerAddress
from broker_bridge.tt10.ingest.archive import Archive
from broker_bridge.tt10.ingest.convert import Converter
from broker_bridge.tt10.ingest.ledger import Ledger
from broker_bridge.tt10.ingest.settings import IngestSettings
from broker_bridge.tt10.ingest.sink import Tt10Sink
from edge_agent.outbox import Outbox
from tests.broker_bridge.tt10.ingest_helpers import fixture_bytes, upload

REPO = Path(__file__).resolve().parents[2]


def quantrac(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args], capture_output=True, text=True, env=env, timeout=60
    )


def test_files_lists_states_reasons_and_refused_lines(tmp_path: Path) -> None:
    settings = IngestSettings(root=tmp_path, broker=BrokerAddress("127.0.0.1", 1))
    archive, ledger = Archive(settings.archive_dir), Ledger(settings.ledger_path)
    boxes: dict[str, Outbox] = {}

    def outbox(station: str) -> Outbox:
        return boxes.setdefault(station, Outbox(settings.outbox_dir / f"{station}.sqlite", station))

    converter = Converter(settings, archive, ledger, write_new_key(tmp_path / "bridge.key"), outbox)
    sink = Tt10Sink(archive, ledger)
    for station, variation in (("ST_A", "canonical"), ("ST_A", "canonical"), ("ST_A", "status_03"),
                               ("ST_B", "truncated_last_line")):  # fmt: skip
        sink.take(upload(station, *fixture_bytes(variation)))
    converter.step()
    ledger.close()

    out = quantrac("bridge", "tt10", "files", "--root", str(tmp_path), "--json")
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [(r["upload"], r["station"], r["state"]) for r in rows] == [
        (1, "ST_A", "accepted"), (2, "ST_A", "duplicate"), (3, "ST_A", "accepted"), (4, "ST_B", "held"),
    ]  # fmt: skip
    assert rows[0]["readings"] == 4 and rows[0]["converted"] and rows[1]["duplicate_of"] == 1
    assert any("'03' is not a TT10 status code" in r["reason"] for r in rows[2]["refused"])
    assert rows[3]["refused"][0]["raw"] == "NO2\t18" and rows[3]["hold_until"].endswith("Z")

    text = quantrac("bridge", "tt10", "files", "--root", str(tmp_path), "--station", "ST_B")
    assert text.returncode == 0 and text.stdout.count("\n#") == 0 and "HELD" in text.stdout
    assert "line 3: 'NO2\\t18': the last line has no line ending" in text.stdout
    missing = quantrac("bridge", "tt10", "files", "--root", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "no ledger here" in missing.stderr
