"""The collector's counters: Prometheus metrics (prometheus-client: the standard exposition, no
hand-written format), and the same numbers as ``CollectorStats`` for tests and the CLI.

Everything is counted once, in a metric; ``CollectorMetrics.stats()`` reads the metrics back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily


@dataclass(frozen=True)
class CollectorStats:
    messages: int = 0
    readings_written: int = 0
    rejects_written: int = 0
    duplicates: int = 0
    events_written: int = 0
    gaps: int = 0
    flushes: int = 0
    flush_failures: int = 0
    rejects_by_reason: dict[str, int] = field(default_factory=dict)
    flags_by_check: dict[str, int] = field(default_factory=dict)  # readings each check fired on (flag 3, 4 or 9)


class CollectorMetrics:
    def __init__(self) -> None:
        # A registry per collector, so several in one process (tests) never clash.
        self.registry = CollectorRegistry()
        r = self.registry
        self.messages = Counter("quantrac_messages_received", "MQTT messages received", registry=r)
        self.readings = Counter("quantrac_readings_written", "readings committed to QuestDB", registry=r)
        self.duplicates = Counter(
            "quantrac_duplicate_batches", "redelivered batches acknowledged, not rewritten", registry=r
        )
        self.rejects = Counter("quantrac_rejects", "rejected messages", ["reason"], registry=r)
        self.events = Counter("quantrac_station_events_written", "station status messages committed", registry=r)
        self.flags = Counter(
            "quantrac_qc_flags", "readings flagged by a measurement control", ["check", "flag"], registry=r
        )
        self.checks_fired = Counter(
            "quantrac_qc_checks_fired",
            "readings a measurement control fired on (deciding or not)",
            ["check"],
            registry=r,
        )
        self.gaps = Counter("quantrac_sequence_gaps", "gaps in a station's batch sequence", registry=r)
        self.flushes = Counter(
            "quantrac_flushes", "flushes committed (readings, ledger, rejects, events, gaps)", registry=r
        )
        self.flush_seconds = Histogram(
            "quantrac_flush_seconds",
            "check + write + ack of one flush",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.flush_failures = Counter("quantrac_flush_failures", "flushes that found QuestDB unavailable", registry=r)
        self.unacked = Gauge("quantrac_unacked_messages", "messages held, not yet acknowledged", registry=r)
        self.write_lag = Gauge(
            "quantrac_write_lag_seconds", "receive-to-commit delay of the oldest message of the last flush", registry=r
        )
        self.suspended_tables = Gauge(
            "quantrac_wal_suspended_tables",
            "QuestDB WAL tables suspended: writes succeed but stay invisible",
            registry=r,
        )

        self.config_files = ReloadedFiles()
        r.register(self.config_files)

    def watch_config_file(self, path: str, source: ReloadedFile) -> None:
        """Export a file the collector reloads: its broken versions seen, and whether the last good one applies."""
        self.config_files.sources[path] = source

    def stats(self) -> CollectorStats:
        """The counters now, as numbers."""
        return CollectorStats(
            messages=_total(self.messages),
            readings_written=_total(self.readings),
            rejects_written=sum(_by_label(self.rejects, "reason").values()),
            duplicates=_total(self.duplicates),
            events_written=_total(self.events),
            gaps=_total(self.gaps),
            flushes=_total(self.flushes),
            flush_failures=_total(self.flush_failures),
            rejects_by_reason=_by_label(self.rejects, "reason"),
            flags_by_check=_by_label(self.checks_fired, "check"),
        )

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        start_http_server(port, addr=host, registry=self.registry)


class ReloadedFile(Protocol):
    """What the registry and the QC thresholds say about their file (collector/registry.py, qc/thresholds.py)."""

    reload_errors: int  # broken versions of the file seen while running, one per change
    last_error: Exception | None  # not None while the file as saved is broken and the last good version applies


class ReloadedFiles:
    """A Prometheus collector reading the reloaded files' own counts at scrape time: they count, this shows."""

    def __init__(self) -> None:
        self.sources: dict[str, ReloadedFile] = {}

    def collect(self):
        errors = CounterMetricFamily(
            "quantrac_config_reload_errors", "broken versions of a reloaded file (one per change)", labels=["file"]
        )
        stale = GaugeMetricFamily(
            "quantrac_config_stale",
            "1 while the file as saved is broken and its last good version applies",
            labels=["file"],
        )
        for path, source in self.sources.items():
            errors.add_metric([path], source.reload_errors)
            stale.add_metric([path], 0 if source.last_error is None else 1)
        yield errors
        yield stale


def _samples(counter: Counter):
    return (s for family in counter.collect() for s in family.samples if s.name.endswith("_total"))


def _total(counter: Counter) -> int:
    return int(sum(s.value for s in _samples(counter)))


def _by_label(counter: Counter, label: str) -> dict[str, int]:
    return {s.labels[label]: int(s.value) for s in _samples(counter)}
