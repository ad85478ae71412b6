"""Draft an analyzer profile from a manufacturer's register map table (CSV), as
``quantrac profile new --from-csv MAP.csv`` does.

Manufacturers publish Modbus maps as tables: one row per value with its address, data type,
word order, scale, unit and what it measures. :func:`draft_profile` reads such a table (header
spellings vary: ``Register``/``Address``, ``Data type``/``Format``, ``Byte order``/``Word order``,
``Factor``/``Scale``, ``Units``, ``Parameter``/``Symbol``...), refuses what it cannot read with the
CSV's line and the allowed values (those of :mod:`vocabulary.modbus`), and writes a profile in the
layout of station_profiles/README.md with comments telling the technician what to verify. The draft
is checked exactly as the agent will load it (:func:`station_profiles.loader.load_profile_text`)
before anyone sees it, and a problem the profile model finds is reported at the CSV's line.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from configuration.errors import ConfigError, ConfigIssue
from configuration.yaml_source import display_path
from station_profiles.loader import load_profile_text
from station_profiles.profile_model import AnalyzerProfile
from vocabulary.modbus import MODICON_PREFIX, TABLES, TYPE_WIDTH, WORD_ORDERS
from vocabulary.parameters import misspelt_parameter
from vocabulary.stations import NAME_RE

__all__ = ["ADDRESS_BASES", "COLUMNS", "Draft", "draft_profile", "profile_name_for"]

#: What each column may be headed (compared lower-case, letters and digits only).
COLUMNS: dict[str, tuple[str, ...]] = {
    "address": ("address", "addr", "register", "reg", "registeraddress", "regaddress", "modbusaddress", "regno",
                "registernumber", "startaddress", "startregister"),
    "type": ("type", "datatype", "dtype", "format", "dataformat", "valuetype"),
    "word_order": ("wordorder", "byteorder", "order", "endianness", "endian", "swap", "wordswap"),
    "scale": ("scale", "scaling", "factor", "scalefactor", "multiplier", "gain"),
    "unit": ("unit", "units", "engunit", "engineeringunit", "uom"),
    "symbol": ("symbol", "parameter", "param", "measurand", "quantity", "tag"),
    "table": ("table", "registertype", "regtype", "area", "functioncode", "fc"),
    "value_offset": ("valueoffset", "scaleoffset", "engoffset"),
    "range": ("range", "measuringrange", "measurementrange"),
    "range_low": ("min", "rangemin", "rangelow", "minimum", "low"),
    "range_high": ("max", "rangemax", "rangehigh", "maximum", "high"),
    "description": ("description", "desc", "name", "comment", "comments", "remark", "remarks", "notes", "label"),
}  # fmt: skip
REQUIRED = ("address", "type", "symbol")
#: a bare "offset" column is the address offset in some maps and the value offset in others
AMBIGUOUS = {"offset": "rename it to address (a register offset) or value offset (engineering = raw x scale + offset)"}

#: Type spellings seen in maps, besides vocabulary.modbus's own names (IEC 61131-3: INT is 16 bits).
TYPE_ALIASES: dict[str, str] = {
    "float": "float32", "real": "float32", "single": "float32", "f32": "float32", "ieee754": "float32",
    "double": "float64", "lreal": "float64", "f64": "float64",
    "int": "int16", "short": "int16", "s16": "int16", "i16": "int16", "sint16": "int16",
    "uint": "uint16", "word": "uint16", "ushort": "uint16", "u16": "uint16", "unsigned16": "uint16",
    "dint": "int32", "long": "int32", "s32": "int32", "i32": "int32", "sint32": "int32",
    "udint": "uint32", "dword": "uint32", "ulong": "uint32", "u32": "uint32", "unsigned32": "uint32",
    "boolean": "bool", "bit": "bool",
}  # fmt: skip
WORD_ORDER_ALIASES: dict[str, str] = {
    "1234": "ABCD", "bigendian": "ABCD", "big": "ABCD", "be": "ABCD", "highwordfirst": "ABCD", "mswfirst": "ABCD",
    "3412": "CDAB", "wordswap": "CDAB", "wordswapped": "CDAB", "swapped": "CDAB", "lowwordfirst": "CDAB",
    "lswfirst": "CDAB", "littleendianwordswap": "CDAB", "bigendianwordswap": "CDAB",
    "2143": "BADC", "byteswap": "BADC", "byteswapped": "BADC",
    "4321": "DCBA", "littleendian": "DCBA", "little": "DCBA", "le": "DCBA",
}  # fmt: skip
TABLE_ALIASES: dict[str, str] = {
    "holding": "holding_register", "holdingregister": "holding_register", "hr": "holding_register",
    "4x": "holding_register", "fc3": "holding_register", "fc03": "holding_register",
    "input": "input_register", "inputregister": "input_register", "ir": "input_register",
    "3x": "input_register", "fc4": "input_register", "fc04": "input_register",
    "coil": "coil", "coils": "coil", "0x": "coil", "fc1": "coil", "fc01": "coil",
    "discrete": "discrete_input", "discreteinput": "discrete_input", "di": "discrete_input",
    "inputstatus": "discrete_input", "1x": "discrete_input", "fc2": "discrete_input", "fc02": "discrete_input",
}  # fmt: skip
ADDRESS_BASES = ("auto", "0", "1", "4xxxx")
_BLANK = {"", "-", "--", "n/a", "na", "none"}
_NUMBER = r"[-+]?(?:\d+(?:[.,]\d*)?|[.,]\d+)(?:[eE][-+]?\d+)?"
_RANGE = re.compile(rf"^\s*({_NUMBER})\s*(?:\.\.|\bto\b|~|–|—|-|/|:)\s*({_NUMBER})\s*$")


def _key(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def _listing(words: Sequence[str]) -> str:
    return ", ".join(words)


@dataclass
class _Row:
    line: int
    cells: dict[str, str]  # column -> cell text


@dataclass
class Draft:
    """A drafted profile: its YAML text (with comments) and the profile it loads as."""

    text: str
    profile: AnalyzerProfile
    rows: int  # values drafted
    skipped: list[int] = field(default_factory=list)  # CSV lines left out (no symbol)
    ignored_columns: list[str] = field(default_factory=list)


def profile_name_for(path: Path | str) -> str:
    """A profile name from a file name: what is left of its stem in the name alphabet."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(path).stem).strip("-.")[:64]
    return name or "analyzer"


