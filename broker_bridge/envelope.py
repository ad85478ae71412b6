"""Wire contract v1: the signed msgpack envelope and the batch body inside it.

The envelope carries the body as the exact bytes that were signed, so the
collector verifies what the station produced, never a re-encoding of it.
Layout and test vectors: docs/wire-format.md.
"""

from __future__ import annotations

import math
import operator
import re
from array import array
from dataclasses import dataclass
from typing import Any

import msgpack
import nacl.exceptions
import nacl.signing
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from vocabulary.sources import AGENT, FILE_SOURCES, SOURCES
from vocabulary.stations import STATION_ID_PATTERN
from vocabulary.status import STATUS_CODES

WIRE_VERSION = 1
SIGNATURE_LEN = 64
MAX_ENVELOPE_BYTES = 1 << 20  # collectors reject anything larger unread
MAX_READINGS_PER_BATCH = 10_000
# What msgpack adds around a reading's text at most (its array, ts, value, five string headers), and
# around a batch's readings (envelope and body maps, kid, station, seq, sent_ns, signature): with the
# texts' UTF-8 bytes, an upper bound of a sealed batch's size before it is sealed (edge_agent's live window).
READING_FRAMING_BYTES = 34
BATCH_FRAMING_BYTES = 512
INT64_MAX = (1 << 63) - 1
# The warehouse's largest timestamp (QuestDB: 2261-12-31T23:59:59.999999999Z);
# anything later could never be stored, so it is a contract breach here.
MAX_TIMESTAMP_NS = 9_214_646_399_999_999_999
_NAME_MAX = 64
_CAUSE_MAX = 256
BODY_KEYS = ("station", "seq", "sent_ns", "hist", "readings")
# Provenance, after ``readings``, only in a batch that is not an agent's (a body without them is an
# agent's, so every batch sealed before they existed reads as it did, byte for byte).
PROVENANCE_KEYS = ("src", "file")
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
# QuestDB 9.3.4 refuses a NUL in a SYMBOL column (device, parameter, unit) and the whole transaction
# with it (tried: every C0 control, DEL, C1 and U+2028/FEFF/FFFF/10FFFF; only NUL); a NUL in cause
# (VARCHAR) is stored but breaks every C-string reader after it. Names are identifiers that end up in
# TT10 lines, logs and tables: no control character at all. Cause is free text: no NUL.
_NAME_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f]")
_TEXT_FORBIDDEN = re.compile(r"\x00")
_FLOAT32 = 0xCA  # msgpack's float32 tag: values are float64 (0xcb) by contract


