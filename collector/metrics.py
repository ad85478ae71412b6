"""Prometheus metrics of the collector (prometheus-client: the standard exposition, no hand-written format)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server


class CollectorMetrics:
    def __init__(self) -> None:
        # A registry per collector, so several in one process (tests) never clash.
        self.registry = CollectorRegistry()
        r = self.registry
        self.messages = Counter("quantrac_messages_received", "MQTT messages received", registry=r)
        self.readings = Counter("quantrac_readings_written", "readings committed to QuestDB", registry=r)
        self.duplicates = Counter("quantrac_duplicate_batches", "redelivered batches acknowledged, not rewritten", registry=r)
        self.rejects = Counter("quantrac_rejects", "rejected messages", ["reason"], registry=r)
        self.flags = Counter("quantrac_qc_flags", "readings flagged by a measurement control", ["check", "flag"], registry=r)
        self.gaps = Counter("quantrac_sequence_gaps", "gaps in a station's batch sequence", registry=r)
        self.flush_seconds = Histogram(
            "quantrac_flush_seconds", "check + write + ack of one flush",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=r,
        )
        self.flush_failures = Counter("quantrac_flush_failures", "flushes that found QuestDB unavailable", registry=r)
        self.unacked = Gauge("quantrac_unacked_messages", "messages held, not yet acknowledged", registry=r)
        self.write_lag = Gauge(
            "quantrac_write_lag_seconds", "receive-to-commit delay of the oldest message of the last flush", registry=r
        )
        self.suspended_tables = Gauge(
            "quantrac_wal_suspended_tables", "QuestDB WAL tables suspended: writes succeed but stay invisible", registry=r
        )

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        start_http_server(port, addr=host, registry=self.registry)
