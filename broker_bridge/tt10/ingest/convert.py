"""The builder: judge what the stream recorded, mind the holds, seal accepted files into the outbox.

Runs on one thread (the service's worker). Every step is a durable state change in the ledger, and
sealing is idempotent by the file's SHA-256 in the station's outbox (``Outbox.seal_files``), so a
kill at any point loses nothing and seals nothing twice: on restart the rows still ``received`` are
judged, the holds whose wait ended are taken, the accepted files not yet marked converted are sealed
(a file sealed before the kill is found sealed and only marked).

Grouped for the fsyncs (a day's backlog is 576,000 files): a round's judgements are one ledger
transaction (up to ``ROUND_FILES``; the files are parsed before it opens, so the sources' ``record``,
which waits for it, waits for SQL only), a station's accepted files of the round are sealed in one
outbox transaction, and their conversions marked in one more. The order stays judged -> sealed ->
marked, each committed before the next begins.

Decisions (README.md "Judgement"):

* identical bytes again (same station, same SHA-256): ``duplicate`` of the first copy, never
  converted again;
* a held file is replaced (``superseded``) by a later upload of the same name, or by an accepted
  file holding every (parameter, time) of it;
* overlapping files are converted as they are: the warehouse's key (station, device, parameter,
  time) keeps one row, and a different value for a stored key is recorded by the collector in
  ``reading_revisions``, never silently overwritten.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

import structlog

from broker_bridge.keys import SigningKey
from broker_bridge.topics import TopicError, check_station_id
from broker_bridge.tt10.codec import Tt10File, read_file
from broker_bridge.tt10.ingest.archive import Archive
from broker_bridge.tt10.ingest.judge import judge, keys_of
from broker_bridge.tt10.ingest.ledger import ACCEPTED, DUPLICATE, HELD, REFUSED, FileRow, Ledger
from broker_bridge.tt10.ingest.settings import IngestSettings
from edge_agent.outbox import FileToSeal, Outbox
from vocabulary.sources import TT10

log = structlog.get_logger("broker_bridge.tt10.ingest")

PARSED_KEPT = 2000  # accepted files kept parsed between judging and sealing (a round judges at most 1000)
ROUND_FILES = 250  # files judged in one ledger transaction: one fsync for them, a short wait for record()


class Converter:
    def __init__(
        self,
        settings: IngestSettings,
        archive: Archive,
        ledger: Ledger,
        key: SigningKey,
        outbox: Callable[[str], Outbox],
    ) -> None:
        self.settings, self.archive, self.ledger, self.key, self.outbox = settings, archive, ledger, key, outbox
        self._parsed: dict[int, Tt10File] = {}
        self._logs: list[tuple[FileRow, str, dict]] = []  # judgements to log once their transaction committed

    def step(self, now_ns: int | None = None) -> int:
        """Judge new uploads, end the holds that are due, seal accepted files. Returns the work done."""
        now_ns = now_ns or time.time_ns()
        return self.judge_received() + self.end_holds(now_ns) + self.convert()

    # -- judging -------------------------------------------------------------
    def _read(self, row: FileRow) -> Tt10File:
        parsed = self._parsed.pop(row.id, None)  # read when judged, moments ago: the same bytes (content-addressed)
        return parsed if parsed is not None else self._parse(row)

    def _parse(self, row: FileRow) -> Tt10File:
        station = self.settings.station(row.station)
        return read_file(
            self.archive.get(row.sha256),
            row.name,
            mapping=station.mapping if station else None,
            name_time_tolerance_s=self.settings.name_time_tolerance_s,
        )

    def judge_received(self) -> int:
        rows = self.ledger.received()
        for start in range(0, len(rows), ROUND_FILES):
            chunk = rows[start : start + ROUND_FILES]
            for row in chunk:  # outside the transaction: the sources' record() waits for it
                if row.id not in self._parsed and self._station_refusal(row.station) is None:
                    self._parsed[row.id] = self._parse(row)
            try:
                with self.ledger.transaction():
                    for row in chunk:
                        self._judge(row)
            except BaseException:
                self._logs.clear()  # rolled back: judged again next round
                raise
            self._flush_logs()
        return len(rows)

    def _judge(self, row: FileRow) -> None:
        copy = self.ledger.earlier_copy(row.station, row.sha256, row.id)
        if copy is not None:
            self._parsed.pop(row.id, None)
            self.ledger.decide(
                row.id,
                DUPLICATE,
                [f"identical to upload #{copy.id} ({copy.name}, {copy.state}) received {_iso(copy.received_ns)}:"
                 " recorded, not taken again"],
                duplicate_of=copy.id,
            )  # fmt: skip
            self._log(row, DUPLICATE, duplicate_of=copy.id)
            return
        refusal = self._station_refusal(row.station)
        if refusal is not None:
            self._parsed.pop(row.id, None)
            self.ledger.decide(row.id, REFUSED, [refusal])
            self._log(row, REFUSED, reason=refusal)
            return
        file = self._read(row)
        verdict = judge(file, interrupted=row.interrupted)
        replaced = self._replaced_holds(row, file, verdict.state)
        hold_until = row.received_ns + int(self.settings.hold_s * 1e9) if verdict.state == HELD else None
        self.ledger.decide(
            row.id, verdict.state, verdict.reasons, readings=len(verdict.readings), refused=verdict.refused,
            hold_until_ns=hold_until, supersedes=replaced,
        )  # fmt: skip
        if verdict.state == ACCEPTED and len(self._parsed) < PARSED_KEPT:
            self._parsed[row.id] = file  # convert() needs it next: not parsed twice
        self._log(row, verdict.state, readings=len(verdict.readings), refused=len(verdict.refused), supersedes=replaced)

    def _station_refusal(self, station: str) -> str | None:
        try:
            check_station_id(station)
        except TopicError as exc:
            return f"the account names no usable station: {exc}"
        if self.settings.station(station) is None:
            return f"station {station} is not served by this bridge (registry bridges: <bridge>: stations:)"
        return None

    def _replaced_holds(self, row: FileRow, file: Tt10File, state: str) -> list[int]:
        """The station's held files this upload replaces: the same name, or (accepted) all of their readings."""
        replaced = []
        new_keys = keys_of(file) if state == ACCEPTED else frozenset()
        for held in self.ledger.held(row.station):
            if held.name == row.name:
                replaced.append(held.id)
            elif new_keys:
                old_keys = keys_of(self._read(held))
                if old_keys and old_keys <= new_keys:
                    replaced.append(held.id)
        return replaced

    def end_holds(self, now_ns: int) -> int:
        """Held files whose wait is over: their whole lines are taken, the cut one refused."""
        rows = self.ledger.due_holds(now_ns)
        if not rows:
            return 0
        verdicts = [
            judge(self._read(row), interrupted=row.interrupted, final=True, held_s=self.settings.hold_s) for row in rows
        ]
        with self.ledger.transaction():
            for row, verdict in zip(rows, verdicts, strict=True):
                self.ledger.decide(
                    row.id, verdict.state, verdict.reasons, readings=len(verdict.readings), refused=verdict.refused
                )
        for row, verdict in zip(rows, verdicts, strict=True):
            self._log(row, verdict.state, readings=len(verdict.readings), refused=len(verdict.refused), after_hold=True)
        self._flush_logs()
        return len(rows)

    # -- sealing -------------------------------------------------------------
    def convert(self) -> int:
        rows = self.ledger.to_convert()
        by_station: dict[str, list[FileRow]] = {}
        for row in rows:  # the ledger's order within a station: its files are sealed oldest upload first
            by_station.setdefault(row.station, []).append(row)
        sealed: list[tuple[FileRow, int, int, bool, int]] = []
        try:
            for station_id, mine in by_station.items():
                station = self.settings.station(station_id)
                device = station.device if station else "tt10"
                files = []
                for row in mine:
                    verdict = judge(self._read(row), interrupted=row.interrupted, final=True)
                    readings = [r.to_reading(device) for r in verdict.readings]
                    newest = max(r.ts_ns for r in readings)
                    historical = newest < time.time_ns() - int(self.settings.historical_after_s * 1e9)
                    files.append(FileToSeal(readings, row.sha256, historical))
                results = self.outbox(station_id).seal_files(
                    self.key, files, source=TT10, max_readings=self.settings.max_readings_per_batch
                )
                sealed += [(row, *result, len(f.readings)) for row, result, f in zip(mine, results, files, strict=True)]
        finally:  # what was sealed is marked, even when a later station's sealing failed
            if sealed:
                with self.ledger.transaction():
                    for row, first, last, _, _ in sealed:
                        self.ledger.mark_converted(row.id, first, last)
        for row, first, last, now, count in sealed:
            log.info(
                "tt10_file_converted", station=row.station, file=row.name, upload=row.id, readings=count,
                first_seq=first, last_seq=last, sealed_before=not now,
            )  # fmt: skip
        return len(rows)

    def _log(self, row: FileRow, state: str, **details) -> None:
        self._logs.append((row, state, details))

    def _flush_logs(self) -> None:
        for row, state, details in self._logs:
            level = log.warning if state in (REFUSED, HELD) else log.info
            level("tt10_file_judged", station=row.station, file=row.name, upload=row.id, state=state, **details)
        self._logs.clear()


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
