"""Every message on the broker, per topic: who sends it, how it is delivered, and the one parse for it.

The place where a new message joins the contract. The ones planned next fit
the same way: a TT10 bridge's file receipts, province-to-national forwarding
of batches (the envelope unchanged, under a forwarding topic), the
warehouse's receipts to a station (built: ``receipts.py``). Each gets a topic suffix in
``topics.py``, a typed class with ``encode`` and ``parse`` in a module of its
own, a line here, a section in docs/wire-format.md and a test vector in
tests/broker_bridge/vectors/; tests/broker_bridge/test_wire_messages.py checks that all of these exist
for every kind listed here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from broker_bridge.alerts import AlertMessage, AvailabilityAlert
from broker_bridge.commands import ResendRequest
from broker_bridge.envelope import open_envelope
from broker_bridge.receipts import SignedReceipt
from broker_bridge.session import QOS
from broker_bridge.station_messages import Birth, ResendReport, Status, Will
from broker_bridge.topics import (
    ALERT_SUFFIX,
    AVAILABILITY_SUFFIX,
    COMMAND_SUFFIX,
    DATA_SUFFIX,
    RECEIPT_SUFFIX,
    STATUS_SUFFIX,
)


@dataclass(frozen=True)
class MessageKind:
    name: str
    parse: Callable[[bytes], object]


@dataclass(frozen=True)
class TopicContract:
    suffix: str  # quantrac/v1/<station>/<suffix>
    encoding: str
    qos: int
    retain: bool
    publisher: str
    readers: str
    kinds: tuple[MessageKind, ...]


DATA = TopicContract(
    DATA_SUFFIX, "msgpack", QOS, False, "the station's agent", "the collector",
    (MessageKind("batch", open_envelope),),  # then broker_bridge.envelope.verify and decode_body
)  # fmt: skip
# Retained, so a collector that subscribes learns every station's last word at once. Signed: the
# kinds' parse reads the JSON body of station_messages.open_station_envelope's envelope, after verify.
STATUS = TopicContract(
    STATUS_SUFFIX, "json body in the signed msgpack envelope", QOS, True,
    "the station's agent (the will: the broker)", "the collector; `quantrac status` reads what it stored",
    (MessageKind("birth", Birth.parse), MessageKind("will", Will.parse), MessageKind("status", Status.parse),
     MessageKind("resend_report", ResendReport.parse)),
)  # fmt: skip
COMMAND = TopicContract(
    COMMAND_SUFFIX, "json", QOS, False, "the collector or an operator", "the station's agent",
    (MessageKind("resend_request", ResendRequest.parse),),
)  # fmt: skip

# Retained, so a station that reconnects learns at once how far the warehouse got; signed by the collector.
RECEIPT = TopicContract(
    RECEIPT_SUFFIX, "json", QOS, True, "the collector (signed with its own key)", "the station's agent",
    (MessageKind("receipt", SignedReceipt.parse),),  # then SignedReceipt.verified with the trusted collector keys
)  # fmt: skip

# Retained, so a dashboard that subscribes sees each station's latest alert at once; the same bytes are
# the webhook's body (analysis/delivery.py).
ALERT = TopicContract(
    ALERT_SUFFIX, "json", QOS, True, "the aggregator (quantrac warehouse aggregate)", "people's tools, dashboards",
    (MessageKind("alert", AlertMessage.parse),),
)  # fmt: skip

# Retained beside the pollution alert (each keeps its own latest decision): technicians' tools subscribe here.
AVAILABILITY = TopicContract(
    AVAILABILITY_SUFFIX, "json", QOS, True, "the aggregator (quantrac warehouse aggregate)", "technicians' tools",
    (MessageKind("availability", AvailabilityAlert.parse),),
)  # fmt: skip

TOPICS: tuple[TopicContract, ...] = (DATA, STATUS, COMMAND, RECEIPT, ALERT, AVAILABILITY)


def kinds() -> dict[str, tuple[TopicContract, MessageKind]]:
    """Every message kind by name, with the topic it travels on."""
    return {kind.name: (topic, kind) for topic in TOPICS for kind in topic.kinds}
