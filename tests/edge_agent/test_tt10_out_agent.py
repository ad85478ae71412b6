"""`quantrac agent run` with tt10_out: a simulated station's agent delivers each cycle's TT10 file to a
real FTP server while it publishes, and every file holds the means of exactly the readings its outbox has."""

from __future__ import annotations

import math

import pytest
import yaml

from broker_bridge.tt10 import read_file
from broker_bridge.tt10.cycles import cycle_end
from supervisor.process import wait_until
from tests.edge_agent.tt10_servers import USER, FtpServer, password_file
from tests.station_rig import make_station  # noqa: F401  (fixture)


@pytest.mark.slow  # a simulator and the agent as processes, cycles waited for (~9 s)
def test_the_running_agent_delivers_its_cycles(make_station, tmp_path):  # noqa: F811
    server = FtpServer(tmp_path / "ftp").start()
    try:
        station = make_station("demo_air_01.yaml", poll_s=0.5)
        doc = yaml.safe_load(station.file.read_text())
        doc["tt10_out"] = [
            {
                "name": "province",
                "protocol": "ftp",
                "host": "127.0.0.1",
                "port": server.port,
                "user": USER,
                "password_file": str(password_file(tmp_path)),
                "cycle_s": 2,
                "settle_s": 0.5,
                "remote_dir": "{yyyy}{MM}{dd}",
            }
        ]
        station.file.write_text(yaml.safe_dump(doc))
        station.collector()
        station.sim()
        agent = station.agent()
        wait_until(lambda: len(server.renames) >= 2, timeout=40, what="2 TT10 files delivered", process=agent)
        station.stop_all()
        files = server.files()
    finally:
        server.stop()
    assert server.renames == sorted(files) and len(files) >= 2
    readings = station.outbox_readings()  # every reading the agent took, as its outbox kept it
    for name, data in files.items():
        f = read_file(data, name)
        assert f.clean and f.station == station.id
        cycle = [r for r in readings if cycle_end(r[0], 2) == f.file_name.ts_ns]
        assert {r.parameter for r in f.readings} == {r[2] for r in cycle}
        for line in f.readings:
            values = [r[3] for r in cycle if r[2] == line.parameter and r[4] == "00" and r[3] is not None]
            assert line.status == "00" and line.value == math.fsum(values) / len(values), (name, line)
