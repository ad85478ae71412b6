"""What every TT10 source hands on: one received file, its exact bytes, and who sent it how.

The sources (FTP/FTPS and SFTP servers, the folder watcher, the remote pull) build an
:class:`Upload` and call :meth:`UploadSink.take`; the sink (archive, ledger, completeness hold,
conversion) is built elsewhere and only has to implement ``take``.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

Transport = Literal["ftp", "ftps", "sftp", "watch", "pull"]


@dataclass(frozen=True)
class Upload:
    account: str  # the account that uploaded (or "watch:<dir>" / "pull:<host>")
    station: str  # the station id the account belongs to (from the account)
    name: str  # the file's base name as uploaded (e.g. HN_BKHN_KHIKXQ_20260325000500.txt)
    path: str  # its path as the client gave it, relative to the account's root
    data: bytes  # the exact bytes received
    received_ns: int  # UTC ns when the transfer ended
    transport: str  # "ftp" | "ftps" | "sftp" | "watch" | "pull"
    peer: str  # client address or source host/dir
    # True when the transport knows the transfer did not finish (pyftpdlib's
    # on_incomplete_file_received; an SSH connection lost with the file open for writing).
    # False is no proof of completeness: the sink judges the content.
    interrupted: bool


class UploadSink(Protocol):
    def take(self, upload: Upload) -> None:
        """Make the upload durable before returning; raise to refuse it (the source then tells
        its client the transfer failed, or leaves the file to be taken again)."""
        ...


def take_all(sink: UploadSink, uploads: Sequence[Upload]) -> None:
    """Every upload durable before returning (or raise: then none may count as taken). A sink with a
    ``take_all`` of its own makes them durable together (fewer fsyncs); any other takes them one by one."""
    if not uploads:
        return
    grouped = getattr(sink, "take_all", None)
    if grouped is not None:
        grouped(uploads)
        return
    for upload in uploads:
        sink.take(upload)


class SerializedSink:
    """A sink called from several source threads at once, one ``take`` at a time."""

    def __init__(self, sink: UploadSink) -> None:
        self._sink = sink
        self._lock = threading.Lock()

    def take(self, upload: Upload) -> None:
        with self._lock:
            self._sink.take(upload)

    def take_all(self, uploads: Sequence[Upload]) -> None:
        with self._lock:
            take_all(self._sink, uploads)
