"""`quantrac warehouse run` / `broker run` before the server starts: what is missing, in one line with the fix."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys

import pytest

from cli.processes import quantrac
from store.questdb_server import JAR_NAME, fetch_questdb_jar, find_questdb_jar
from tests.helpers import require_tool


def _bin_with(tmp_path, *programs: str):
    """A PATH folder holding only ``programs`` (links to the real ones)."""
    folder = tmp_path / "bin"
    folder.mkdir(exist_ok=True)
    for program in programs:
        os.symlink(shutil.which(program), folder / program)
    return folder


def _run(argv, **env):
    full = {k: v for k, v in os.environ.items() if k not in ("JAVA_HOME", "QUANTRAC_QUESTDB_JAR")}
    full.update(env)
    return subprocess.run(argv, capture_output=True, text=True, env=full, timeout=120)


def test_warehouse_run_without_java_names_the_package_to_install(tmp_path):
    path = _bin_with(tmp_path, "apt-get")
    done = _run([sys.executable, "-m", "cli.main", "warehouse", "run", "--data-dir", tmp_path / "qdb"], PATH=str(path))
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "apt-get install openjdk-17-jre-headless" in errors[0], done.stderr
    assert not (tmp_path / "qdb").exists(), "nothing is written before the checks pass"


def test_broker_run_without_a_config_says_how_to_write_one(tmp_path):
    done = _run(quantrac("broker", "run", "--config-dir", tmp_path / "broker"))
    assert done.returncode == 2
    assert f"quantrac broker config --out {tmp_path / 'broker'}" in done.stderr, done.stderr


def test_broker_run_names_the_config_line_of_a_missing_file(tmp_path):
    require_tool("mosquitto", package="mosquitto")
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener 1\npassword_file {tmp_path / 'passwd'}\npersistence_location {tmp_path / 'data'}\n")
    done = _run(quantrac("broker", "run", "--config-dir", tmp_path))
    assert done.returncode == 1
    assert f"{conf}:2: password_file {tmp_path / 'passwd'} (not found or not readable)" in done.stderr, done.stderr


def test_the_questdb_jar_is_fetched_with_maven_as_bootstrap_does(tmp_path):
    require_tool("mvn", package="maven")
    jar = fetch_questdb_jar(tmp_path / "cache")
    assert jar == tmp_path / "cache" / JAR_NAME
    digest = hashlib.sha256(jar.read_bytes()).hexdigest()
    assert digest == hashlib.sha256(find_questdb_jar().read_bytes()).hexdigest()


def test_without_maven_the_fetch_names_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(_bin_with(tmp_path, "apt-get")))
    with pytest.raises(FileNotFoundError, match="apt-get install maven"):
        fetch_questdb_jar(tmp_path / "cache")
    assert not (tmp_path / "cache").exists()
