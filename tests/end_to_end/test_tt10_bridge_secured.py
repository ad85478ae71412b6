"""A province's deployment of the TT10 bridge, done with the operator's commands only: the station's account
made by `quantrac station tt10-account --generate-password-file` (no hand-made hash), the bridge's broker
user made by the generated broker config from the registry's `bridges:`, `quantrac bridge tt10 serve` as a
process logging in with `--broker-user/--broker-password-file` over the generated config's TLS listener
(`--tls-ca`), the collector with its own user over TLS, and `curl` over explicit FTPS with the generated
password. The file's readings reach QuestDB once, `source = 'tt10'`."""

from __future__ import annotations

import hashlib
import socket

import pytest
import yaml
from typer.testing import CliRunner

from broker_bridge.keys import write_new_key
from cli.main import app
from cli.processes import tt10_bridge_process
from collector.registry import add_station, bind_bridge, bridge_delegations, parse_registry
from supervisor.process import free_port, wait_until
from tests.broker_bridge.test_broker_security import (  # noqa: F401  (fixtures)
    COLLECTOR,
    make_secured,
    probes,
)
from tests.end_to_end.test_tt10_bridge import curl, expected_rows, readings, station_file, write
from tests.helpers import unique_station, wait_for_count

BRIDGE = "tt10-secured"


@pytest.mark.slow
def test_a_bridge_with_generated_account_and_broker_user_delivers_over_tls(
    tmp_path, make_secured, make_collector, warehouse
) -> None:
    station, stranger = unique_station("TTSEC"), unique_station("TTSEX")
    registry = tmp_path / "registry.yaml"
    for s in (station, stranger):
        add_station(registry, s, write_new_key(tmp_path / "keys" / f"{s}.key").public_key, kind="ambient_air")
    password_file = tmp_path / "station.password"
    account = station.lower()
    done = CliRunner().invoke(app, ["station", "tt10-account", station, "--registry", str(registry),
                                    "--account", account, "--generate-password-file", str(password_file)])  # fmt: skip
    assert done.exit_code == 0, done.output
    key = tmp_path / "bridge.key"
    bind_bridge(registry, BRIDGE, write_new_key(key).public_key, [station])
    bridges = bridge_delegations(parse_registry(registry.read_text(), str(registry)))
    assert bridges == {BRIDGE: [station]}

    broker = make_secured(stations=(station, stranger), tls=True, bridge_users=bridges)
    make_collector(0, registry, COLLECTOR, broker=broker.address(COLLECTOR, tls=True))
    ftp_port = free_port()
    sources = tmp_path / "sources.yaml"
    sources.write_text(
        yaml.safe_dump(
            {
                "state_dir": str(tmp_path / "state"),
                "homes_dir": str(tmp_path / "homes"),
                "ftp": {
                    "host": "127.0.0.1",
                    "port": ftp_port,
                    "certfile": str(broker.pki.server_cert),
                    "keyfile": str(broker.pki.server_key),
                    "auth_failed_delay_s": 0.1,
                },
                "accounts_in_registry": True,
            }  # fmt: skip
        )
    )
    (tmp_path / "state").mkdir()
    bridge = tt10_bridge_process(
        sources, tmp_path / "bridge", f"127.0.0.1:{broker.tls_port}", key, tmp_path / "bridge.log",
        registry=registry, bridge=BRIDGE, questdb=f"127.0.0.1:{warehouse.http_port}", client_id="ignored-by-broker",
        broker_user=BRIDGE, broker_password_file=broker.config.credential_file(BRIDGE), tls_ca=broker.pki.ca_cert,
    )  # fmt: skip

    def ready() -> bool:
        text = bridge.log_path.read_text(errors="replace") if bridge.log_path.exists() else ""
        assert "tt10_bridge_connect_refused" not in text, text[-2000:]
        if "tt10_bridge_connected" not in text:
            return False
        with socket.create_connection(("127.0.0.1", ftp_port), timeout=2):
            return True

    bridge.start()
    try:
        wait_until(ready, timeout=60, what="the bridge to connect over TLS as its own user", process=bridge)
        name, data, lines = station_file(station, 3)
        password = password_file.read_text().strip()
        url = f"ftp://{account}:{password}@127.0.0.1:{ftp_port}/"
        done = curl("--ssl-reqd", "--cacert", str(broker.pki.ca_cert), "-T", str(write(tmp_path, name, data)), url)
        assert done.returncode == 0, done.stderr
        wrong = curl("--ssl-reqd", "--cacert", str(broker.pki.ca_cert), "-T", str(write(tmp_path, name, data)),
                     f"ftp://{account}:{password}x@127.0.0.1:{ftp_port}/")  # fmt: skip
        assert wrong.returncode != 0 and "530" in wrong.stderr + wrong.stdout, (wrong.returncode, wrong.stderr)

        pg = warehouse.pg_conninfo
        wait_for_count(pg, "SELECT count() FROM readings WHERE station = %s", len(lines), params=(station,))
        assert readings(pg, station) == expected_rows(lines, hashlib.sha256(data).hexdigest())
    finally:
        assert bridge.stop(20) == 0 or bridge.returncode == 0, bridge.log_path.read_text()[-3000:]