def draft_profile(
    csv_path: Path | str,
    name: str,
    *,
    manufacturer: str = "",
    model: str = "",
    source: str = "",
    table: str = "holding_register",
    address_base: str = "auto",
) -> Draft:
    """Read a register map table and draft the profile ``name`` from it. ``table`` is the Modbus table
    of rows the map gives none for; ``address_base`` how the map numbers addresses (``auto``: Modicon
    "4xxxx" numbering when every address is one, else 0). Raises :class:`ConfigError` with the CSV's
    lines (and, for a problem of the options, the option)."""
    csv_path = Path(csv_path)
    shown = display_path(csv_path)
    if not re.match(NAME_RE, name):
        raise ConfigError(
            [
                ConfigIssue(
                    shown, 0, "", f"{name!r} is not a valid profile name", "use --name with 1-64 of A-Z a-z 0-9 _ . -"
                )
            ]
        )
    if table not in TABLES:
        raise ConfigError(
            [ConfigIssue(shown, 0, "", f"--table {table!r} is unknown", f"use one of {_listing(TABLES)}")]
        )
    if address_base not in ADDRESS_BASES:
        raise ConfigError(
            [
                ConfigIssue(
                    shown, 0, "", f"--address-base {address_base!r} is unknown", f"use one of {_listing(ADDRESS_BASES)}"
                )
            ]
        )
    header, rows, columns, ignored, delimiter = _read_table(csv_path, shown)
    issues: list[ConfigIssue] = []
    values: list[dict] = []
    skipped: list[int] = []
    for row in rows:
        if not row.cells.get("symbol", "").strip():
            skipped.append(row.line)
            continue
        value = _value(row, header, shown, delimiter, issues)
        if value is not None:
            values.append(value)
    if issues:
        raise ConfigError(issues)
    if not values:
        raise ConfigError(
            [
                ConfigIssue(
                    shown, 0, "", "no row with a symbol", f"fill the {header['symbol']!r} column of the values to read"
                )
            ]
        )
    base = _address_base(values, address_base)
    for v in values:
        if v["table"] is None:
            if base == "4xxxx":
                prefix = v["address"] // 10000 if v["address"] < 100000 else v["address"] // 100000
                by_prefix = {p: t for t, p in MODICON_PREFIX.items()}
                v["table"] = by_prefix.get(prefix, table)  # another prefix: the model says what is wrong
            else:
                v["table"] = table
                v["notes"].append(f"table {table} is --table's (the map has no table column)")
    text = _render(
        name, manufacturer, model, source, base, values, csv_path, skipped, ignored, address_base == "auto", table
    )
    try:
        profile = load_profile_text(text.encode("utf-8"), Path(f"{name}.yaml"))
    except ConfigError as exc:
        mapped = [_at_csv_line(issue, values, header, shown) for issue in exc.issues]
        raise ConfigError(sorted(mapped, key=lambda i: i.line)) from None
    assert isinstance(profile, AnalyzerProfile)
    return Draft(text, profile, len(values), skipped, ignored)


