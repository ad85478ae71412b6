"""The wheel as users get it: every package and its data inside, `pipx install` brings a working `quantrac`.

The wheel is built from a copy of this checkout's files (git's list, so build/ and *.egg-info
stay out of the tree), installed with pipx into a temporary PIPX_HOME (its dependencies from
PyPI, as a user's would be), and then used from outside the checkout: help, a TT10 check that
reads the package's data, the Mosquitto plugin built from the shipped source, a broker config,
and both servers started and stopped with SIGTERM.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from supervisor.process import free_ports, wait_until
from tests.helpers import require_tool

ROOT = Path(__file__).resolve().parents[1]
CANONICAL_TT10 = ROOT / "tests/broker_bridge/tt10/tt10_fixtures/canonical/HN_BKHN_KHIKXQ_20260325000500.txt"


def _checkout_files() -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return [f for f in listed.stdout.splitlines() if (ROOT / f).is_file()]


def _package_files(files: list[str]) -> set[str]:
    """Every file of an importable top-level package (a folder with __init__.py) but the tests and READMEs."""
    packages = {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file() and p.name != "tests"}
    return {f for f in files if f.split("/")[0] in packages and not f.endswith("README.md")}


def _build_wheel(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    files = _checkout_files()
    for name in files:
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, src / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"), str(src)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = (tmp_path / "dist").glob("quantrac-*.whl")
    return wheel


def _events(text: str, name: str) -> list[dict]:
    return [e for line in text.splitlines() if line.startswith("{") for e in [json.loads(line)] if e["event"] == name]


def _serve_and_stop(argv: list[str], env: dict, log: Path, ready: str) -> tuple[int, dict]:
    with log.open("w") as out:
        process = subprocess.Popen(argv, env=env, cwd=log.parent, stdout=out, stderr=subprocess.STDOUT)
    try:
        event = wait_until(
            lambda: (_events(log.read_text(), ready) or [None])[0] or (process.poll() is not None and {"exit": 1}),
            timeout=120,
            interval=0.2,
            what=ready,
        )
        assert "exit" not in event, log.read_text()
        process.send_signal(signal.SIGTERM)
        return process.wait(120), event
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.slow
def test_the_wheel_holds_every_package_file_and_pipx_installs_a_working_quantrac(tmp_path):
    pipx = require_tool("pipx", package="pipx")
    mosquitto = require_tool("mosquitto", package="mosquitto")
    wheel = _build_wheel(tmp_path)
    inside = set(zipfile.ZipFile(wheel).namelist())
    missing = sorted(_package_files(_checkout_files()) - inside)
    assert missing == [], f"not in the wheel (pyproject.toml packages / package-data): {missing}"

    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "QUANTRAC_"))}
    env.update(
        PIPX_HOME=str(tmp_path / "pipx"),
        PIPX_BIN_DIR=str(tmp_path / "bin"),
        QUANTRAC_CACHE_DIR=str(tmp_path / "cache"),
        QUANTRAC_MOSQUITTO=mosquitto,
    )
    subprocess.run(
        [pipx, "install", "--python", "python3.11", str(wheel)], env=env, check=True, capture_output=True, timeout=600
    )
    quantrac = tmp_path / "bin" / "quantrac"

    def run(*args, check=True):
        return subprocess.run([str(quantrac), *map(str, args)], env=env, cwd=home, capture_output=True, text=True,
                              check=check, timeout=120)  # fmt: skip

    assert "warehouse" in run("--help").stdout
    done = run("tt10", "check", CANONICAL_TT10)  # the codec's parameter mappings: package data
    assert done.returncode == 0, done.stdout + done.stderr
    # the installed command names its own entry point in a unit, not this checkout's
    run("install", "systemd", "--role", "collector", "--out", home / "units")
    exec_start = (home / "units" / "quantrac-collector.service").read_text().split("ExecStart=")[1].split()[0]
    assert exec_start.startswith(str(tmp_path / "pipx")), exec_start

    assert "cache" in run("broker", "plugin").stdout  # built from the source shipped in the wheel
    http, pg, min_http, mqtt_port = free_ports(4)
    run("broker", "config", "--out", home / "broker", "--station", "HN_AIR_001", "--listen", f"127.0.0.1:{mqtt_port}",
        "--data-dir", home / "broker-data", "--log-file", home / "broker-data" / "mosquitto.log",
        "--run-as", getpass.getuser())  # fmt: skip
    code, ready = _serve_and_stop(
        [str(quantrac), "broker", "run", "--config-dir", str(home / "broker")], env, home / "broker.out", "broker_ready"
    )
    assert code == 0 and ready["listeners"] == [f"127.0.0.1:{mqtt_port}"]
    code, ready = _serve_and_stop(
        [str(quantrac), "warehouse", "run", "--data-dir", str(home / "qdb"), "--http-port", str(http),
         "--pg-port", str(pg), "--min-http-port", str(min_http), "--heap", "512m"],
        env, home / "warehouse.out", "warehouse_ready",
    )  # fmt: skip
    assert code == 0 and ready["schema"] == "ensured"
    assert not str(ready["jar"]).startswith(str(tmp_path / "pipx")), "the jar is not part of the wheel"