class EnvelopeError(ValueError):
    """A payload that breaks the contract. ``reason`` is a stable code for rejects."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Reading:
    """One measured value, identified by (station, device, parameter, ts_ns)."""

    ts_ns: int  # UTC, nanoseconds since the epoch
    device: str
    parameter: str  # the regulation's symbol, e.g. "PM2,5", "COD"
    value: float | None  # None: the analyzer gave no usable value
    unit: str
    status: str  # "00" measuring, "01" calibrating, "02" device error
    cause: str = ""  # why the status is what it is, e.g. "zero calibration"

    def as_wire(self) -> list[Any]:
        return [self.ts_ns, self.device, self.parameter, self.value, self.unit, self.status, self.cause]


@dataclass(frozen=True, slots=True)
class BatchBody:
    station: str
    seq: int  # per-station, strictly increasing, never reused; 1..2^63-1 (a signed 64-bit LONG in the warehouse)
    sent_ns: int
    readings: tuple[Reading, ...]
    historical: bool = False  # replayed from the outbox after an outage
    source: str = AGENT  # vocabulary.sources: who produced the readings; an agent's batch says nothing
    file_sha256: str = ""  # a converted file's SHA-256 (64 lower-case hex digits); "" for an agent's batch

    def encode(self) -> bytes:
        fields: dict[str, Any] = {
            "station": self.station,
            "seq": self.seq,
            "sent_ns": self.sent_ns,
            "hist": self.historical,
            "readings": [r.as_wire() for r in self.readings],
        }
        if self.source != AGENT:
            fields["src"] = self.source
            fields["file"] = self.file_sha256
        return msgpack.packb(fields, use_bin_type=True)


@dataclass(frozen=True, slots=True)
class Envelope:
    key_id: str
    body: bytes
    signature: bytes

    def encode(self) -> bytes:
        return msgpack.packb(
            {"v": WIRE_VERSION, "kid": self.key_id, "body": self.body, "sig": self.signature},
            use_bin_type=True,
        )


def seal(body: BatchBody, key_id: str, private_key: Ed25519PrivateKey) -> bytes:
    """Encode and sign a batch; the returned bytes are what goes on the wire."""
    body_bytes = body.encode()
    return Envelope(key_id, body_bytes, private_key.sign(body_bytes)).encode()


def open_envelope(payload: bytes) -> Envelope:
    """Parse the outer envelope without trusting anything inside it yet."""
    if len(payload) > MAX_ENVELOPE_BYTES:
        raise EnvelopeError("oversized", f"{len(payload)} bytes > {MAX_ENVELOPE_BYTES}")
    try:
        outer = msgpack.unpackb(payload, raw=False, strict_map_key=True, max_bin_len=MAX_ENVELOPE_BYTES)
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise EnvelopeError("undecodable", f"envelope is not msgpack: {type(exc).__name__}: {exc}") from exc
    if not isinstance(outer, dict):
        raise EnvelopeError("schema", f"envelope must be a map, got {type(outer).__name__}")
    if outer.get("v") != WIRE_VERSION:
        raise EnvelopeError("version", f"unsupported envelope version {outer.get('v')!r}")
    kid, body, sig = outer.get("kid"), outer.get("body"), outer.get("sig")
    if not isinstance(kid, str) or not kid:
        raise EnvelopeError("schema", "envelope 'kid' must be a non-empty string")
    if not isinstance(body, bytes):
        raise EnvelopeError("schema", "envelope 'body' must be bytes")
    if not isinstance(sig, bytes) or len(sig) != SIGNATURE_LEN:
        raise EnvelopeError("schema", f"envelope 'sig' must be {SIGNATURE_LEN} bytes")
    extra = set(outer) - {"v", "kid", "body", "sig"}
    if extra:
        raise EnvelopeError("schema", f"unknown envelope fields {sorted(extra)}")
    return Envelope(kid, body, sig)


VerifyKey = nacl.signing.VerifyKey  # what ``verifier`` builds: holders of one need not import nacl


def verifier(public_key: Ed25519PublicKey) -> VerifyKey:
    """The key in the form ``verify`` checks fastest; build it once per key, not per message."""
    return nacl.signing.VerifyKey(public_key.public_bytes_raw())


def verify(envelope: Envelope, public_key: Ed25519PublicKey | nacl.signing.VerifyKey) -> None:
    # libsodium verifies in about half the time of cryptography's OpenSSL
    # call on this hardware (62 vs 122 us), and a collector verifies one
    # signature per message of every station.
    key = public_key if isinstance(public_key, nacl.signing.VerifyKey) else verifier(public_key)
    try:
        key.verify(envelope.body, envelope.signature)
    except nacl.exceptions.BadSignatureError as exc:
        raise EnvelopeError("bad_signature", f"signature does not verify with key {envelope.key_id}") from exc


def _name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value or len(value) > _NAME_MAX:
        raise EnvelopeError("schema", f"{what} must be a string of 1-{_NAME_MAX} characters, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class BodyColumns:
    """A decoded, checked body with its readings as columns: field k of every reading in one tuple.

    What the collector works with: checks, measurement controls and the
    warehouse writer all run over whole columns, not reading objects.
    """

    station: str
    seq: int
    sent_ns: int
    historical: bool
    ts_ns: tuple[int, ...]
    device: tuple[str, ...]
    parameter: tuple[str, ...]
    value: tuple[float | None, ...]
    unit: tuple[str, ...]
    status: tuple[str, ...]
    cause: tuple[str, ...]
    source: str = AGENT
    file_sha256: str = ""

    def __len__(self) -> int:
        return len(self.ts_ns)

    def columns(self) -> tuple[tuple, ...]:
        """(ts_ns, device, parameter, value, unit, status, cause): the wire's field order."""
        return (self.ts_ns, self.device, self.parameter, self.value, self.unit, self.status, self.cause)

    def readings(self) -> tuple[Reading, ...]:
        return tuple(map(Reading, *self.columns()))

    def to_body(self) -> BatchBody:
        return BatchBody(
            self.station, self.seq, self.sent_ns, self.readings(), self.historical, self.source, self.file_sha256
        )


def decode_body(body_bytes: bytes) -> BatchBody:
    """Decode a verified body, checking every field's type and range."""
    return decode_body_columns(body_bytes).to_body()