def _read_table(csv_path: Path, shown: str) -> tuple[dict[str, str], list[_Row], dict[int, str], list[str], str]:
    try:
        raw = csv_path.read_bytes()
    except OSError as exc:
        raise ConfigError([ConfigIssue(shown, 0, "", f"cannot read: {exc}", "check the path")]) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            [ConfigIssue(shown, line, "", f"not UTF-8: byte 0x{raw[exc.start]:02x}", "save the table as CSV UTF-8")]
        ) from None
    lines = text.splitlines()
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first is None:
        raise ConfigError([ConfigIssue(shown, 1, "", "the file is empty", "export the register map as CSV")])
    delimiter = max((",", ";", "\t"), key=lambda d: lines[first].count(d))
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header_cells: list[str] = []
    for cells in reader:
        if any(c.strip() for c in cells):
            header_cells = cells
            break
    header_line = reader.line_num
    columns: dict[int, str] = {}  # position -> column
    header: dict[str, str] = {}  # column -> the header as written
    ignored: list[str] = []
    issues: list[ConfigIssue] = []
    known = {alias: column for column, aliases in COLUMNS.items() for alias in aliases}
    for i, cell in enumerate(header_cells):
        k = _key(cell)
        if not k:
            continue
        if k in AMBIGUOUS:
            issues.append(
                ConfigIssue(shown, header_line, cell.strip(), "this column could mean two things", AMBIGUOUS[k])
            )
            continue
        column = known.get(k)
        if column is None:
            ignored.append(cell.strip())
            continue
        if column in header:
            issues.append(
                ConfigIssue(
                    shown,
                    header_line,
                    cell.strip(),
                    f"a second {column} column (the first is {header[column]!r})",
                    "remove or rename one of them",
                )
            )
            continue
        columns[i], header[column] = column, cell.strip()
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        issues.append(
            ConfigIssue(
                shown,
                header_line,
                "",
                f"no {' / '.join(missing)} column among {_listing([c.strip() for c in header_cells]) or '(nothing)'}",
                "; ".join(f"head the {c} column {' or '.join(COLUMNS[c][:3])}" for c in missing),
            )
        )
    if issues:
        raise ConfigError(issues)
    rows = []
    for cells in reader:
        if not any(c.strip() for c in cells):
            continue
        rows.append(_Row(reader.line_num, {columns[i]: c.strip() for i, c in enumerate(cells) if i in columns}))
    return header, rows, columns, ignored, delimiter


def _number(text: str, delimiter: str) -> float | None:
    t = text.strip().replace(" ", "")
    if delimiter != ",":
        t = t.replace(",", ".")  # a semicolon-separated table may write 0,1
    try:
        return float(t)
    except ValueError:
        return None


