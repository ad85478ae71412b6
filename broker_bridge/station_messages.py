"""What a station says about itself on ``quantrac/v1/<station>/status``: birth, will, status, re-send report.

All four are JSON objects, signed by the station like a batch: on the wire
each is the batch's envelope (``broker_bridge.envelope``: msgpack ``v``,
``kid``, ``body``, ``sig``, Ed25519) with the JSON bytes as its body
(``seal_station_message``, ``open_station_envelope``; the collector verifies
with the station's registered key and then parses the body with
``parse_station_message``). Retained, QoS 1; they share a header: ``state``
(``online``/``offline``), ``station`` and ``session``. Every MQTT connection of
an agent has a session number that only grows, and its will and birth carry
the same one (Sparkplug's bdSeq), so a will that arrives late is recognised
by its older number and never overrides a newer birth.

The kind follows from the header and one key: ``offline`` is a will (sent by
the broker, or by the agent itself with ``planned``); ``online`` with
``resend`` is a re-send report, with ``outbox`` a periodic status, else a
birth. Keys a parser does not know are ignored, so a newer agent's extra
field never gets its messages refused; a known field out of shape is refused
with its name. Layout and test vectors: docs/wire-format.md.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker_bridge.envelope import Envelope, EnvelopeError, open_envelope
from broker_bridge.json_message import (
    MessageError,
    as_bool,
    as_float,
    as_int,
    as_list,
    as_object,
    as_station_id,
    as_str,
    as_time_ns,
    encode_json,
    load_json_object,
    optional,
    require,
)
from vocabulary.stations import STATION_KINDS

MAX_STATUS_BYTES = 64 * 1024  # collectors refuse a larger status body unread
# The envelope around a status body: its keys, the 16-digit kid, bin headers and the 64-byte signature.
MAX_SIGNED_STATUS_BYTES = MAX_STATUS_BYTES + 256
# How far one accepted, signed message may raise a station's session above the highest one its
# accepted messages proved before (collector/sessions.py). An agent's session grows by 1,000,000
# per start (edge_agent.publisher.CONNECTIONS_PER_START): this allows a million restarts unheard,
# and a key holder needs over eight million signed messages to push a station to 2^63-1.
MAX_SESSION_JUMP = 1 << 40
MAX_DEVICES = 1024
MAX_RANGES = 4096  # measuring ranges in one birth (a real station: a few analyzers x 20 values)
MAX_NOT_KEPT_RANGES = 10_000
State = Literal["online", "offline"]


@dataclass(frozen=True, slots=True)
class Header:
    state: State
    station: str
    session: int  # 0..2^63-1; grows with every connection, across restarts


def _header(doc: dict[str, Any]) -> Header:
    state = require(doc, "state", "state")
    if state not in ("online", "offline"):
        raise MessageError("schema", "state", f"must be online or offline, got {state!r}"[:200])
    return Header(
        state,
        as_station_id(require(doc, "station", "station"), "station"),
        as_int(require(doc, "session", "session"), "session"),
    )


def _optional_ts(doc: dict[str, Any]) -> int | None:
    return optional(doc.get("ts_ns"), as_time_ns, "ts_ns")


def _online(station: str, session: int, ts_ns: int | None) -> dict[str, Any]:
    doc: dict[str, Any] = {"state": "online", "station": station, "session": session}
    if ts_ns is not None:
        doc["ts_ns"] = ts_ns
    return doc


class _Parsed:
    """``parse``: the one parse of the topic, refusing a message of another kind."""

    __slots__ = ()

    @classmethod
    def parse(cls, payload: bytes):
        message = parse_station_message(payload)
        if not isinstance(message, cls):
            raise MessageError(
                "schema", "", f"expected a {cls.__name__.lower()} message, got a {type(message).__name__.lower()}"
            )
        return message


# -- birth ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeviceDescription:
    id: str
    profile: str
    transport: str  # modbus_tcp, modbus_rtu, serial_ascii, ...


@dataclass(frozen=True, slots=True)
class MeasuringRange:
    """One value's measuring range as the device's analyzer profile states it (``range:``), in its unit."""

    device: str
    parameter: str
    unit: str
    low: float
    high: float
    profile: str  # the profile it comes from, named in the collector's flag 4 cause

    @classmethod
    def from_json(cls, doc: dict[str, Any], path: str) -> MeasuringRange:
        def text(key: str) -> str:
            return as_str(require(doc, key, f"{path}.{key}"), f"{path}.{key}", 64)

        def number(key: str) -> float:
            value = as_float(require(doc, key, f"{path}.{key}"), f"{path}.{key}")
            if not math.isfinite(value):
                raise MessageError("schema", f"{path}.{key}", f"must be finite, got {value}")
            return value

        low, high = number("low"), number("high")
        if not low < high:
            raise MessageError("schema", path, f"low {low:g} must be below high {high:g}")
        return cls(text("device"), text("parameter"), text("unit"), low, high, text("profile"))


@dataclass(frozen=True, slots=True)
class StationDescription:
    """What a birth says about the station: which analyzers, on which profiles, with which ranges."""

    name: str
    kind: str  # one of vocabulary.stations.STATION_KINDS
    devices: tuple[DeviceDescription, ...]
    profiles_sha256: str  # identifies exactly which analyzer models the station runs
    # Each value's measuring range from its profile (the collector fails a value outside it, flag 4);
    # empty from agents before ranges, and then not sent, so their births stay byte for byte as they were.
    ranges: tuple[MeasuringRange, ...] = ()

    FIELDS: ClassVar[tuple[str, ...]] = ("name", "kind", "devices", "profiles_sha256")

    def as_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "devices": [asdict(d) for d in self.devices],
            "profiles_sha256": self.profiles_sha256,
        }
        if self.ranges:
            doc["ranges"] = [asdict(r) for r in self.ranges]
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> StationDescription:
        kind = require(doc, "kind", "kind")
        if kind not in STATION_KINDS:
            raise MessageError("schema", "kind", f"must be one of {', '.join(STATION_KINDS)}, got {kind!r}"[:300])
        devices = []
        for i, item in enumerate(as_list(require(doc, "devices", "devices"), "devices", MAX_DEVICES)):
            device = as_object(item, f"devices[{i}]")
            devices.append(
                DeviceDescription(
                    *(
                        as_str(require(device, k, f"devices[{i}].{k}"), f"devices[{i}].{k}", 64)
                        for k in ("id", "profile", "transport")
                    )
                )
            )
        digest = as_str(require(doc, "profiles_sha256", "profiles_sha256"), "profiles_sha256", 64)
        if len(digest) != 64 or digest.strip("0123456789abcdef"):
            raise MessageError("schema", "profiles_sha256", f"must be 64 lower-case hex digits, got {digest!r}")
        ranges = tuple(
            MeasuringRange.from_json(as_object(item, f"ranges[{i}]"), f"ranges[{i}]")
            for i, item in enumerate(as_list(doc.get("ranges", []), "ranges", MAX_RANGES))
        )
        return cls(as_str(require(doc, "name", "name"), "name"), kind, tuple(devices), digest, ranges)


@dataclass(frozen=True, slots=True)
class Birth(_Parsed):
    """``online``, published (retained) by the agent as soon as a connection is up."""

    station: str
    session: int
    ts_ns: int | None  # when the agent connected; None only from tools that leave it out
    description: StationDescription | None = None  # None from a bare publisher (tests, tools)

    def encode(self) -> bytes:
        doc = _online(self.station, self.session, self.ts_ns)
        if self.description is not None:
            doc.update(self.description.as_json())
        return encode_json(doc)

    @classmethod
    def _from_json(cls, header: Header, doc: dict[str, Any]) -> Birth:
        described = any(k in doc for k in (*StationDescription.FIELDS, "ranges"))
        return cls(
            header.station, header.session, _optional_ts(doc), StationDescription.from_json(doc) if described else None
        )


# -- will -----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Will(_Parsed):
    """``offline``: the last will the broker publishes when a connection dies, or a planned goodbye."""

    station: str
    session: int
    planned: bool = False  # the agent stopped on purpose and said so itself (no will follows a clean DISCONNECT)

    def encode(self) -> bytes:
        doc: dict[str, Any] = {"state": "offline", "station": self.station, "session": self.session}
        if self.planned:
            doc["planned"] = True
        return encode_json(doc)

    @classmethod
    def _from_json(cls, header: Header, doc: dict[str, Any]) -> Will:
        return cls(header.station, header.session, as_bool(doc.get("planned", False), "planned"))


# -- periodic status ------------------------------------------------------------------------------------


RECEIPT_FIELDS = ("receipted_batches", "unreceipted_batches", "overdue_batches")  # OutboxStatus's optional ones


@dataclass(frozen=True, slots=True)
class OutboxStatus:
    """The outbox's fullness and backlog (``edge_agent.outbox.Outbox.status()``), in its key order."""

    staged_readings: int  # made durable, not yet sealed into a batch
    unacked_batches: int
    unacked_readings: int
    acked_batches: int
    last_seq: int
    bytes_used: int
    max_bytes: int
    fullness: float  # bytes_used / max_bytes
    backlog_age_s: float  # age of the oldest reading not yet acknowledged; 0.0 when none
    dropped_readings: int  # removed by retention before they were sent
    drop_events: int
    recoveries: int  # times a damaged outbox was repaired on opening
    # Warehouse receipts (broker_bridge/receipts.py); None from agents before them, and then not sent.
    receipted_batches: int | None = None  # delivered: a receipt covered them
    unreceipted_batches: int | None = None  # PUBACKed, no receipt yet
    overdue_batches: int | None = None  # of those, past their time-out: being sent again

    @property
    def backlog_readings(self) -> int:
        return self.staged_readings + self.unacked_readings

    def as_json(self) -> dict[str, Any]:
        doc = asdict(self)
        for name in RECEIPT_FIELDS:
            if doc[name] is None:
                del doc[name]
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any], path: str = "outbox") -> OutboxStatus:
        values = {}
        for name in cls.__dataclass_fields__:
            if name in RECEIPT_FIELDS:
                values[name] = optional(doc.get(name), as_int, f"{path}.{name}")
                continue
            value = require(doc, name, f"{path}.{name}")
            read = as_float if name in ("fullness", "backlog_age_s") else as_int
            values[name] = read(value, f"{path}.{name}")
        return cls(**values)


