"""Turns one MQTT message into accepted readings, a station event, or a reject with its reason.

The order matters: nothing in a body is trusted before its signature has
been verified with a key the registry holds for the station named by the
topic, and the body must then name that same station. That holds for both
topics: a batch and a status-topic message (birth, will, status, re-send
report) come in the same signed envelope.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from broker_bridge.envelope import (
    BodyColumns,
    Envelope,
    EnvelopeError,
    decode_body_columns,
    open_envelope,
    verify,
)
from broker_bridge.json_message import MessageError
from broker_bridge.station_messages import Birth, Will, header_of, open_station_envelope, parse_station_message
from broker_bridge.topics import STATUS_SUFFIX, parse_topic
from collector.registry import StationEntry, StationRegistry
from collector.sessions import SessionGuard
from store.ilp_writer import RejectRow
from vocabulary.sources import AGENT

# A reading that reaches the warehouse this long after it was measured is
# history, whether the station was offline or the collector was.
LATE_AFTER_NS = 60 * 10**9


@dataclass(frozen=True, slots=True)
class Accepted:
    body: BodyColumns
    key_id: str
    payload_sha256: str


@dataclass(frozen=True, slots=True)
class StationEvent:
    station: str
    state: str
    session: int
    planned: bool
    payload: str
    received_ns: int
    birth: Birth | None = None  # the parsed birth (its analyzer ranges: collector/analyzer_ranges.py)


@dataclass(frozen=True, slots=True)
class Rejected:
    row: RejectRow


def reject(topic: str, claimed: str, payload: bytes, received_ns: int, reason: str, detail: str) -> Rejected:
    return Rejected(RejectRow.of(received_ns, topic, claimed, reason, detail, payload))


def check_message(
    topic: str,
    payload: bytes,
    registry: StationRegistry,
    received_ns: int,
    sessions: SessionGuard | None = None,
) -> Accepted | StationEvent | Rejected:
    """``sessions``: the stations' proven sessions; None judges a status as if nothing were known yet."""
    parsed = parse_topic(topic)
    if parsed is None:
        return reject(
            topic, "", payload, received_ns, "bad_topic", f"topic {topic!r} is not quantrac/v1/<station>/data|status"
        )
    claimed, kind = parsed
    station = registry.get(claimed)
    if station is None:
        return reject(
            topic, claimed, payload, received_ns, "unknown_station", f"station {claimed} is not in the registry"
        )
    if not station.enabled:
        return reject(topic, claimed, payload, received_ns, "disabled_station", f"station {claimed} is disabled")
    status = kind == STATUS_SUFFIX
    try:
        envelope = open_station_envelope(payload) if status else open_envelope(payload)
    except EnvelopeError as exc:
        return reject(topic, claimed, payload, received_ns, exc.reason, exc.detail)
    refused = _signature_refusal(envelope, station, received_ns, registry)
    if refused is not None:
        return reject(topic, claimed, payload, received_ns, *refused)
    if status:
        return _check_status(topic, claimed, payload, envelope, received_ns, sessions or SessionGuard())
    try:
        body = decode_body_columns(envelope.body)
    except EnvelopeError as exc:
        return reject(topic, claimed, payload, received_ns, exc.reason, exc.detail)
    if body.station != claimed:
        return reject(
            topic,
            claimed,
            payload,
            received_ns,
            "topic_mismatch",
            f"body names station {body.station}, topic names {claimed}",
        )
    bridge = station.bridge_keys.get(envelope.key_id)
    if bridge is None and body.source != AGENT:
        return reject(
            topic, claimed, payload, received_ns, "source_mismatch",
            f"a {body.source} batch (file {body.file_sha256}) signed with the station's own key {envelope.key_id};"
            " converted batches are signed by a bridge bound to the station",
        )  # fmt: skip
    if bridge is not None and body.source == AGENT:
        return reject(
            topic, claimed, payload, received_ns, "source_mismatch",
            f"bridge {bridge[0]} (key {envelope.key_id}) signed a batch without a source: a bridge signs only"
            " what it converted (src), never an agent's readings",
        )  # fmt: skip
    return Accepted(body, envelope.key_id, hashlib.sha256(payload).hexdigest())


def _signature_refusal(
    envelope: Envelope, station: StationEntry, received_ns: int, registry: StationRegistry
) -> tuple[str, str] | None:
    """(reason, detail) when the envelope is not signed by a key the station, or a bridge bound to
    it (registry ``bridges:``), may sign with now."""
    key = station.keys.get(envelope.key_id)
    if key is None and envelope.key_id in station.bridge_keys:
        key = station.bridge_keys[envelope.key_id][1]
    if key is None:
        bridge = registry.bridge_of_key(envelope.key_id)
        if bridge is not None:
            return (
                "bridge_not_bound",
                f"key {envelope.key_id} is bridge {bridge}'s, which the registry does not bind to"
                f" {station.station_id} (bridges: {bridge}: stations:)",
            )
        return "unknown_key", f"key {envelope.key_id} is not registered for {station.station_id}"
    refusal = key.refusal(received_ns)
    if refusal is not None:
        return "retired_key", f"{station.station_id}: {refusal}"
    try:
        verify(envelope, key.verify_key)
    except EnvelopeError as exc:
        return exc.reason, exc.detail
    return None


def _check_status(
    topic: str, claimed: str, payload: bytes, envelope: Envelope, received_ns: int, sessions: SessionGuard
) -> StationEvent | Rejected:
    try:
        message = parse_station_message(envelope.body)
    except MessageError as exc:
        return reject(topic, claimed, payload, received_ns, exc.reason, exc.detail)
    header = header_of(message)
    if header.station != claimed:
        return reject(
            topic,
            claimed,
            payload,
            received_ns,
            "topic_mismatch",
            f"status names {header.station!r}, topic names {claimed}",
        )
    refusal = sessions.admit(claimed, header.session)
    if refusal is not None:
        return reject(topic, claimed, payload, received_ns, "session_jump", refusal)
    planned = isinstance(message, Will) and message.planned
    # What is stored is the verified JSON body: `quantrac status` reads it with parse_station_message.
    return StationEvent(
        claimed,
        header.state,
        header.session,
        planned,
        envelope.body.decode("utf-8"),
        received_ns,
        message if isinstance(message, Birth) else None,
    )
