"""Turns one MQTT message into accepted readings or a reject with its reason.

The order matters: nothing in a body is trusted before its signature has
been verified with a key the registry holds for the station named by the
topic, and the body must then name that same station.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

from broker_bridge.envelope import BatchBody, EnvelopeError, decode_body, open_envelope, verify
from broker_bridge.topics import station_of_topic
from collector.registry import StationRegistry
from store.ilp_writer import RejectRow, StoredReading


@dataclass(frozen=True, slots=True)
class Accepted:
    body: BatchBody
    key_id: str
    rows: list[StoredReading]


@dataclass(frozen=True, slots=True)
class Rejected:
    row: RejectRow


def reject(topic: str, claimed: str, payload: bytes, received_ns: int, reason: str, detail: str) -> Rejected:
    return Rejected(
        RejectRow(
            received_ns=received_ns,
            topic=topic,
            claimed_station=claimed,
            reason=reason,
            detail=detail[:2000],
            payload_sha256=hashlib.sha256(payload).hexdigest(),
            payload_b64=base64.b64encode(payload).decode("ascii"),
        )
    )


def check_message(topic: str, payload: bytes, registry: StationRegistry, received_ns: int) -> Accepted | Rejected:
    claimed = station_of_topic(topic)
    if claimed is None:
        return reject(topic, "", payload, received_ns, "bad_topic", f"topic {topic!r} is not quantrac/v1/<station>/data")
    try:
        envelope = open_envelope(payload)
    except EnvelopeError as exc:
        return reject(topic, claimed, payload, received_ns, exc.reason, exc.detail)
    station = registry.get(claimed)
    if station is None:
        return reject(topic, claimed, payload, received_ns, "unknown_station", f"station {claimed} is not in the registry")
    if not station.enabled:
        return reject(topic, claimed, payload, received_ns, "disabled_station", f"station {claimed} is disabled")
    key = station.keys.get(envelope.key_id)
    if key is None:
        return reject(
            topic, claimed, payload, received_ns, "unknown_key", f"key {envelope.key_id} is not registered for {claimed}"
        )
    if key.state != "active":
        return reject(topic, claimed, payload, received_ns, "retired_key", f"key {envelope.key_id} of {claimed} is {key.state}")
    try:
        verify(envelope, key.public_key)
        body = decode_body(envelope.body)
    except EnvelopeError as exc:
        return reject(topic, claimed, payload, received_ns, exc.reason, exc.detail)
    if body.station != claimed:
        return reject(
            topic, claimed, payload, received_ns, "topic_mismatch", f"body names station {body.station}, topic names {claimed}"
        )
    rows = [StoredReading(body.station, body.seq, body.historical, envelope.key_id, received_ns, r) for r in body.readings]
    return Accepted(body, envelope.key_id, rows)