@dataclass(frozen=True, slots=True)
class RecoveryStatus:
    """What opening a damaged outbox cut (``edge_agent.outbox.Recovery``); sent only when something was."""

    wal_cut_bytes: int
    wal_reason: str
    salvaged_from: str
    batches_kept: int
    staged_kept: int
    rows_unreadable: int
    errors: tuple[str, ...]

    @classmethod
    def from_json(cls, doc: dict[str, Any], path: str = "recovery") -> RecoveryStatus:
        def field(name: str) -> Any:
            return require(doc, name, f"{path}.{name}")

        errors = tuple(
            as_str(e, f"{path}.errors[{i}]", 2000)
            for i, e in enumerate(as_list(field("errors"), f"{path}.errors", 1000))
        )
        return cls(
            as_int(field("wal_cut_bytes"), f"{path}.wal_cut_bytes"),
            as_str(field("wal_reason"), f"{path}.wal_reason", 2000),
            as_str(field("salvaged_from"), f"{path}.salvaged_from", 4096),
            as_int(field("batches_kept"), f"{path}.batches_kept"),
            as_int(field("staged_kept"), f"{path}.staged_kept"),
            as_int(field("rows_unreadable"), f"{path}.rows_unreadable"),
            errors,
        )


@dataclass(frozen=True, slots=True)
class DeviceStatus:
    up: bool
    since_ns: int  # when it last changed state
    cause: str  # why it is down; "" when up

    @classmethod
    def from_json(cls, doc: dict[str, Any], path: str) -> DeviceStatus:
        return cls(
            as_bool(require(doc, "up", f"{path}.up"), f"{path}.up"),
            as_time_ns(require(doc, "since_ns", f"{path}.since_ns"), f"{path}.since_ns"),
            as_str(require(doc, "cause", f"{path}.cause"), f"{path}.cause", 2000),
        )


