"""`quantrac install systemd`: every role's unit passes `systemd-analyze verify` and keeps secrets out of the unit."""

from __future__ import annotations

import os
import subprocess

from typer.testing import CliRunner

from cli.install import ROLES
from cli.main import app
from tests.helpers import require_tool

SECRET = "s3cr3t-broker-password-never-in-a-unit"


def _units(tmp_path, *args: str):
    out = tmp_path / "units"
    result = CliRunner().invoke(
        app,
        ["install", "systemd", "--role", "all", "--out", str(out), "--config-dir", str(tmp_path / "etc"), *args],
    )
    assert result.exit_code == 0, result.output
    return {p.name.removeprefix("quantrac-").removesuffix(".service"): p for p in out.glob("quantrac-*.service")}


def _directives(path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            found.setdefault(key, []).append(value)
    return found


def test_every_role_s_unit_passes_systemd_analyze_verify(tmp_path):
    analyze = require_tool("systemd-analyze", package="systemd")
    secrets = tmp_path / "etc" / "secrets"
    secrets.mkdir(parents=True)
    for name in ("HN_AIR_001.password", "station.key", "collector.key", "tt10-bridge.key"):
        (secrets / name).write_text(SECRET + "\n")
        os.chmod(secrets / name, 0o600)
    units = _units(tmp_path, "--broker-user", "HN_AIR_001", "--broker", "mqtt.example.vn:8883", "--tls-ca", "/x/ca.crt")
    assert sorted(units) == sorted(ROLES)
    done = subprocess.run([analyze, "verify", *map(str, units.values())], capture_output=True, text=True)
    # verify exits 0 even for unknown keys and bad values (it ignores them): any output is a failure too
    assert (done.returncode, done.stdout + done.stderr) == (0, "")
    for role, path in units.items():
        text = path.read_text()
        assert SECRET not in text
        d = _directives(path)
        exec_start = d["ExecStart"][0].split()
        assert os.path.isabs(exec_start[0]) and os.access(exec_start[0], os.X_OK), exec_start[0]
        assert d["User"] == ["quantrac"] and d["Restart"][0] in ("always", "on-failure") and d["RestartSec"]
        for line in ("NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes"):
            assert line in text.splitlines(), (role, line)
        assert d["ReadWritePaths"] == [f"/var/lib/quantrac/{role}"] and d["StateDirectory"] == [f"quantrac/{role}"]
        # secrets come in as systemd credentials (%d/<name>) from 0600 files, never as values
        for credential in d.get("LoadCredential", []):
            name, _, source = credential.partition(":")
            expected = secrets / ("HN_AIR_001.password" if name == "broker.password" else name)
            assert source == str(expected) and f"%d/{name}" in d["ExecStart"][0]
    assert "--broker-password-file %d/broker.password" in _directives(units["agent"])["ExecStart"][0]
    assert _directives(units["bridge"])["AmbientCapabilities"] == ["CAP_NET_BIND_SERVICE"]
    assert _directives(units["api"])["CapabilityBoundingSet"] == [""]


def test_systemd_analyze_verify_fails_a_unit_whose_program_is_missing(tmp_path):
    """The check above can fail: a unit naming a quantrac that is not there is refused."""
    analyze = require_tool("systemd-analyze", package="systemd")
    units = _units(tmp_path, "--exec", str(tmp_path / "no" / "quantrac"))
    done = subprocess.run([analyze, "verify", str(units["collector"])], capture_output=True, text=True)
    assert done.returncode != 0 and "is not executable" in done.stderr


def test_an_unknown_role_is_refused_naming_the_roles(tmp_path):
    result = CliRunner().invoke(app, ["install", "systemd", "--role", "nonsense", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "agent, collector, warehouse" in result.output
