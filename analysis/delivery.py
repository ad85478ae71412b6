"""Delivering alerts: one webhook POST and one retained MQTT message per decision, nothing lost.

The ``alerts`` table is the durable outbox: the aggregator writes each decision there (states
``pending``) before anything is sent; this module sends, retries with exponential back-off (1 s
doubling to ``max_backoff_s``) while a receiver is down, and rewrites the row (same ts, alert_id:
DEDUP UPSERT) as each channel succeeds. After a restart the pending rows are read back and sent.
The webhook body and the MQTT payload are the same bytes (broker_bridge/alerts.py); with a secret,
the POST carries ``X-Quantrac-Signature: sha256=<HMAC-SHA256 of the body>``.
"""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass

import structlog

from broker_bridge import session
from broker_bridge.alerts import SIGNATURE_HEADER, AlertMessage, AvailabilityAlert, signature
from broker_bridge.session import BrokerAddress
from broker_bridge.topics import alert_topic, availability_topic
from store import analysis_queries as q
from store.ilp_writer import IlpRow, WarehouseWriter, ilp_row
from store.schema import ALERTS

log = structlog.get_logger("analysis.delivery")


@dataclass
class Outgoing:
    ts: int
    alert_id: str
    station: str
    kind: str
    audience: str
    payload: bytes
    webhook_state: str
    webhook_attempts: int
    mqtt_state: str
    mqtt_attempts: int
    next_try: float = 0.0
    last_error: str = ""

    @property
    def done(self) -> bool:
        return self.webhook_state != "pending" and self.mqtt_state != "pending"


def outbox_row(msg: AlertMessage | AvailabilityAlert, now: int, channels: Mapping[str, str]) -> IlpRow:
    """A new decision's ``alerts`` row: pending on each configured channel (``AlertDelivery.channels``)."""
    return ilp_row(
        ALERTS,
        now,
        alert_id=msg.alert_id,
        station=msg.station,
        kind=msg.kind,
        audience=msg.audience,
        payload=msg.encode().decode("ascii"),
        webhook_state=channels["webhook_state"],
        webhook_attempts=0,
        mqtt_state=channels["mqtt_state"],
        mqtt_attempts=0,
        updated_at=now,
    )


