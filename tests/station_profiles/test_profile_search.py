"""Where a station file's profiles come from: a path (relative to the station file, or absolute) or
a name looked up in the search path (the station file's folder, its profiles/, --profiles-dir folders,
/etc/quantrac/profiles, the built-in ones); a name found twice is refused naming both files."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from station_profiles.loader import (
    PROFILES_DIR,
    SYSTEM_PROFILES_DIR,
    ConfigError,
    load_station,
    profile_search_path,
)

PROFILE = """\
profile: {name}
manufacturer: test
model: test analyzer {name}
source: test
values:
  - parameter: PM10
    table: input_register
    address: 0
    type: float32
    unit: ug/m3
"""

STATION = """\
station: {{id: T_01, name: "t", kind: ambient_air}}
poll_interval_s: 2.0
devices:
  - id: a1
    profile: {profile}
    transport: modbus_tcp
    host: 127.0.0.1
    port: 15020
"""

TWO_DEVICES = (
    STATION
    + """\
  - id: a2
    profile: {second}
    transport: modbus_tcp
    host: 127.0.0.1
    port: 15021
"""
)


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def _profile(folder: Path, name: str) -> Path:
    return _write(folder / f"{name}.yaml", PROFILE.format(name=name))


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    """A station folder with a profiles/ folder beside the station file, two --profiles-dir folders, a
    stand-in for /etc/quantrac/profiles (the real one is the machine's) and the built-in folder."""
    t = {
        "site": tmp_path / "site",
        "beside": tmp_path / "site" / "profiles",
        "lib1": tmp_path / "lib1",
        "lib2": tmp_path / "lib2",
        "etc": tmp_path / "etc" / "quantrac" / "profiles",
    }
    for d in t.values():
        d.mkdir(parents=True, exist_ok=True)
    return t


def _load(tree: dict[str, Path], text: str, **kw):
    station_file = _write(tree["site"] / "station.yaml", text)
    return load_station(station_file, [tree["lib1"], tree["lib2"]], system_dir=tree["etc"], **kw)


def test_the_search_path_in_order_each_folder_once(tree: dict[str, Path]) -> None:
    station_file = tree["site"] / "station.yaml"
    order = profile_search_path(station_file, [tree["lib1"], tree["lib2"], tree["lib1"]], system_dir=tree["etc"])
    assert order == [tree["site"], tree["beside"], tree["lib1"], tree["lib2"], tree["etc"], PROFILES_DIR]
    assert SYSTEM_PROFILES_DIR == Path("/etc/quantrac/profiles")
    # a folder that does not exist is left out, unless the operator named it
    tree["beside"].rmdir()
    assert profile_search_path(station_file, [], system_dir=tree["etc"] / "nope") == [tree["site"], PROFILES_DIR]
    with pytest.raises(ConfigError) as exc:
        profile_search_path(station_file, [tree["lib1"] / "typo"])
    assert "lib1/typo: profiles folder not found (fix: check --profiles-dir" in str(exc.value)


@pytest.mark.parametrize("where", ["site", "beside", "lib1", "lib2", "etc"])
def test_a_name_is_found_in_any_folder_of_the_search_path(tree: dict[str, Path], where: str) -> None:
    made = _profile(tree[where], "acme-pm")
    station = _load(tree, STATION.format(profile="acme-pm"))
    assert station.device("a1").profile == "acme-pm"
    assert station.profile_for("a1").model == "test analyzer acme-pm"
    assert Path(station.profile_file("a1")) == made


def test_the_built_in_profiles_are_last_and_still_found(tree: dict[str, Path]) -> None:
    station = _load(tree, STATION.format(profile="teledyne-t400"))
    assert Path(station.profile_file("a1")) == PROFILES_DIR / "teledyne-t400.yaml"


@pytest.mark.parametrize(
    ("first", "second"), [("site", "lib2"), ("beside", "etc"), ("lib1", "lib2"), ("site", "beside")]
)
def test_a_name_found_in_two_folders_is_refused_naming_both_files(
    tree: dict[str, Path], first: str, second: str
) -> None:
    a, b = _profile(tree[first], "acme-pm"), _profile(tree[second], "acme-pm")
    with pytest.raises(ConfigError) as exc:
        _load(tree, STATION.format(profile="acme-pm"))
    (issue,) = exc.value.issues
    assert (issue.file.endswith("site/station.yaml"), issue.line, issue.path) == (True, 5, "devices[0].profile")
    assert f"profile 'acme-pm' is found twice in the search path: {a} and {b}" in issue.message
    assert "rename one" in issue.fix and f"profile: {a.resolve()}" in issue.fix


def test_a_copy_of_a_built_in_profile_under_its_own_name_is_refused(tree: dict[str, Path]) -> None:
    copy = tree["etc"] / "teledyne-t400.yaml"
    copy.write_text((PROFILES_DIR / "teledyne-t400.yaml").read_text())
    with pytest.raises(ConfigError) as exc:
        _load(tree, STATION.format(profile="teledyne-t400"))
    assert f"{copy} and station_profiles/profiles/teledyne-t400.yaml" in str(exc.value)


def test_a_symlink_to_the_same_file_is_not_a_second_profile(tree: dict[str, Path]) -> None:
    real = _profile(tree["lib1"], "acme-pm")
    (tree["etc"] / "acme-pm.yaml").symlink_to(real)
    station = _load(tree, STATION.format(profile="acme-pm"))
    assert Path(station.profile_file("a1")) == real


def test_the_station_file_itself_is_never_taken_for_a_profile(tree: dict[str, Path]) -> None:
    with pytest.raises(ConfigError) as exc:
        _load(tree, STATION.format(profile="station"))
    (issue,) = exc.value.issues
    assert issue.line == 5 and "no analyzer profile 'station' in " in issue.message
    assert ", station," not in issue.fix


def test_a_path_is_relative_to_the_station_files_folder_not_the_working_directory(
    tree: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = _profile(tmp_path / "models", "acme-pm")
    monkeypatch.chdir(tree["lib2"])  # anywhere but the station's folder
    station = _load(tree, STATION.format(profile="../models/acme-pm.yaml"))
    assert station.device("a1").profile == "acme-pm"  # the name, once resolved (birth, readings, sources)
    assert Path(station.profile_file("a1")).resolve() == made.resolve()
    # the same file by name from another device: one profile, not two
    station = load_station(
        _write(tree["site"] / "two.yaml", TWO_DEVICES.format(profile="../models/acme-pm.yaml", second="acme-pm")),
        [made.parent],
    )
    assert [d.profile for d in station.devices] == ["acme-pm", "acme-pm"] and list(station.profiles) == ["acme-pm"]


def test_an_absolute_path_and_a_yml_file(tree: dict[str, Path], tmp_path: Path) -> None:
    made = _write(tmp_path / "elsewhere" / "acme-pm.yml", PROFILE.format(name="acme-pm"))
    station = _load(tree, STATION.format(profile=str(made)))
    assert station.profile_for("a1").profile == "acme-pm" and Path(station.profile_file("a1")) == made
    # a name in the same folder as the station file, written as a file name
    _profile(tree["site"], "acme-co")
    assert _load(tree, STATION.format(profile="acme-co.yaml")).device("a1").profile == "acme-co"


@pytest.mark.parametrize(
    ("reference", "message", "fix"),
    [
        ("models/missing.yaml", "profile file {site}/models/missing.yaml not found", "starts at the station file's"),
        ("~/models/acme.yaml", "~ is not expanded", "write the full path"),
        ("models/acme", "is a path but does not end in .yaml", "profiles/model.yaml"),
        ('"acme pm"', "is neither a profile name nor a path to a .yaml file", "looked up in the profile folders"),
    ],
)
def test_a_bad_reference_is_refused_at_its_line(tree: dict[str, Path], reference: str, message: str, fix: str) -> None:
    with pytest.raises(ConfigError) as exc:
        _load(tree, STATION.format(profile=reference))
    (issue,) = exc.value.issues
    assert (issue.line, issue.path) == (5, "devices[0].profile"), issue
    assert message.format(site=tree["site"]) in issue.message and fix in issue.fix, issue


def test_two_files_of_one_profile_name_in_one_station_are_refused(tree: dict[str, Path], tmp_path: Path) -> None:
    a = _profile(tmp_path / "a", "acme-pm")
    b = _profile(tree["lib1"], "acme-pm")
    with pytest.raises(ConfigError) as exc:
        _load(tree, TWO_DEVICES.format(profile=str(a), second="acme-pm"))
    (issue,) = exc.value.issues
    assert (issue.line, issue.path) == (10, "devices[1].profile")
    assert f"profile name 'acme-pm' is used by two files: {a} (devices[0]) and {b}" in issue.message


def test_a_problem_inside_a_profile_named_by_path_points_at_the_profile(tree: dict[str, Path], tmp_path: Path) -> None:
    bad = _write(tmp_path / "models" / "acme-pm.yaml", PROFILE.format(name="acme-pm").replace("float32", "float33"))
    with pytest.raises(ConfigError) as exc:
        _load(tree, STATION.format(profile=os.path.relpath(bad, tree["site"])))
    (issue,) = exc.value.issues
    assert (issue.file, issue.line, issue.path) == (str(bad), 9, "values[0].type")
    assert "did you mean float32?" in issue.fix
