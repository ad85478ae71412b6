"""MQTT topic names of wire contract v1.

Every station publishes under its own prefix so that the broker's ACL can
confine a station's credentials to its own topics (``pattern write
quantrac/v1/%u/#``) and the collector can check that a body's station id
matches the topic it arrived on.
"""

from __future__ import annotations

from vocabulary.stations import STATION_ID_PATTERN

PREFIX = "quantrac/v1"

DATA_SUFFIX = "data"
STATUS_SUFFIX = "status"
COMMAND_SUFFIX = "cmd"  # warehouse -> station, e.g. "re-send batches 120..135"
RECEIPT_SUFFIX = "receipt"  # warehouse -> station: how far its batches are committed (broker_bridge/receipts.py)
ALERT_SUFFIX = "alert"  # warehouse -> people: an exceedance episode opened, escalated, closed (broker_bridge/alerts.py)
# warehouse -> technicians: a station silent, a device in error, a long calibration, hours incomplete
AVAILABILITY_SUFFIX = "availability"


class TopicError(ValueError):
    """A topic or station id that the contract does not allow."""


def check_station_id(station_id: str) -> str:
    if not isinstance(station_id, str) or not STATION_ID_PATTERN.match(station_id):
        raise TopicError(
            f"invalid station id {station_id!r}: use 1-64 characters of A-Z a-z 0-9 _ . -,"
            " starting with a letter or digit"
        )
    return station_id


def data_topic(station_id: str) -> str:
    return f"{PREFIX}/{check_station_id(station_id)}/{DATA_SUFFIX}"


def status_topic(station_id: str) -> str:
    return f"{PREFIX}/{check_station_id(station_id)}/{STATUS_SUFFIX}"


def command_topic(station_id: str) -> str:
    return f"{PREFIX}/{check_station_id(station_id)}/{COMMAND_SUFFIX}"


def receipt_topic(station_id: str) -> str:
    return f"{PREFIX}/{check_station_id(station_id)}/{RECEIPT_SUFFIX}"


def alert_topic(station_id: str) -> str:
    return f"{PREFIX}/{check_station_id(station_id)}/{ALERT_SUFFIX}"


def availability_topic(station_id: str) -> str:
    return f"{PREFIX}/{check_station_id(station_id)}/{AVAILABILITY_SUFFIX}"


def data_subscription(share_group: str | None = None) -> str:
    """Filter for every station's data; a share group spreads it over collectors."""
    topic = f"{PREFIX}/+/{DATA_SUFFIX}"
    return f"$share/{share_group}/{topic}" if share_group else topic


def status_subscription(share_group: str | None = None) -> str:
    topic = f"{PREFIX}/+/{STATUS_SUFFIX}"
    return f"$share/{share_group}/{topic}" if share_group else topic


def parse_topic(topic: str) -> tuple[str, str] | None:
    """(station id, "data" or "status") for one of our topics, else None."""
    parts = topic.split("/")
    if len(parts) != 4 or f"{parts[0]}/{parts[1]}" != PREFIX:
        return None
    if parts[3] not in (DATA_SUFFIX, STATUS_SUFFIX):
        return None
    if not STATION_ID_PATTERN.match(parts[2]):
        return None
    return parts[2], parts[3]


def station_of_topic(topic: str) -> str | None:
    """The station id a data or status topic names, or None when it is not ours."""
    parsed = parse_topic(topic)
    return parsed[0] if parsed else None
