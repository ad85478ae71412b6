"""The alert messages, as JSON: one decision about an exceedance episode (``AlertMessage``, for
regulators) or about the data's availability (``AvailabilityAlert``, for technicians).

The same bytes are the body of the webhook POST and the retained MQTT message on
``quantrac/v1/<station>/alert`` (docs/wire-format.md, "Alert"). Published by the aggregator
(``quantrac warehouse aggregate``), read by people's tools; one ``encode`` and one ``parse``.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import asdict, dataclass

from broker_bridge.json_message import (
    MessageError,
    as_float,
    as_int,
    as_station_id,
    as_str,
    encode_json,
    load_json_object,
    optional,
    require,
)

ALERT_VERSION = 1
MAX_ALERT_BYTES = 16 * 1024
ALERT_KINDS = ("open", "escalate", "close", "reopen", "withdraw")
AVAILABILITY_KINDS = ("open", "close")
#: What an availability alert is about: the station sent nothing (device and parameter empty), a series
#: reports device error (02) or calibration (01) for too long, or its hourly means stay incomplete.
AVAILABILITY_CONDITIONS = ("silent", "device_error", "calibration_long", "incomplete")
SIGNATURE_HEADER = "X-Quantrac-Signature"  # "sha256=<hex HMAC-SHA256 of the body>" when a webhook secret is set


@dataclass(frozen=True)
class AlertMessage:
    alert_id: str
    kind: str  # one of ALERT_KINDS
    station: str
    device: str
    parameter: str
    limit_id: str
    regulation: str
    period: str  # 1h / 8h / 24h
    limit: float
    unit: str
    episode_opened_ns: int  # END of the episode's first exceeding period, UTC
    at_ns: int  # the END of the period the decision is about, UTC
    state: str  # the episode's state after this decision: open / escalated / closed / withdrawn
    mean: float | None  # the mean of that period
    peak: float
    periods: int
    decided_ns: int
    audience: str = "regulator"  # pollution alerts; data-availability alerts go to "technician"
    confidence: str = "primary"  # the limit file's confidence (UNCONFIRMED values say so)

    def encode(self) -> bytes:
        return encode_json({"v": ALERT_VERSION, "type": "alert", **asdict(self)})

    @staticmethod
    def parse(payload: bytes) -> AlertMessage:
        doc = load_json_object(payload, "alert", MAX_ALERT_BYTES)
        if doc.get("v") != ALERT_VERSION or doc.get("type") != "alert":
            raise MessageError("version", "v", f"not an alert of version {ALERT_VERSION}")
        kind = as_str(require(doc, "kind", "kind"), "kind")
        if kind not in ALERT_KINDS:
            raise MessageError("schema", "kind", f"{kind!r} is not one of {', '.join(ALERT_KINDS)}")
        return AlertMessage(
            alert_id=as_str(require(doc, "alert_id", "alert_id"), "alert_id", 64),
            kind=kind,
            station=as_station_id(require(doc, "station", "station"), "station"),
            device=as_str(require(doc, "device", "device"), "device"),
            parameter=as_str(require(doc, "parameter", "parameter"), "parameter"),
            limit_id=as_str(require(doc, "limit_id", "limit_id"), "limit_id"),
            regulation=as_str(require(doc, "regulation", "regulation"), "regulation"),
            period=as_str(require(doc, "period", "period"), "period"),
            limit=as_float(require(doc, "limit", "limit"), "limit"),
            unit=as_str(require(doc, "unit", "unit"), "unit"),
            episode_opened_ns=as_int(require(doc, "episode_opened_ns", "episode_opened_ns"), "episode_opened_ns"),
            at_ns=as_int(require(doc, "at_ns", "at_ns"), "at_ns"),
            state=as_str(require(doc, "state", "state"), "state"),
            mean=optional(doc.get("mean"), as_float, "mean"),
            peak=as_float(require(doc, "peak", "peak"), "peak"),
            periods=as_int(require(doc, "periods", "periods"), "periods"),
            decided_ns=as_int(require(doc, "decided_ns", "decided_ns"), "decided_ns"),
            audience=as_str(doc.get("audience", "regulator"), "audience"),
            confidence=as_str(doc.get("confidence", "primary"), "confidence"),
        )


@dataclass(frozen=True)
class AvailabilityAlert:
    """A data-availability condition opened or closed: published retained on
    ``quantrac/v1/<station>/availability`` and POSTed to the same webhook as the pollution alerts."""

    alert_id: str
    kind: str  # open / close
    station: str
    device: str  # "" for the whole station (silent)
    parameter: str  # "" for the whole station
    condition: str  # one of AVAILABILITY_CONDITIONS
    since_ns: int  # when the condition began (UTC): the last reading before a silence, the first 02/01 reading
    at_ns: int  # when it was decided to hold (open) or to have ended (close)
    state: str  # open / closed
    detail: str  # for people: "no reading for 47 min (grace 15 min)"
    decided_ns: int
    audience: str = "technician"

    def encode(self) -> bytes:
        return encode_json({"v": ALERT_VERSION, "type": "availability", **asdict(self)})

    @staticmethod
    def parse(payload: bytes) -> AvailabilityAlert:
        doc = load_json_object(payload, "availability alert", MAX_ALERT_BYTES)
        if doc.get("v") != ALERT_VERSION or doc.get("type") != "availability":
            raise MessageError("version", "v", f"not an availability alert of version {ALERT_VERSION}")
        kind = as_str(require(doc, "kind", "kind"), "kind")
        if kind not in AVAILABILITY_KINDS:
            raise MessageError("schema", "kind", f"{kind!r} is not one of {', '.join(AVAILABILITY_KINDS)}")
        condition = as_str(require(doc, "condition", "condition"), "condition")
        if condition not in AVAILABILITY_CONDITIONS:
            raise MessageError(
                "schema", "condition", f"{condition!r} is not one of {', '.join(AVAILABILITY_CONDITIONS)}"
            )
        return AvailabilityAlert(
            alert_id=as_str(require(doc, "alert_id", "alert_id"), "alert_id", 64),
            kind=kind,
            station=as_station_id(require(doc, "station", "station"), "station"),
            device=as_str(require(doc, "device", "device"), "device"),
            parameter=as_str(require(doc, "parameter", "parameter"), "parameter"),
            condition=condition,
            since_ns=as_int(require(doc, "since_ns", "since_ns"), "since_ns"),
            at_ns=as_int(require(doc, "at_ns", "at_ns"), "at_ns"),
            state=as_str(require(doc, "state", "state"), "state"),
            detail=as_str(require(doc, "detail", "detail"), "detail", 1000),
            decided_ns=as_int(require(doc, "decided_ns", "decided_ns"), "decided_ns"),
            audience=as_str(doc.get("audience", "technician"), "audience"),
        )


def alert_id(station: str, device: str, parameter: str, limit_id: str, opened_ns: int, kind: str, at_ns: int) -> str:
    """The same decision always has the same id: re-evaluating late data never alerts twice."""
    key = "\x1f".join((station, device, parameter, limit_id, str(opened_ns), kind, str(at_ns)))
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def signature(secret: bytes, body: bytes) -> str:
    """The webhook's signature header value."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