def decode_body_columns(body_bytes: bytes) -> BodyColumns:
    """Decode a verified body into columns, checking every field's type and range.

    Accepts and refuses exactly what ``_decode_reading`` does reading by
    reading: the column checks below only recognise bodies that are certainly
    valid; anything else goes through the per-reading checks, which either
    find the reading at fault (and say which) or accept it after all.
    """
    try:
        raw = msgpack.unpackb(body_bytes, raw=False, strict_map_key=True)
    except Exception as exc:
        raise EnvelopeError("undecodable", f"body is not msgpack: {type(exc).__name__}: {exc}") from exc
    if not isinstance(raw, dict):
        raise EnvelopeError("schema", "body must be a map")
    missing = set(BODY_KEYS) - set(raw)
    if missing:
        raise EnvelopeError("schema", f"body lacks {sorted(missing)}")
    extra = set(raw) - set(BODY_KEYS) - set(PROVENANCE_KEYS)
    if extra:
        raise EnvelopeError("schema", f"body has keys the contract does not know: {sorted(map(repr, extra))}")
    station = raw["station"]
    if not isinstance(station, str) or not STATION_ID_PATTERN.match(station):
        raise EnvelopeError("schema", f"invalid station id {station!r}")
    seq, sent_ns, hist = raw["seq"], raw["sent_ns"], raw["hist"]
    if not isinstance(seq, int) or isinstance(seq, bool) or not 1 <= seq <= INT64_MAX:
        raise EnvelopeError("schema", f"seq must be an integer in 1..2^63-1, got {seq!r}")
    if not isinstance(sent_ns, int) or isinstance(sent_ns, bool) or not 0 <= sent_ns <= MAX_TIMESTAMP_NS:
        raise EnvelopeError("schema", f"sent_ns must be a time in ns between 1970 and 2261, got {sent_ns!r}")
    if not isinstance(hist, bool):
        raise EnvelopeError("schema", "hist must be a boolean")
    items = raw["readings"]
    if not isinstance(items, list) or not items:
        raise EnvelopeError("schema", "readings must be a non-empty list")
    if len(items) > MAX_READINGS_PER_BATCH:
        raise EnvelopeError("oversized", f"{len(items)} readings > {MAX_READINGS_PER_BATCH}")
    columns = _columns_if_certainly_valid(items)
    if columns is None:
        readings = [_decode_reading(i, item) for i, item in enumerate(items)]
        columns = tuple(zip(*(r.as_wire() for r in readings)))
    if _FLOAT32 in body_bytes and _float32_representable(columns[3]) and _has_float32(body_bytes, raw):
        raise EnvelopeError("schema", "a value is a msgpack float32; the contract's values are float64")
    _refuse_repeated_keys(columns[0], columns[1], columns[2])
    source, file_sha256 = _provenance(raw)
    return BodyColumns(station, seq, sent_ns, hist, *columns, source, file_sha256)


def _provenance(raw: dict) -> tuple[str, str]:
    """(source, file SHA-256): absent means an agent's batch; a file's conversion names its file."""
    if "src" not in raw and "file" not in raw:
        return AGENT, ""
    source, file_sha256 = raw.get("src"), raw.get("file")
    if source not in SOURCES or source == AGENT:
        others = [s for s in SOURCES if s != AGENT]
        raise EnvelopeError("schema", f"src must be one of {others} (an agent's batch has no src), got {source!r}")
    if source in FILE_SOURCES and (not isinstance(file_sha256, str) or not _SHA256_HEX.match(file_sha256)):
        raise EnvelopeError(
            "schema",
            f"a {source} batch's file must be its file's SHA-256 as 64 lower-case hex digits, got {file_sha256!r}",
        )
    return source, file_sha256


def _refuse_repeated_keys(ts: tuple, device: tuple, parameter: tuple) -> None:
    """One reading per (device, parameter, ts_ns) in a batch: the warehouse keeps one row per key, so
    a repeat would vanish silently (the ledger counting it) or overwrite its twin."""
    keys = list(zip(ts, device, parameter))
    if len(set(keys)) == len(keys):
        return
    first: dict[tuple, int] = {}
    for index, key in enumerate(keys):
        if key in first:
            raise EnvelopeError(
                "duplicate_reading_key",
                f"reading {index} repeats reading {first[key]}'s key (ts_ns {key[0]}, device {key[1]!r},"
                f" parameter {key[2]!r}); the batch is refused whole",
            )
        first[key] = index


def _float32_representable(values: tuple) -> bool:
    """Whether any value is exactly a float32 (a necessary condition for it to have been sent as one).

    Measured values seldom are (0.1 is not), so this C-speed test spares most bodies the exact one.
    """
    floats = [v for v in values if v is not None] if None in values else values
    return any(map(operator.eq, array("f", floats).tolist(), floats))


