"""scripts/windows/: the WinSW service definition is well-formed and asks `quantrac agent run` only for options it has.

Windows itself is not here: this checks what can be checked on Linux (docs/deployment.md says the rest).
"""

from __future__ import annotations

import re
import shlex
import xml.etree.ElementTree as ET
from pathlib import Path

import typer.main

from cli.main import app

WINDOWS = Path(__file__).resolve().parents[2] / "scripts" / "windows"


def _agent_run_options() -> set[str]:
    command = typer.main.get_command(app).commands["agent"].commands["run"]
    return {opt for param in command.params for opt in param.opts if opt.startswith("--")}


def test_the_winsw_definition_runs_the_agent_with_options_it_has_and_restarts_it():
    text = (WINDOWS / "quantrac-agent.xml").read_text()
    filled = text.replace("@ROOT@", r"C:\ProgramData\quantrac").replace("@BROKER@", "mqtt.example.vn:8883")
    filled = filled.replace("@LOGIN@", r'--broker-user HN_AIR_001 --broker-password-file "C:\x\broker.password"')
    filled = filled.replace("@TLS@", r'--tls-ca "C:\x\ca.crt"')
    service = ET.fromstring(filled)
    assert service.findtext("id") == "quantrac-agent"
    assert service.findtext("executable").endswith(r"\venv\Scripts\quantrac.exe")
    words = shlex.split(service.findtext("arguments").replace("\\", "/"))
    assert words[:2] == ["agent", "run"]
    options = {w for w in words if w.startswith("--")}
    assert options and options <= _agent_run_options(), options - _agent_run_options()
    assert [f.get("action") for f in service.findall("onfailure")] == ["restart"] * 3
    assert re.findall(r"@[A-Z]+@", filled) == []


def test_the_install_script_fills_every_placeholder_of_the_definition():
    script = (WINDOWS / "install-agent.ps1").read_text()
    placeholders = set(re.findall(r"@[A-Z]+@", (WINDOWS / "quantrac-agent.xml").read_text()))
    assert placeholders == {"@ROOT@", "@BROKER@", "@LOGIN@", "@TLS@"}
    for placeholder in placeholders:
        assert f'.Replace("{placeholder}"' in script, placeholder