@dataclass(frozen=True, slots=True)
class ClockStatus:
    """The station clock's last check (``edge_agent.clock.ClockMonitor.state``).

    The measurements are None until one check succeeds.
    """

    source: str  # "sntp <host>" or "chrony"
    offset_s: float | None
    delay_s: float | None
    measured_ns: int | None
    max_offset_s: float
    ok: bool | None  # None: never measured
    error: str | None  # the last check's failure, if it failed

    @classmethod
    def from_json(cls, doc: dict[str, Any], path: str = "clock") -> ClockStatus:
        def field(name: str) -> Any:
            return require(doc, name, f"{path}.{name}")

        return cls(
            as_str(field("source"), f"{path}.source"),
            optional(field("offset_s"), as_float, f"{path}.offset_s"),
            optional(field("delay_s"), as_float, f"{path}.delay_s"),
            optional(field("measured_ns"), as_time_ns, f"{path}.measured_ns"),
            as_float(field("max_offset_s"), f"{path}.max_offset_s"),
            optional(field("ok"), as_bool, f"{path}.ok"),
            optional(field("error"), as_str, f"{path}.error", 2000),
        )


@dataclass(frozen=True, slots=True)
class StationState:
    """What the agent reports every status interval and whenever a device changes state."""

    outbox: OutboxStatus
    recovery: RecoveryStatus | None  # None unless opening the outbox cut something
    devices: Mapping[str, DeviceStatus]
    refused_readings: int  # readings refused because the outbox was full
    clock: ClockStatus | None  # None without a clock: section
    broker_refused_batches: int  # batches the broker refused (e.g. not authorised)
    changed_devices: tuple[str, ...] | None = None  # the devices whose change of state prompted this status

    def as_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "outbox": self.outbox.as_json(),
            "recovery": None
            if self.recovery is None
            else {**asdict(self.recovery), "errors": list(self.recovery.errors)},
            "devices": {device: asdict(state) for device, state in self.devices.items()},
            "refused_readings": self.refused_readings,
            "clock": None if self.clock is None else asdict(self.clock),
            "broker_refused_batches": self.broker_refused_batches,
        }
        if self.changed_devices:
            doc["changed_devices"] = list(self.changed_devices)
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> StationState:
        devices = as_object(require(doc, "devices", "devices"), "devices")
        if len(devices) > MAX_DEVICES:
            raise MessageError("schema", "devices", f"more than {MAX_DEVICES} devices")
        changed = doc.get("changed_devices")
        return cls(
            OutboxStatus.from_json(as_object(require(doc, "outbox", "outbox"), "outbox")),
            optional(
                require(doc, "recovery", "recovery"),
                lambda v, p: RecoveryStatus.from_json(as_object(v, p), p),
                "recovery",
            ),
            {d: DeviceStatus.from_json(as_object(s, f"devices.{d}"), f"devices.{d}") for d, s in devices.items()},
            as_int(require(doc, "refused_readings", "refused_readings"), "refused_readings"),
            optional(require(doc, "clock", "clock"), lambda v, p: ClockStatus.from_json(as_object(v, p), p), "clock"),
            as_int(require(doc, "broker_refused_batches", "broker_refused_batches"), "broker_refused_batches"),
            None
            if changed is None
            else tuple(
                as_str(d, f"changed_devices[{i}]", 64)
                for i, d in enumerate(as_list(changed, "changed_devices", MAX_DEVICES))
            ),
        )


