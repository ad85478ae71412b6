"""A station's kind lives in its registry entry; the QC's kind layer follows it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from broker_bridge.keys import write_new_key
from cli.main import app
from collector.qc import ThresholdSource
from collector.registry import RegistryError, StationRegistry, add_station, set_kind


def test_the_qc_takes_the_kind_from_the_registry(tmp_path: Path) -> None:
    reg_path = tmp_path / "registry.yaml"
    add_station(reg_path, "S1", write_new_key(tmp_path / "s1.key").public_key, kind="ambient_air")
    registry = StationRegistry(reg_path)
    qc = ThresholdSource(station_kinds=registry.kinds)
    assert qc.param("S1", "met", "Temp", "oC").gross_range["suspect"] == (5.0, 45.0)  # the defaults' ambient_air layer

    set_kind(reg_path, "S1", "stack_emission")
    st = os.stat(reg_path)
    os.utime(reg_path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
    assert registry.reload_if_changed() is True
    assert qc.reload_if_changed() is True
    assert qc.param("S1", "met", "Temp", "oC").gross_range["suspect"] == (0.0, 600.0)


def test_an_unknown_kind_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="'ambient' is not a station kind"):
        add_station(tmp_path / "registry.yaml", "S1", write_new_key(tmp_path / "s1.key").public_key, kind="ambient")
    assert not (tmp_path / "registry.yaml").exists()


def test_station_add_kind_and_set_kind_on_the_command_line(tmp_path: Path) -> None:
    reg = tmp_path / "registry.yaml"
    write_new_key(tmp_path / "s1.key")
    runner = CliRunner()
    added = runner.invoke(
        app, ["station", "add", "S1", str(tmp_path / "s1.pub"), "--registry", str(reg), "--kind", "wastewater"]
    )
    assert added.exit_code == 0, added.output
    assert StationRegistry(reg).get("S1").kind == "wastewater"
    changed = runner.invoke(app, ["station", "set-kind", "S1", "groundwater", "--registry", str(reg)])
    assert changed.exit_code == 0, changed.output
    listed = runner.invoke(app, ["station", "list", "--registry", str(reg)])
    assert "\tgroundwater\t" in listed.output, listed.output
    refused = runner.invoke(app, ["station", "set-kind", "S1", "river", "--registry", str(reg)])
    assert refused.exit_code != 0 and "not a station kind" in refused.output
