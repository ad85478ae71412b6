"""The TT10 TXT file (TT 10/2021, Phụ lục 15): read every variation real loggers send, write one canonical form.

A file is lines of five TAB-separated fields: parameter symbol, value, unit,
local time ``yyyyMMddHHmmss``, status ``00``/``01``/``02``. Reading never
guesses: each line becomes a ``Tt10Reading`` (times in UTC nanoseconds) or a
``RefusedLine`` with its number, its raw text and the reason, and what concerns
the whole file (BOM, line endings, a name time that disagrees with the lines,
a last line cut off by an interrupted upload) is a ``Finding``.
``Tt10File.complete`` says whether the file looks whole, so a receiver can hold
a partial upload instead of storing half of it. README.md documents the format
as understood and what is unconfirmed.
"""

from __future__ import annotations

import hashlib
import math
import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

from broker_bridge.tt10.local_time import StampError, local_datetime, stamp_to_utc_ns, utc_datetime, utc_ns_to_stamp
from broker_bridge.tt10.mapping import PARAMETER_PATTERN, check_mapping
from broker_bridge.tt10.names import FileName, FileNameError, NameForm, format_file_name, parse_file_name
from vocabulary.parameters import REGULATION_SYMBOLS
from vocabulary.status import CALIBRATING, DEVICE_ERROR, STATUS_CODES, STATUS_MEANING

if TYPE_CHECKING:
    from broker_bridge.envelope import Reading

FIELD_COUNT = 5
SEPARATOR = "\t"
#: The canonical line ending: CRLF, as the one firmware that documents its format writes it and as
#: FTP's ASCII mode puts every line on the wire; the reader accepts LF and CR as well.
CANONICAL_LINE_ENDING = "\r\n"
#: How far the latest time in the lines may be from the time in the name (one 5-minute cycle).
DEFAULT_NAME_TIME_TOLERANCE_S = 300
#: Statuses under which an empty value means "no value" (stored as None, never 0).
MISSING_VALUE_STATUSES = frozenset({CALIBRATING, DEVICE_ERROR})

Severity = Literal["note", "warning", "error"]

_UTF8_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_EOL = re.compile(rb"\r\n|\r|\n")
_EOL_NAMES = {b"\r\n": "CRLF", b"\n": "LF", b"\r": "CR"}
_NUMBER = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$")
_DECIMAL_COMMA = re.compile(r"^[+-]?\d+,\d+$")
_NOT_FINITE = re.compile(r"^[+-]?(?:nan|inf|infinity)$", re.IGNORECASE)
_REGULATION = frozenset(REGULATION_SYMBOLS)
_STATUS_LIST = ", ".join(f"{code} {STATUS_MEANING[code][0]} ({STATUS_MEANING[code][1]})" for code in STATUS_CODES)


@dataclass(frozen=True, slots=True)
class Tt10Reading:
    """One line read: the value of ``parameter`` at ``ts_ns`` (UTC) with the instrument's status."""

    line: int  # 1-based line number in the file
    parameter: str  # after the mapping, if one applies
    value: float | None  # None: no value (empty field with status 01/02), never 0
    unit: str  # as sent; empty is allowed (pH)
    stamp: str  # yyyyMMddHHmmss, Vietnam local time, as in the file
    ts_ns: int  # the same moment in UTC nanoseconds
    status: str  # 00 / 01 / 02
    sent_as: str  # the parameter name exactly as the file wrote it
    notes: tuple[str, ...] = ()  # what was read leniently: decimal comma, spaces, mapping

    def to_reading(self, device: str, cause: str = "") -> Reading:
        """The wire's reading, for the outbox and the collector."""
        from broker_bridge.envelope import Reading  # only the bridge needs the wire; `tt10 check` stays light

        return Reading(
            ts_ns=self.ts_ns,
            device=device,
            parameter=self.parameter,
            value=self.value,
            unit=self.unit,
            status=self.status,
            cause=cause,
        )


@dataclass(frozen=True, slots=True)
class RefusedLine:
    line: int
    raw: str  # the line's text; bytes that are not UTF-8 appear as \xNN
    reason: str  # for people, says what is wrong and what was expected
    byte_offset: int  # where the line starts in the file
    truncated: bool = False  # the last line, cut off before it was whole


@dataclass(frozen=True, slots=True)
class Finding:
    """Something about the whole file. Codes are stable (for receipts); details are for people."""

    code: str
    severity: Severity
    detail: str
    line: int | None = None


