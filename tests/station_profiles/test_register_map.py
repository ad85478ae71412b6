"""Drafting a profile from a register map table: the header spellings manufacturers use, refusals at
the CSV's line with the allowed values from vocabulary/, and a round trip CSV -> profile -> loads ->
the same registers."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from station_profiles.loader import ConfigError, load_profile
from station_profiles.register_map import draft_profile
from vocabulary.modbus import TABLES, TYPE_WIDTH, WORD_ORDERS


def _csv(tmp_path: Path, text: str, name: str = "map.csv") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def _save(tmp_path: Path, draft, name: str) -> Path:
    out = tmp_path / "out" / f"{name}.yaml"
    out.parent.mkdir(exist_ok=True)
    out.write_text(draft.text, encoding="utf-8")
    return out


def _registers(profile) -> list[tuple]:
    return [(v.parameter, v.table, v.wire_address, v.type, v.word_order, v.scale, v.offset, v.unit, v.range)
            for v in profile.values]  # fmt: skip


def test_round_trip_a_modicon_map_with_cdab_floats_and_scaled_integers(tmp_path: Path) -> None:
    path = _csv(
        tmp_path,
        """\
        Register,Description,Data Type,Byte Order,Scale Factor,Units,Parameter,Min,Max,Access
        30001,Dust concentration,REAL,CDAB,1,mg/m3,PM,0,200,R
        30003,Flue gas temperature,INT,,0.1,oC,Temp,-20,400,R
        30004,Status word,UINT,,,,,,,R
        30005,Flow,UDINT,word swap,1/10,m3/h,Flow,,,R
        40010,Oxygen,float32,3412,1,%,O2,0,25,RW
        """,
    )
    draft = draft_profile(path, "acme-dust", manufacturer="ACME", model="Dust 9")
    expected = [
        ("PM", "input_register", 0, "float32", "CDAB", 1.0, 0.0, "mg/m3", (0.0, 200.0)),
        ("Temp", "input_register", 2, "int16", "ABCD", 0.1, 0.0, "oC", (-20.0, 400.0)),
        ("Flow", "input_register", 4, "uint32", "CDAB", 0.1, 0.0, "m3/h", None),
        ("O2", "holding_register", 9, "float32", "CDAB", 1.0, 0.0, "%", (0.0, 25.0)),
    ]
    assert _registers(draft.profile) == expected
    assert (draft.rows, draft.skipped, draft.ignored_columns) == (4, [4], ["Access"])
    loaded = load_profile(_save(tmp_path, draft, "acme-dust"))  # what the agent will read
    assert _registers(loaded) == expected
    assert (loaded.manufacturer, loaded.model, loaded.address_base) == ("ACME", "Dust 9", "4xxxx")
    text = draft.text
    # the technician is told what to verify, row by row
    assert "# Nothing here is verified." in text and "quantrac profile check" in text
    assert 'address_base: "4xxxx"   # VERIFY' in text
    assert "word_order: CDAB   # VERIFY: word order CDAB read from 'word swap'" in text
    assert "# VERIFY: type int16 read from 'INT'" in text
    assert "map.csv line 3: Flue gas temperature" in text
    assert "Left out (no symbol): line 4 of map.csv" in text and "# Columns not read: Access." in text


def test_round_trip_a_zero_based_semicolon_map_with_decimal_commas(tmp_path: Path) -> None:
    path = _csv(
        tmp_path,
        """\
        Addr;Type;Word order;Multiplier;Value offset;Unit;Symbol;Table;Range
        0;float32;ABCD;1;;mg/L;COD;input;0..500
        2;int16;;0,01;;pH;pH;input;0-14
        3;uint16;;0,1;-40;oC;Temp;IR;-40..85
        10;bool;;;;;Alarm1;coil;
        0x0020;float64;DCBA;1;;m3/h;Flow;holding;
        """,
    )
    draft = draft_profile(path, "acme-water")
    expected = [
        ("COD", "input_register", 0, "float32", "ABCD", 1.0, 0.0, "mg/L", (0.0, 500.0)),
        ("pH", "input_register", 2, "int16", "ABCD", 0.01, 0.0, "pH", (0.0, 14.0)),
        ("Temp", "input_register", 3, "uint16", "ABCD", 0.1, -40.0, "oC", (-40.0, 85.0)),
        ("Alarm1", "coil", 10, "bool", "ABCD", 1.0, 0.0, "", None),
        ("Flow", "holding_register", 32, "float64", "DCBA", 1.0, 0.0, "m3/h", None),
    ]
    assert _registers(draft.profile) == expected
    assert _registers(load_profile(_save(tmp_path, draft, "acme-water"))) == expected
    assert "address_base: 0   # VERIFY: the map's addresses are taken as 0-based" in draft.text


def test_one_based_map_with_a_default_table(tmp_path: Path) -> None:
    path = _csv(
        tmp_path, 'address,type,word order,scale,unit,symbol\n1,float32,ABCD,1,ug/m3,PM10\n3,float32,,1,ug/m3,"PM2,5"\n'
    )
    draft = draft_profile(path, "acme-pm", table="input_register", address_base="1")
    assert [(v.parameter, v.table, v.wire_address) for v in draft.profile.values] == [
        ("PM10", "input_register", 0),
        ("PM2,5", "input_register", 2),
    ]
    assert "# VERIFY: table input_register is --table's" in draft.text
    assert draft.text.count("word_order: ABCD   # VERIFY: word order not in the map: ABCD assumed") == 1  # PM2,5


@pytest.mark.parametrize(
    ("row", "column", "message", "allowed"),
    [
        ("5,float16,ABCD,1,mg/L,COD", "Data type", "type 'float16' is not one this table can be read as", TYPE_WIDTH),
        ("5,float32,ABDC,1,mg/L,COD", "Word order", "word order 'ABDC' is unknown", WORD_ORDERS),
        ("5,float32,ABCD,ten,mg/L,COD", "Scale", "scale 'ten' is not a number", ()),
        ("x5,float32,ABCD,1,mg/L,COD", "Address", "address 'x5' is not a whole number", ()),
        ("5,float32,ABCD,1,ug/m3,PM2.5", "Symbol", "'PM2.5' looks like the regulation's 'PM2,5'", ()),
    ],
)
def test_a_row_that_cannot_be_read_is_refused_at_its_line(
    tmp_path: Path, row: str, column: str, message: str, allowed
) -> None:
    path = _csv(tmp_path, f"Address,Data type,Word order,Scale,Unit,Symbol\n0,float32,ABCD,1,mg/L,TSS\n{row}\n")
    with pytest.raises(ConfigError) as exc:
        draft_profile(path, "x")
    (issue,) = exc.value.issues
    assert (issue.file.endswith("map.csv"), issue.line, issue.path) == (True, 3, column), issue
    assert message in issue.message, issue
    for word in allowed:  # the vocabulary's own words, every one
        assert word in issue.fix, issue
    assert str(issue).startswith(f"{issue.file}:3: {column}: ")


def test_every_bad_row_is_listed_not_only_the_first(tmp_path: Path) -> None:
    path = _csv(tmp_path, "address,type,symbol\n0,float32,A\n2,quad,B\n4,float32,C\n6,word32,D\n")
    with pytest.raises(ConfigError) as exc:
        draft_profile(path, "x")
    assert [(i.line, i.path) for i in exc.value.issues] == [(3, "type"), (5, "type")]


def test_problems_the_profile_model_finds_come_back_at_the_csv_line(tmp_path: Path) -> None:
    path = _csv(
        tmp_path,
        "address,type,scale,unit,symbol,table\n0,float32,1,mg/L,COD,input\n1,int16,1,mg/L,TSS,input\n"
        "5,bool,,,Alarm,holding\n7,int16,0,mg/L,NH4,input\n",
    )
    with pytest.raises(ConfigError) as exc:
        draft_profile(path, "x")
    by_line = {i.line: i for i in exc.value.issues}
    assert set(by_line) == {3, 4, 5}, exc.value
    assert "the row on line 2" in by_line[3].message  # TSS at 1 overlaps COD's second register
    assert by_line[4].path == "type" and "bool" in by_line[4].message
    assert by_line[5].path == "scale"
    assert all(i.file.endswith("map.csv") for i in exc.value.issues)


def test_header_problems(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        draft_profile(_csv(tmp_path, "Register,Units,Parameter\n0,mg/L,COD\n"), "x")
    assert "no type column among Register, Units, Parameter" in str(exc.value)
    assert ":1: no type column" in str(exc.value)
    with pytest.raises(ConfigError) as exc:
        draft_profile(_csv(tmp_path, "Address,Type,Symbol,Offset\n0,float32,COD,0\n", "b.csv"), "x")
    assert "b.csv:1: Offset: this column could mean two things (fix: rename it to address" in str(exc.value)
    with pytest.raises(ConfigError) as exc:
        draft_profile(_csv(tmp_path, "Address,Type,Symbol,Register\n0,float32,COD,0\n", "c.csv"), "x")
    assert "c.csv:1: Register: a second address column (the first is 'Address')" in str(exc.value)


def test_table_values_are_checked_against_the_vocabulary(tmp_path: Path) -> None:
    path = _csv(tmp_path, "address,type,symbol,register type\n0,float32,COD,memory\n")
    with pytest.raises(ConfigError) as exc:
        draft_profile(path, "x")
    (issue,) = exc.value.issues
    assert (issue.line, issue.path) == (2, "register type") and all(t in issue.fix for t in TABLES)
