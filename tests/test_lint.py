"""The tree passes ``ruff check`` and ``ruff format --check`` with pyproject.toml's [tool.ruff] settings.

Ruff is the one beside this test's Python (bootstrap installs it into .venv from pyproject's test
extras), not whatever is on PATH.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def ruff() -> Path:
    path = Path(sys.executable).parent / "ruff"
    if not path.is_file():
        pytest.fail(f"{path} not found: run `bash scripts/bootstrap.sh` (it installs ruff into .venv)", pytrace=False)
    return path


def run_ruff(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(ruff()), *args], cwd=REPO, capture_output=True, text=True, timeout=120, check=False)


def test_ruff_check_is_clean() -> None:
    done = run_ruff("check", "--no-cache", "--output-format", "concise", ".")
    assert done.returncode == 0, f"ruff check found problems:\n{done.stdout}{done.stderr}"


def test_ruff_format_leaves_every_file_as_it_is() -> None:
    done = run_ruff("format", "--no-cache", "--check", "--diff", ".")
    assert done.returncode == 0, (
        f"ruff format would change files (run .venv/bin/ruff format .):\n{done.stdout}{done.stderr}"
    )