#: Findings that make a file look unfinished: a receiver holds it and waits for the rest.
INCOMPLETE_CODES = frozenset({"truncated_last_line", "name_time_mismatch", "empty_file"})


@dataclass(frozen=True, slots=True)
class Tt10File:
    name: str | None
    file_name: FileName | None  # None when no name was given or it is not a TT10 name
    sha256: str
    size: int
    readings: tuple[Tt10Reading, ...]
    refused: tuple[RefusedLine, ...]
    findings: tuple[Finding, ...]
    lines: int  # physical lines, blank ones included
    blank_lines: int

    @property
    def station(self) -> str | None:
        """The station's key as the name gives it (the prefix), e.g. ``HN_BKHN_KHIKXQ``."""
        return self.file_name.prefix if self.file_name else None

    @property
    def incomplete_reasons(self) -> tuple[str, ...]:
        return tuple(f.detail for f in self.findings if f.code in INCOMPLETE_CODES)

    @property
    def complete(self) -> bool:
        """Every line whole and the name's time consistent with the lines: safe to take now.

        An incomplete file may be an upload still running or one cut off; hold it until it is
        completed or sent again, then take its ``readings`` (whole lines only; the cut line is
        already in ``refused`` with its reason).
        """
        return not any(f.code in INCOMPLETE_CODES for f in self.findings)

    @property
    def clean(self) -> bool:
        """Nothing refused and no error: every line of the file was read."""
        return not self.refused and not any(f.severity == "error" for f in self.findings)


class Tt10WriteError(ValueError):
    """A reading that cannot be written as a TT10 line without changing it."""


class WritableReading(Protocol):
    """What the writer needs; ``Tt10Reading`` and the wire's ``Reading`` both have it."""

    parameter: str
    value: float | None
    unit: str
    ts_ns: int
    status: str


# --------------------------------------------------------------------------- reading


def read_file(
    data: bytes,
    name: str | None = None,
    *,
    mapping: Mapping[str, str] | None = None,
    name_time_tolerance_s: int = DEFAULT_NAME_TIME_TOLERANCE_S,
) -> Tt10File:
    """Read a TT10 file's bytes exactly as received; ``name`` is its file name (or path), if known."""
    names = check_mapping(mapping) if mapping else {}
    findings: list[Finding] = []
    file_name = _read_name(name, findings)
    if data.startswith(_UTF16_BOMS):
        findings.append(
            Finding(
                "utf16", "error", "the file is UTF-16 (Windows 'Unicode'); TT10 files are UTF-8 text: save it as UTF-8"
            )
        )
        return _file(name, file_name, data, (), (), findings, 0, 0)
    start = 0
    if data.startswith(_UTF8_BOM):
        start = len(_UTF8_BOM)
        findings.append(Finding("bom", "note", "starts with a UTF-8 byte-order mark (EF BB BF), skipped"))

    readings: list[Tt10Reading] = []
    refused: list[RefusedLine] = []
    seen: dict[tuple[str, int], Tt10Reading] = {}
    endings: dict[bytes, int] = {}
    stamps: dict[str, int] = {}  # one conversion per distinct time; a file repeats few
    lines = blank = 0
    for lineno, (offset, raw, ending) in enumerate(_split_lines(data, start), start=1):
        lines = lineno
        if ending:
            endings[ending] = endings.get(ending, 0) + 1
        outcome = _read_line(raw, lineno, offset, last_line_cut=not ending, names=names, stamps=stamps)
        if outcome is None:
            blank += 1
            continue
        if isinstance(outcome, RefusedLine):
            refused.append(outcome)
            if outcome.truncated:
                findings.append(
                    Finding(
                        "truncated_last_line",
                        "error",
                        f"line {lineno} is cut off: the upload was probably interrupted",
                        lineno,
                    )
                )
        else:
            _keep(
                outcome,
                RefusedLine(lineno, raw.decode("utf-8", "backslashreplace"), "", offset),
                seen,
                readings,
                refused,
                findings,
            )
        if not ending and not (isinstance(outcome, RefusedLine) and outcome.truncated):
            findings.append(
                Finding(
                    "no_final_newline", "note", f"line {lineno} has no line ending but is whole (not cut off)", lineno
                )
            )

    if endings:
        kinds = " and ".join(f"{_EOL_NAMES[e]} ({n})" for e, n in endings.items())
        mixed = len(endings) > 1
        findings.append(
            Finding("line_endings", "warning" if mixed else "note", f"{'mixed ' if mixed else ''}line endings: {kinds}")
        )
    if not readings and not refused:
        findings.append(
            Finding("empty_file", "error", "the file holds no lines (an upload that never arrived, or an empty file)")
        )
    _about_parameters(readings, findings)
    if file_name is not None and readings:
        _check_name_time(file_name, readings, name_time_tolerance_s, findings)
    return _file(name, file_name, data, readings, refused, findings, lines, blank)