def _has_float32(body_bytes: bytes, decoded: dict) -> bool:
    """Whether any value in the body is encoded as a msgpack float32 (decoding hides it: both become floats).

    Re-encoding (C, float64 only) gives the very bytes of almost every body that holds none; a body
    that differs (an encoder with longer integer forms, say) is walked tag by tag.
    """
    if msgpack.packb(decoded, use_bin_type=True) == body_bytes:
        return False
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=True, max_buffer_size=len(body_bytes) + 1)
    unpacker.feed(body_bytes)
    pending = 1  # objects still to look at
    while pending:
        pending -= 1
        tag = body_bytes[unpacker.tell()]
        if tag == _FLOAT32:
            return True
        if 0x80 <= tag <= 0x8F or tag in (0xDE, 0xDF):
            pending += 2 * unpacker.read_map_header()
        elif 0x90 <= tag <= 0x9F or tag in (0xDC, 0xDD):
            pending += unpacker.read_array_header()
        else:
            unpacker.skip()
    return False


_STATUS_SET = frozenset(STATUS_CODES)
_NONE_TYPE = type(None)


def _columns_if_certainly_valid(items: list) -> tuple[tuple, ...] | None:
    """The readings as 7 columns when every field is certainly valid; None when in doubt.

    Whole-column tests in C loops (set(map(type, ...)), min, max), about
    ten times cheaper than checking reading by reading. Every test here is
    at least as strict as ``_decode_reading``'s, so None never loses a valid
    body: it only sends it through the per-reading checks.
    """
    if set(map(type, items)) != {list} or set(map(len, items)) != {7}:
        return None
    ts, device, parameter, value, unit, status, cause = columns = tuple(zip(*items))
    if set(map(type, ts)) != {int} or min(ts) <= 0 or max(ts) > MAX_TIMESTAMP_NS:
        return None
    if set(map(type, device + parameter + unit + status + cause)) != {str}:
        return None
    if not _STATUS_SET.issuperset(status):
        return None
    if min(map(len, device + parameter)) < 1 or max(map(len, device + parameter + unit)) > _NAME_MAX:
        return None
    if max(map(len, cause)) > _CAUSE_MAX:
        return None
    names, texts = "".join(device + parameter + unit), "".join(cause)
    # isprintable (C, fast on ASCII) clears almost every body; the regexes decide the rest.
    if not names.isprintable() and _NAME_FORBIDDEN.search(names):
        return None
    if "\x00" in texts:
        return None
    value_types = set(map(type, value))
    if not value_types <= {float, _NONE_TYPE}:
        return None
    if float in value_types:
        total = sum(value) if _NONE_TYPE not in value_types else sum(v for v in value if v is not None)
        if total - total != 0.0:  # NaN or inf somewhere (or finite values overflowing: then the slow path decides)
            return None
    return columns


def _decode_reading(index: int, item: Any) -> Reading:
    if not isinstance(item, list) or len(item) != 7:
        raise EnvelopeError("schema", f"reading {index} must be a list of 7 fields")
    ts_ns, device, parameter, value, unit, status, cause = item
    if not isinstance(ts_ns, int) or isinstance(ts_ns, bool) or not 0 < ts_ns <= MAX_TIMESTAMP_NS:
        raise EnvelopeError("schema", f"reading {index}: ts_ns must be a time in ns between 1970 and 2261")
    if value is not None:
        if not isinstance(value, float):
            raise EnvelopeError("schema", f"reading {index}: value must be a float or nil, got {value!r}")
        if not math.isfinite(value):
            # A non-finite number is the analyzer saying "no value"; the
            # agent must send nil instead, so this is a contract breach.
            raise EnvelopeError("schema", f"reading {index}: value {value!r} is not finite; send nil")
    if status not in STATUS_CODES:
        raise EnvelopeError("schema", f"reading {index}: status must be one of {STATUS_CODES}, got {status!r}")
    if not isinstance(unit, str) or len(unit) > _NAME_MAX:
        raise EnvelopeError("schema", f"reading {index}: unit must be a string")
    if not isinstance(cause, str) or len(cause) > _CAUSE_MAX:
        raise EnvelopeError("schema", f"reading {index}: cause must be a string of at most 256 characters")
    device = _name(device, f"reading {index}: device")
    parameter = _name(parameter, f"reading {index}: parameter")
    for what, text, forbidden in (
        ("device", device, _NAME_FORBIDDEN),
        ("parameter", parameter, _NAME_FORBIDDEN),
        ("unit", unit, _NAME_FORBIDDEN),
        ("cause", cause, _TEXT_FORBIDDEN),
    ):
        bad = forbidden.search(text)
        if bad:
            raise EnvelopeError(
                "schema",
                f"reading {index}: {what} holds the control character U+{ord(bad.group()):04X} at {bad.start()}"
                f" ({'no control characters in names' if forbidden is _NAME_FORBIDDEN else 'no NUL in text'};"
                " the warehouse refuses NUL)",
            )
    return Reading(
        ts_ns=ts_ns,
        device=device,
        parameter=parameter,
        value=value,
        unit=unit,
        status=status,
        cause=cause,
    )