def _value(row: _Row, header: dict[str, str], shown: str, delimiter: str, issues: list[ConfigIssue]) -> dict | None:
    cells = row.cells
    notes: list[str] = []
    start = len(issues)

    def problem(column: str, message: str, fix: str) -> None:
        issues.append(ConfigIssue(shown, row.line, header[column], message, fix))

    symbol = cells["symbol"]
    regulation = misspelt_parameter(symbol)
    if regulation is not None:
        problem("symbol", f"{symbol!r} looks like the regulation's {regulation!r}", f"write {regulation} (TT 10/2021)")
    address_text = cells.get("address", "")
    address: int | None = None
    try:
        address = int(address_text, 16) if address_text.lower().startswith("0x") else int(address_text)
    except ValueError:
        problem(
            "address",
            f"address {address_text!r} is not a whole number",
            "write the register number, e.g. 40001 or 0x0010",
        )
    type_text = cells.get("type", "")
    vtype = type_text.lower() if type_text.lower() in TYPE_WIDTH else TYPE_ALIASES.get(_key(type_text))
    if vtype is None:
        problem(
            "type",
            f"type {type_text!r} is not one this table can be read as",
            f"use one of {_listing(list(TYPE_WIDTH))} (also read: {_listing(sorted(TYPE_ALIASES))})",
        )
    elif vtype != type_text.lower():
        notes.append(f"type {vtype} read from {type_text!r}")
    order_text = cells.get("word_order", "")
    order: str | None = None
    if order_text.lower() not in _BLANK:
        order = order_text.upper() if order_text.upper() in WORD_ORDERS else WORD_ORDER_ALIASES.get(_key(order_text))
        if order is None:
            problem(
                "word_order",
                f"word order {order_text!r} is unknown",
                f"use one of {_listing(WORD_ORDERS)} (A = most significant byte; also read: 1234, 3412,"
                " big endian, little endian, word swap, byte swap)",
            )
        elif order != order_text.upper():
            notes.append(f"word order {order} read from {order_text!r}")
    elif vtype is not None and TYPE_WIDTH[vtype] > 1:
        notes.append("word order not in the map: ABCD assumed")
    scale = 1.0
    scale_text = cells.get("scale", "")
    if scale_text.lower() not in _BLANK:
        fraction = re.fullmatch(r"(1?)\s*/\s*(\d+(?:\.\d+)?)", scale_text)
        if fraction:
            scale = 1.0 / float(fraction.group(2))
            notes.append(f"scale {scale:g} read from {scale_text!r}")
        else:
            number = _number(scale_text, delimiter)
            if number is None:
                problem(
                    "scale",
                    f"scale {scale_text!r} is not a number",
                    "write the factor (engineering = raw x scale), e.g. 0.1 or 1/10",
                )
            else:
                scale = number
    offset = 0.0
    offset_text = cells.get("value_offset", "")
    if offset_text.lower() not in _BLANK:
        number = _number(offset_text, delimiter)
        if number is None:
            problem("value_offset", f"offset {offset_text!r} is not a number", "write a number, e.g. -40")
        else:
            offset = number
    unit = cells.get("unit", "")
    if unit.lower() in _BLANK:
        unit = ""
        notes.append("no unit in the map: write the engineering unit")
    value_range = _range(cells, header, delimiter, problem)
    table_text = cells.get("table", "")
    vtable: str | None = None
    if table_text.lower() not in _BLANK:
        vtable = table_text.lower() if table_text.lower() in TABLES else TABLE_ALIASES.get(_key(table_text))
        if vtable is None:
            problem(
                "table",
                f"table {table_text!r} is unknown",
                f"use one of {_listing(TABLES)} (also read: holding, input, coil, discrete, HR, IR, 4x, 3x, FC03,"
                " FC04)",
            )
    if len(issues) > start:
        return None
    return {
        "line": row.line,
        "parameter": symbol,
        "table": vtable,
        "address": address,
        "type": vtype,
        "word_order": order,
        "scale": scale,
        "offset": offset,
        "unit": unit,
        "range": value_range,
        "description": cells.get("description", ""),
        "notes": notes,
    }


def _range(cells: dict[str, str], header: dict[str, str], delimiter: str, problem) -> tuple[float, float] | None:
    text = cells.get("range", "")
    if text.lower() not in _BLANK:
        m = _RANGE.match(text)
        low = _number(m.group(1), delimiter) if m else None
        high = _number(m.group(2), delimiter) if m else None
        if low is None or high is None:
            problem("range", f"range {text!r} is not low..high", "write it as 0..1000 (or use min and max columns)")
            return None
        return low, high
    low_text, high_text = cells.get("range_low", ""), cells.get("range_high", "")
    if low_text.lower() in _BLANK and high_text.lower() in _BLANK:
        return None
    low, high = _number(low_text, delimiter), _number(high_text, delimiter)
    if low is None or high is None:
        column = "range_low" if low is None else "range_high"
        problem(
            column,
            f"{(low_text if low is None else high_text)!r} is not a number",
            "give both min and max as numbers, or neither",
        )
        return None
    return low, high


def _address_base(values: list[dict], requested: str) -> str | int:
    if requested != "auto":
        return requested if requested == "4xxxx" else int(requested)

    def modicon(v: dict) -> bool:
        a = v["address"]
        prefix = a // 10000 if 10001 <= a <= 49999 else a // 100000 if 100001 <= a <= 465536 else None
        return (
            prefix in (1, 3, 4)
            and a % (10000 if a < 100000 else 100000) != 0
            and (v["table"] is None or MODICON_PREFIX[v["table"]] == prefix)
        )

    return "4xxxx" if all(modicon(v) for v in values) else 0