@dataclass(frozen=True, slots=True)
class Status(_Parsed):
    """``online`` with ``outbox``: the periodic status."""

    station: str
    session: int
    ts_ns: int | None
    state: StationState

    def encode(self) -> bytes:
        return encode_json({**_online(self.station, self.session, self.ts_ns), **self.state.as_json()})

    @classmethod
    def _from_json(cls, header: Header, doc: dict[str, Any]) -> Status:
        return cls(header.station, header.session, _optional_ts(doc), StationState.from_json(doc))


# -- re-send report -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResendReport(_Parsed):
    """``online`` with ``resend``: the agent's answer to a re-send request (broker_bridge.commands.ResendRequest)."""

    station: str
    session: int
    ts_ns: int | None
    from_seq: int  # the range asked for, capped at MAX_RESEND_BATCHES
    to_seq: int
    resent: int  # batches of the range the outbox still kept, re-published byte for byte
    not_kept: tuple[tuple[int, int], ...]  # inclusive seq ranges the outbox no longer keeps

    def encode(self) -> bytes:
        report = {"from_seq": self.from_seq, "to_seq": self.to_seq, "resent": self.resent,
                  "not_kept": [list(r) for r in self.not_kept]}  # fmt: skip
        return encode_json({**_online(self.station, self.session, self.ts_ns), "resend": report})

    @classmethod
    def _from_json(cls, header: Header, doc: dict[str, Any]) -> ResendReport:
        report = as_object(doc["resend"], "resend")

        def seq(name: str) -> int:
            return as_int(require(report, name, f"resend.{name}"), f"resend.{name}", 1)

        ranges = []
        for i, item in enumerate(
            as_list(require(report, "not_kept", "resend.not_kept"), "resend.not_kept", MAX_NOT_KEPT_RANGES)
        ):
            pair = as_list(item, f"resend.not_kept[{i}]", 2)
            if len(pair) != 2:
                raise MessageError("schema", f"resend.not_kept[{i}]", "must be [first, last]")
            first, last = (as_int(v, f"resend.not_kept[{i}]", 1) for v in pair)
            if first > last:
                raise MessageError("schema", f"resend.not_kept[{i}]", f"range {first}..{last} is empty")
            ranges.append((first, last))
        first, last = seq("from_seq"), seq("to_seq")
        if first > last:
            raise MessageError("schema", "resend", f"range {first}..{last} is empty")
        resent = as_int(require(report, "resent", "resend.resent"), "resend.resent")
        return cls(header.station, header.session, _optional_ts(doc), first, last, resent, tuple(ranges))


