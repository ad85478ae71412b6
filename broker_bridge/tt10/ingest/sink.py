"""The stream: ``take`` keeps every upload durably (archived verbatim, a ledger row) and returns.

Called from the sources' threads (FTP, SFTP, watch, pull); judging, converting and publishing happen
on the service's worker thread, which ``take`` wakes. Nothing is refused here, so nothing a station
sent is lost: a file for an unknown station or with an unreadable name is archived and recorded, and
the worker refuses it with its reason.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import structlog

from broker_bridge.tt10.ingest.archive import Archive
from broker_bridge.tt10.ingest.ledger import Ledger
from broker_bridge.tt10.sources.upload import Upload

log = structlog.get_logger("broker_bridge.tt10.ingest")


class Tt10Sink:
    """An ``UploadSink``: durable before ``take`` returns (the archive's fsync, then the ledger's commit)."""

    def __init__(self, archive: Archive, ledger: Ledger, wake: threading.Event | None = None) -> None:
        self.archive = archive
        self.ledger = ledger
        self.wake = wake or threading.Event()

    def take(self, upload: Upload) -> None:
        sha256 = self.archive.put(upload.data)
        self._received(upload, sha256, self.ledger.record(upload, sha256))
        self.wake.set()

    def take_all(self, uploads: Sequence[Upload]) -> None:
        """``take`` for several uploads (a folder watcher's): all durable when this returns, with the
        archive's fsyncs written back together and one ledger commit, instead of three fsyncs a file."""
        shas = self.archive.put_all([u.data for u in uploads])
        pairs = list(zip(uploads, shas, strict=True))
        for (upload, sha256), file_id in zip(pairs, self.ledger.record_all(pairs), strict=True):
            self._received(upload, sha256, file_id)
        self.wake.set()

    @staticmethod
    def _received(upload: Upload, sha256: str, file_id: int) -> None:
        log.info(
            "tt10_file_received", station=upload.station, account=upload.account, file=upload.name, upload=file_id,
            sha256=sha256, bytes=len(upload.data), transport=upload.transport, peer=upload.peer,
            interrupted=upload.interrupted,
        )  # fmt: skip
