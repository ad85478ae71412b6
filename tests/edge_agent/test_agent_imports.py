"""The agent's process loads only what a station needs (bench/bench_agent_footprint.py measures the cost).

Every module a process imports stays in its memory for months on the station PC: the warehouse's
clients, the web stack and rich's console are never the agent's, and a station of Modbus TCP
analyzers does not load the TT10 clients (pyserial it does: pymodbus's transport imports it).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# As `quantrac agent run` does it (cli.main reads its argv first), up to a built agent with its sources.
PROBE = """
import json, sys
from pathlib import Path
import cli.main
from broker_bridge.keys import load_signing_key, write_new_key
from broker_bridge.session import BrokerAddress
from edge_agent.agent import StationAgent
from station_profiles.loader import STATIONS_DIR, load_station
tmp = Path(sys.argv[3])
key = write_new_key(tmp / "station.key")
agent = StationAgent(load_station(STATIONS_DIR / "demo_air_01.yaml"), load_signing_key(tmp / "station.key"),
                     BrokerAddress.parse("127.0.0.1:1"), tmp / "outbox.sqlite")
print(json.dumps(sorted({name.split(".")[0] for name, m in sys.modules.items() if m is not None})))
"""

NEVER = {
    "psycopg", "questdb", "pyarrow", "fastapi", "starlette", "uvicorn", "httpx", "numpy",  # the warehouse's side
    "collector", "api", "analysis", "firmware_sim",  # other packages (the CLI loads store.errors, not psycopg)
    "rich", "pygments", "greenlet",  # structlog's console renderer and thread-locals, typer's pretty errors
    "asyncssh", "ftplib",  # TT10 out: not for a station without targets
}  # fmt: skip


def test_agent_run_loads_nothing_a_modbus_tcp_station_does_not_use(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, "agent", "run", str(tmp_path)],
        capture_output=True, text=True, cwd=REPO, timeout=60, check=True,
    )  # fmt: skip
    loaded = set(json.loads(out.stdout.splitlines()[-1]))
    assert {"edge_agent", "paho", "pymodbus", "structlog", "typer"} <= loaded, "the probe did not build an agent"
    assert loaded & NEVER == set(), f"the agent's process imports {sorted(loaded & NEVER)}"