def ranges_of(seqs: list[int]) -> tuple[tuple[int, int], ...]:
    """Ascending sequence numbers as inclusive ranges: [3, 4, 5, 9] -> ((3, 5), (9, 9))."""
    ranges: list[list[int]] = []
    for seq in seqs:
        if ranges and ranges[-1][1] == seq - 1:
            ranges[-1][1] = seq
        else:
            ranges.append([seq, seq])
    return tuple((first, last) for first, last in ranges)


# -- one parse for the topic ----------------------------------------------------------------------------

StationMessage = Birth | Will | Status | ResendReport


def parse_station_message(payload: bytes) -> StationMessage:
    """Any message of the status topic, typed; ``MessageError`` names the field at fault."""
    doc = load_json_object(payload, "status", MAX_STATUS_BYTES)
    header = _header(doc)
    if header.state == "offline":
        return Will._from_json(header, doc)
    if "resend" in doc:
        return ResendReport._from_json(header, doc)
    if "outbox" in doc:
        return Status._from_json(header, doc)
    return Birth._from_json(header, doc)


def seal_station_message(message: StationMessage, key_id: str, private_key: Ed25519PrivateKey) -> bytes:
    """The bytes on the status topic: the message's JSON signed in the batch's envelope.

    The agent seals its will when it arms it, before connecting: the broker
    publishes those bytes unchanged, so the will carries the station's signature
    and the session number of the connection it belongs to.
    """
    body = message.encode()
    return Envelope(key_id, body, private_key.sign(body)).encode()


def open_station_envelope(payload: bytes) -> Envelope:
    """The envelope of a status-topic message, nothing in it trusted yet; ``EnvelopeError`` says why not.

    Then ``envelope.verify`` with the station's key, then ``parse_station_message(envelope.body)``.
    """
    if len(payload) > MAX_SIGNED_STATUS_BYTES:
        raise EnvelopeError("oversized", f"signed status of {len(payload)} bytes > {MAX_SIGNED_STATUS_BYTES}")
    return open_envelope(payload)


def header_of(message: StationMessage) -> Header:
    return Header("offline" if isinstance(message, Will) else "online", message.station, message.session)