def _q(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else repr(float(x))


def _render(
    name: str,
    manufacturer: str,
    model: str,
    source: str,
    base: str | int,
    values: list[dict],
    csv_path: Path,
    skipped: list[int],
    ignored: list[str],
    guessed_base: bool,
    table: str,
) -> str:
    shown = csv_path.name
    out = [
        f"# Draft analyzer profile from the register map {shown} ({date.today().isoformat()}, quantrac profile new).",
        "# Nothing here is verified. Before a station uses it, compare it with the analyzer's manual:",
        "#   - address_base: does the manual count registers from 0 (PDU addresses), from 1, or as 30001/40001?",
        "#   - every 32/64-bit value's word order (a wrong one reads as absurd values such as 1e-29 or 1e38);",
        "#   - scale, unit and the measuring range (range: [low, high]) of every value; sentinels the manual names;",
        "#   - status: the analyzer's status register or bits (a map table rarely says which code means what;",
        "#     see station_profiles/README.md, Status bits).",
        "# Lines marked VERIFY are guesses. Then run `quantrac profile check` on this file and",
        "# `quantrac agent doctor STATION_FILE` against the analyzer itself, and compare with its display.",
    ]
    if skipped:
        out.append(
            f"# Left out (no symbol): line {_listing([str(n) for n in skipped])} of {shown}; a status register among"
            " them goes under status: by hand."
        )
    if ignored:
        out.append(f"# Columns not read: {_listing(ignored)}.")
    out += [
        f"profile: {name}",
        f"manufacturer: {_q(manufacturer)}" + ("" if manufacturer else "   # VERIFY: the manufacturer's name"),
        f"model: {_q(model)}" + ("" if model else "   # VERIFY: the model, as on its plate"),
        f"source: {_q(source or f'register map {shown}')}   # VERIFY: the manual's title, version and page",
        'notes: "Drafted from a register map table; not yet verified against the analyzer."',
        "protocol: modbus",
    ]
    if base == "4xxxx":
        why = "every address of the map is a 1xxxx/3xxxx/4xxxx reference" if guessed_base else "--address-base"
        out.append(f'address_base: "4xxxx"   # VERIFY: {why}')
    else:
        why = (
            "the map's addresses are taken as 0-based PDU addresses; write 1 if the manual counts from 1"
            if guessed_base
            else "--address-base"
        )
        out.append(f"address_base: {base}   # VERIFY: {why}")
    out.append("values:")
    for v in values:
        head = f"{shown} line {v['line']}" + (f": {v['description']}" if v["description"] else "")
        out.append(f"  - parameter: {_q(v['parameter'])}   # {head}")
        out.append(f"    table: {v['table']}")
        address = f'"{v["address"]:06d}"' if base == "4xxxx" and v["address"] >= 100000 else str(v["address"])
        out.append(f"    address: {address}")
        out.append(f"    type: {v['type']}")
        if v["word_order"] is not None or TYPE_WIDTH[v["type"]] > 1:
            order_note = [n for n in v["notes"] if n.startswith("word order")]
            out.append(
                f"    word_order: {v['word_order'] or 'ABCD'}" + (f"   # VERIFY: {order_note[0]}" if order_note else "")
            )
        if v["type"] != "bool":
            out.append(f"    scale: {_num(v['scale'])}")
            if v["offset"]:
                out.append(f"    offset: {_num(v['offset'])}")
            out.append(f"    unit: {_q(v['unit'])}" + ("   # VERIFY: no unit in the map" if not v["unit"] else ""))
        else:
            out.append(f"    unit: {_q(v['unit'])}")
        if v["range"] is not None:
            out.append(f"    range: [{_num(v['range'][0])}, {_num(v['range'][1])}]")
        rest = [n for n in v["notes"] if not n.startswith("word order") and not n.startswith("no unit")]
        if rest:
            out.append(f"    # VERIFY: {'; '.join(rest)}")
    return "\n".join(out) + "\n"


def _at_csv_line(issue: ConfigIssue, values: list[dict], header: dict[str, str], shown: str) -> ConfigIssue:
    """A problem the profile model found in the draft -> the CSV row (and column) it came from."""
    m = re.match(r"values\[(\d+)\](?:\.(\w+))?", issue.path)
    if not m:
        return issue

    def line_of(i: re.Match) -> str:
        return f"the row on line {values[int(i.group(1))]['line']}"

    field_name = {"parameter": "symbol", "offset": "value_offset"}.get(m.group(2) or "", m.group(2) or "")
    column = header.get(field_name, m.group(2) or "")
    message = re.sub(r"values\[(\d+)\]", line_of, issue.message)
    fix = re.sub(r"values\[(\d+)\]", line_of, issue.fix)
    return ConfigIssue(shown, values[int(m.group(1))]["line"], column, message, fix)