def _file(name, file_name, data, readings, refused, findings, lines, blank) -> Tt10File:
    return Tt10File(
        name=name,
        file_name=file_name,
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        readings=tuple(readings),
        refused=tuple(refused),
        findings=tuple(findings),
        lines=lines,
        blank_lines=blank,
    )


def _read_name(name: str | None, findings: list[Finding]) -> FileName | None:
    if name is None:
        return None
    try:
        return parse_file_name(name)
    except FileNameError as exc:
        findings.append(Finding("name_unrecognised", "error", f"{exc}; the station cannot be known from it"))
        return None


def _split_lines(data: bytes, start: int) -> Iterator[tuple[int, bytes, bytes]]:
    """(offset, line without its ending, the ending or b"" for an unterminated last line)."""
    pos = start
    for match in _EOL.finditer(data, start):
        yield pos, data[pos : match.start()], match.group()
        pos = match.end()
    if pos < len(data):
        yield pos, data[pos:], b""


def _read_line(
    raw: bytes, lineno: int, offset: int, *, last_line_cut: bool, names: Mapping[str, str], stamps: dict[str, int]
) -> Tt10Reading | RefusedLine | None:
    shown = raw.decode("utf-8", "backslashreplace")
    text = raw.decode("utf-8", "replace")
    if not text.strip():
        return None

    def refuse(reason: str) -> RefusedLine:
        return RefusedLine(lineno, shown, reason, offset)

    fields = text.split(SEPARATOR)
    if last_line_cut and not _whole(fields):
        reason = (
            f"the last line has no line ending and stops after {len(fields)} of {FIELD_COUNT} fields"
            if len(fields) < FIELD_COUNT
            else f"the last line has no line ending and its status {fields[-1].strip()!r} is not two digits"
        )
        return RefusedLine(
            lineno, shown, reason + ": the upload was probably interrupted; send the file again", offset, True
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return refuse(
            f"not UTF-8: byte 0x{raw[exc.start]:02X} at byte offset {offset + exc.start} of the file "
            f"(byte {exc.start + 1} of the line); TT10 files are UTF-8 text"
        )
    if len(fields) != FIELD_COUNT:
        return refuse(_field_count_reason(text, len(fields)))

    stripped = [f.strip() for f in fields]
    notes: list[str] = []
    if stripped != fields:
        notes.append("spaces around fields ignored")
    if not text.replace(SEPARATOR, "").isprintable():  # the fast test; the slow one only finds which
        for value in stripped:
            bad = next((c for c in value if unicodedata.category(c) in ("Cc", "Cf")), None)
            if bad is not None:
                return refuse(
                    f"contains the invisible character U+{ord(bad):04X} "
                    f"({unicodedata.name(bad, 'control')}) in {value!r}"
                )
    sent_as, value_text, unit, stamp, status = stripped

    if not sent_as:
        return refuse("the parameter name (first field) is empty")
    parameter = names.get(sent_as, sent_as)
    if parameter != sent_as:
        notes.append(f"{sent_as!r} mapped to {parameter!r}")
    if not PARAMETER_PATTERN.match(parameter):
        what = "has a space in it" if any(c.isspace() for c in parameter) else "is longer than 64 characters"
        return refuse(
            f"parameter name {parameter!r} {what}; quantrac's parameter names are one word: "
            f"map it to a symbol (a mapping line such as {sent_as!r}: '<symbol>', see --map)"
        )

    if status not in STATUS_CODES:
        return refuse(_status_reason(status))

    try:
        ts_ns = stamps[stamp] if stamp in stamps else stamps.setdefault(stamp, stamp_to_utc_ns(stamp))
    except StampError as exc:
        return refuse(str(exc))

    if not value_text:
        if status not in MISSING_VALUE_STATUSES:
            return refuse(
                f"the value is empty but the status is {status} ({STATUS_MEANING[status][1]}): "
                "a measurement needs a value; "
                f"a missing value is sent empty with status {DEVICE_ERROR} ({STATUS_MEANING[DEVICE_ERROR][1]})"
            )
        value = None
    else:
        parsed = _parse_value(value_text)
        if isinstance(parsed, str):
            return refuse(parsed)
        value, comma = parsed
        if comma:
            notes.append(f"decimal comma read as a point: {value_text!r}")
    return Tt10Reading(lineno, parameter, value, unit, stamp, ts_ns, status, sent_as, tuple(notes))


def _whole(fields: list[str]) -> bool:
    """Five fields and a two-digit status: a line cut anywhere before its end cannot look like this."""
    status = fields[-1].strip()
    return len(fields) >= FIELD_COUNT and len(status) == 2 and status.isascii() and status.isdigit()


def _field_count_reason(text: str, count: int) -> str:
    reason = (
        f"{count} field{'s' if count != 1 else ''} where TT10 has {FIELD_COUNT} separated by TAB "
        "(symbol, value, unit, time, status)"
    )
    if count == 1:
        for sep, what in ((";", "semicolons"), (",", "commas"), ("  ", "spaces")):
            if sep in text:
                return reason + f"; this line seems separated by {what}, not TAB"
        if " " in text:
            return reason + "; this line seems separated by spaces, not TAB"
    return reason


def _status_reason(status: str) -> str:
    if not status:
        return f"the status (fifth field) is empty; TT10 knows {_STATUS_LIST}"
    reason = f"status {status!r} is not a TT10 status code ({_STATUS_LIST})"
    if status == "03":
        reason += "; some loggers write 03 for maintenance, which TT10 does not define"
    elif status.isdigit() and len(status) == 1:
        reason += "; the code has two digits"
    return reason + ". It is not read as 00"


def _parse_value(text: str) -> tuple[float, bool] | str:
    """(value, decimal comma used) or the reason it is refused."""
    comma = False
    if _NOT_FINITE.match(text):
        return f"value {text!r} is not a finite number; a missing value is sent empty with status {DEVICE_ERROR}"
    if _DECIMAL_COMMA.match(text):
        text, comma = text.replace(",", "."), True
    elif not _NUMBER.match(text):
        hint = "; a thousands separator is not allowed" if "," in text else ""
        return f"value {text!r} is not a number (digits with one '.' or one ',' as decimal mark){hint}"
    value = float(text)
    if not math.isfinite(value):
        return f"value {text!r} is too large to be a finite number"
    return value, comma


def _keep(
    reading: Tt10Reading,
    where: RefusedLine,
    seen: dict[tuple[str, int], Tt10Reading],
    readings: list[Tt10Reading],
    refused: list[RefusedLine],
    findings: list[Finding],
) -> None:
    """One reading per (parameter, time): a repeated line is noted, a contradicting one refused."""
    key = (reading.parameter, reading.ts_ns)
    first = seen.get(key)
    if first is None:
        seen[key] = reading
        readings.append(reading)
    elif (first.value, first.unit, first.status) == (reading.value, reading.unit, reading.status) or (
        first.value is None and reading.value is None and (first.unit, first.status) == (reading.unit, reading.status)
    ):
        findings.append(
            Finding(
                "repeated_line", "warning", f"line {reading.line} repeats line {first.line}; read once", reading.line
            )
        )
    else:
        refused.append(
            RefusedLine(
                where.line,
                where.raw,
                (
                    f"{reading.parameter} at {reading.stamp} is already on line {first.line} "
                    f"with value {_shown_value(first.value)} {first.unit} status {first.status}; "
                    f"two different values for one reading: line {first.line} is kept"
                ),
                where.byte_offset,
            )
        )


def _shown_value(value: float | None) -> str:
    return "" if value is None else format_value(value)


def _about_parameters(readings: list[Tt10Reading], findings: list[Finding]) -> None:
    unlisted = sorted({r.parameter for r in readings} - _REGULATION)
    if unlisted:
        findings.append(
            Finding(
                "unlisted_parameter",
                "note",
                "not in the regulation's symbol table, kept as sent: " + ", ".join(unlisted),
            )
        )
    mapped = sorted({(r.sent_as, r.parameter) for r in readings if r.sent_as != r.parameter})
    if mapped:
        findings.append(Finding("mapped_parameter", "note", "mapped: " + ", ".join(f"{a} -> {b}" for a, b in mapped)))
    times: dict[str, set[str]] = {}
    for r in readings:
        times.setdefault(r.parameter, set()).add(r.stamp)
    several = {p: s for p, s in times.items() if len(s) > 1}
    if several:
        findings.append(
            Finding(
                "several_times",
                "note",
                "several times per parameter: "
                + ", ".join(f"{p} ({len(s)}, {min(s)}..{max(s)})" for p, s in sorted(several.items())),
            )
        )


def _check_name_time(
    file_name: FileName, readings: list[Tt10Reading], tolerance_s: int, findings: list[Finding]
) -> None:
    latest = max(readings, key=lambda r: r.ts_ns)
    gap_s = abs(file_name.ts_ns - latest.ts_ns) // 1_000_000_000
    if gap_s > tolerance_s:
        findings.append(
            Finding(
                "name_time_mismatch",
                "warning",
                f"the name says {file_name.stamp} but the latest line (line {latest.line}) says {latest.stamp}, "
                f"{gap_s} s apart (more than {tolerance_s} s)",
                latest.line,
            )
        )


def read_path(
    path: str | Path,
    *,
    mapping: Mapping[str, str] | None = None,
    name_time_tolerance_s: int = DEFAULT_NAME_TIME_TOLERANCE_S,
) -> Tt10File:
    """Read a file from disk; its name is taken from the path."""
    p = Path(path)
    return read_file(p.read_bytes(), p.name, mapping=mapping, name_time_tolerance_s=name_time_tolerance_s)


# --------------------------------------------------------------------------- writing


def format_value(value: float, decimals: int | None = None) -> str:
    """``.`` decimal point, never an exponent; by default the shortest text that reads back to the same float."""
    if not math.isfinite(value):
        raise Tt10WriteError(f"value {value!r} is not finite; write a missing value as None with status {DEVICE_ERROR}")
    if decimals is not None:
        return f"{value:.{decimals}f}"
    return format(Decimal(repr(float(value))), "f")


def format_line(reading: WritableReading, decimals: int | None = None) -> str:
    """One line without its ending; refuses what would not read back as the same reading."""
    if not PARAMETER_PATTERN.match(reading.parameter):
        raise Tt10WriteError(f"parameter {reading.parameter!r} is not one word of 1 to 64 characters")
    if reading.status not in STATUS_CODES:
        raise Tt10WriteError(f"status {reading.status!r} is not one of {STATUS_CODES}")
    unit = reading.unit
    if unit != unit.strip() or any(unicodedata.category(c) in ("Cc", "Cf") for c in unit):
        raise Tt10WriteError(f"unit {unit!r} has spaces around it or a control character (TAB, line break)")
    if reading.value is None:
        if reading.status not in MISSING_VALUE_STATUSES:
            raise Tt10WriteError(
                f"{reading.parameter}: no value with status {reading.status}; a missing value needs status 01 or 02"
            )
        value = ""
    else:
        value = format_value(reading.value, decimals)
    try:
        stamp = utc_ns_to_stamp(reading.ts_ns)
    except StampError as exc:
        raise Tt10WriteError(str(exc)) from exc
    return SEPARATOR.join((reading.parameter, value, unit, stamp, reading.status))


def write_lines(
    readings: Iterable[WritableReading], *, line_ending: str = CANONICAL_LINE_ENDING, decimals: int | None = None
) -> bytes:
    """A file's content: one line per reading, in the order given, each ending with ``line_ending``; UTF-8, no BOM."""
    if line_ending not in ("\r\n", "\n"):
        raise Tt10WriteError(f"line ending {line_ending!r}: use CRLF (canonical) or LF")
    return "".join(format_line(r, decimals) + line_ending for r in readings).encode("utf-8")


def write_file(
    prefix: str,
    ts_ns: int,
    readings: Iterable[WritableReading],
    *,
    form: NameForm = "tinh_coso_tram",
    line_ending: str = CANONICAL_LINE_ENDING,
    decimals: int | None = None,
) -> tuple[str, bytes]:
    """(file name, content) of the file a station sends for the cycle at ``ts_ns`` (UTC)."""
    return format_file_name(prefix, ts_ns, form), write_lines(readings, line_ending=line_ending, decimals=decimals)


def describe_time(ts_ns: int) -> tuple[str, str]:
    """(Vietnam local, UTC) as ISO 8601 text: ``2026-03-25T00:05:00+07:00``, ``2026-03-24T17:05:00Z``."""
    return local_datetime(ts_ns).isoformat(), utc_datetime(ts_ns).isoformat().replace("+00:00", "Z")


__all__ = [
    "CANONICAL_LINE_ENDING",
    "DEFAULT_NAME_TIME_TOLERANCE_S",
    "INCOMPLETE_CODES",
    "Finding",
    "RefusedLine",
    "Tt10File",
    "Tt10Reading",
    "Tt10WriteError",
    "WritableReading",
    "describe_time",
    "format_line",
    "format_value",
    "read_file",
    "read_path",
    "write_file",
    "write_lines",
]