class AlertDelivery:
    def __init__(
        self,
        pg_conninfo: str,
        ilp_conf: str,
        *,
        webhook_url: str | None = None,
        webhook_secret: bytes | None = None,
        broker: BrokerAddress | None = None,
        client_id: str = "quantrac-aggregator",
        max_backoff_s: float = 300.0,
        timeout_s: float = 10.0,
    ) -> None:
        self.pg = pg_conninfo
        self.writer = WarehouseWriter(ilp_conf)
        self.webhook_url = webhook_url
        self.secret = webhook_secret
        self.broker = broker
        self.max_backoff_s = max_backoff_s
        self.timeout_s = timeout_s
        self._queue: dict[str, Outgoing] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._client = None
        if broker is not None:
            self._client = session.new_client(client_id)
            session.connect_async(self._client, broker, session.connect_properties())
            self._client.loop_start()

    @property
    def channels(self) -> dict[str, str]:
        """The initial state of each channel for a new alert row: pending, or none when not configured."""
        return {
            "webhook_state": "pending" if self.webhook_url else "none",
            "mqtt_state": "pending" if self.broker is not None else "none",
        }

    def load_pending(self) -> int:
        """The outbox after a restart: every alert row with a channel still pending."""
        rows = q.undelivered_alerts(self.pg)
        with self._lock:
            for r in rows:
                self._queue.setdefault(
                    r.alert_id,
                    Outgoing(
                        r.ts,
                        r.alert_id,
                        r.station,
                        r.kind,
                        r.audience,
                        r.payload.encode(),
                        r.webhook_state,
                        r.webhook_attempts or 0,
                        r.mqtt_state,
                        r.mqtt_attempts or 0,
                    ),
                )
        self._wake.set()
        return len(rows)

    def submit(self, alerts: list[AlertMessage | AvailabilityAlert]) -> None:
        """Alerts already written to the ``alerts`` table (pending) by the aggregator."""
        states = self.channels
        with self._lock:
            for a in alerts:
                self._queue.setdefault(
                    a.alert_id,
                    Outgoing(
                        a.decided_ns,
                        a.alert_id,
                        a.station,
                        a.kind,
                        a.audience,
                        a.encode(),
                        states["webhook_state"],
                        0,
                        states["mqtt_state"],
                        0,
                    ),
                )
        self._wake.set()

    def pending(self) -> int:
        with self._lock:
            return len(self._queue)

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.deliver_due()
            self._wake.wait(0.5)
            self._wake.clear()

    def deliver_due(self) -> None:
        now = time.monotonic()
        with self._lock:
            due = sorted((o for o in self._queue.values() if o.next_try <= now), key=lambda o: o.ts)
        for out in due:
            changed = False
            if out.webhook_state == "pending":
                out.webhook_attempts += 1
                changed = True
                if self._post(out):
                    out.webhook_state = "delivered"
            if out.mqtt_state == "pending":
                out.mqtt_attempts += 1
                changed = True
                if self._publish(out):
                    out.mqtt_state = "delivered"
            if not out.done:
                attempts = max(out.webhook_attempts, out.mqtt_attempts)
                out.next_try = time.monotonic() + min(self.max_backoff_s, 2 ** (attempts - 1))
            if changed:
                self._record(out)
            if out.done:
                with self._lock:
                    self._queue.pop(out.alert_id, None)

    def _post(self, out: Outgoing) -> bool:
        headers = {"Content-Type": "application/json", "User-Agent": "quantrac-aggregator"}
        if self.secret:
            headers[SIGNATURE_HEADER] = signature(self.secret, out.payload)
        request = urllib.request.Request(self.webhook_url, data=out.payload, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                ok = 200 <= response.status < 300
        except (urllib.error.URLError, OSError) as exc:
            out.last_error = f"webhook: {exc}"
            log.warning("alert_webhook_failed", station=out.station, alert_id=out.alert_id, error=str(exc))
            return False
        if ok:
            log.info("alert_webhook_sent", station=out.station, alert_id=out.alert_id, kind=out.kind)
        return ok

    def _publish(self, out: Outgoing) -> bool:
        if self._client is None or not self._client.is_connected():
            out.last_error = "mqtt: not connected"
            return False
        # Each audience keeps its own retained message: a silent station must not hide an open exceedance.
        topic = availability_topic(out.station) if out.audience == "technician" else alert_topic(out.station)
        info = self._client.publish(topic, out.payload, qos=session.QOS, retain=True)
        try:
            info.wait_for_publish(timeout=self.timeout_s)
        except (RuntimeError, ValueError) as exc:
            out.last_error = f"mqtt: {exc}"
            return False
        if info.is_published():
            log.info("alert_mqtt_sent", station=out.station, alert_id=out.alert_id, kind=out.kind)
            return True
        out.last_error = "mqtt: no PUBACK in time"
        return False

    def _record(self, out: Outgoing) -> None:
        row = ilp_row(
            ALERTS,
            out.ts,
            alert_id=out.alert_id,
            station=out.station,
            kind=out.kind,
            audience=out.audience,
            payload=out.payload.decode("ascii"),
            webhook_state=out.webhook_state,
            webhook_attempts=out.webhook_attempts,
            mqtt_state=out.mqtt_state,
            mqtt_attempts=out.mqtt_attempts,
            last_error=out.last_error,
            updated_at=time.time_ns(),
        )
        try:
            self.writer.write_rows(ALERTS, [row])
        except RuntimeError as exc:  # the warehouse down: the state is written again at the next attempt
            log.warning("alert_state_not_recorded", station=out.station, alert_id=out.alert_id, error=str(exc))

    def close(self) -> None:
        if self._client is not None:
            session.disconnect_and_stop(self._client)
        self.writer.close()
