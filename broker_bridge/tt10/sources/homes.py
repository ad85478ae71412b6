"""What the FTP and SFTP servers share: handing a file written into an account's home to the
sink, and the files a previous run left in the homes.

A finished upload is removed from the home once the sink took it (the sink's archive is the
copy of record, and the quota counts what the home holds). A file the transport knows to be
interrupted stays, so the client can resume it (``REST``/``APPE``), until it is sent again or
``leftover_age_s`` passed since its last write. At start, every file still in a home (interrupted,
refused by the sink, or written just before a crash) is handed to the sink with
``interrupted=True`` (nobody can tell whether it was whole) and removed once taken; while the
servers run, ``HomeSweeper`` does the same for the files left longer than ``leftover_age_s`` (a
partial never resumed, a file the sink refused that its logger never sent again), so they neither
fill the account's quota nor wait for the next start. A file written to while it is taken is kept
(the next sweep or its own upload hands it on); the sink is idempotent on the bytes.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import structlog

from broker_bridge.tt10.sources.accounts import Account
from broker_bridge.tt10.sources.upload import Upload, UploadSink

log = structlog.get_logger("broker_bridge.tt10.sources")

#: Names a client writes first and renames to the real name afterwards: held until renamed.
DEFAULT_HOLD_SUFFIXES = (".tmp", ".part", ".partial", ".filepart", ".upload")


def is_held_name(name: str, hold_suffixes: tuple[str, ...]) -> bool:
    return name.lower().endswith(tuple(s.lower() for s in hold_suffixes))


def deliver(
    sink: UploadSink,
    account: Account,
    path: Path,
    *,
    transport: str,
    peer: str,
    interrupted: bool,
    remove: bool,
) -> Upload:
    """Read ``path`` (inside ``account.root``), hand it to the sink, then remove it if ``remove``.
    Raises whatever reading or the sink raised (the file then stays where it is)."""
    data = path.read_bytes()
    upload = Upload(
        account=account.name,
        station=account.station,
        name=path.name,
        path=path.relative_to(account.root).as_posix(),
        data=data,
        received_ns=time.time_ns(),
        transport=transport,
        peer=peer,
        interrupted=interrupted,
    )
    sink.take(upload)
    log.info(
        "tt10_upload_taken",
        account=account.name,
        station=account.station,
        transport=transport,
        peer=peer,
        path=upload.path,
        size=len(data),
        interrupted=interrupted,
    )
    if remove:
        path.unlink(missing_ok=True)
    return upload


def _unchanged(before: os.stat_result, path: Path) -> bool:
    try:
        now = path.stat()
    except FileNotFoundError:
        return False
    return (now.st_ino, now.st_size, now.st_mtime_ns) == (before.st_ino, before.st_size, before.st_mtime_ns)


def recover_leftovers(
    sink: UploadSink,
    accounts: dict[str, Account],
    *,
    transport: str,
    older_than_s: float | None = None,
) -> int:
    """Hand every file left in the homes to the sink (``interrupted=True``), then remove it unless it
    was written to meanwhile; ``older_than_s``: only files whose last write is at least that old.
    Returns how many were taken."""
    count = 0
    for account in accounts.values():
        account.root.mkdir(parents=True, exist_ok=True)
        for folder, _dirs, files in os.walk(account.root):
            for name in sorted(files):
                path = Path(folder, name)
                try:
                    before = path.stat()
                except FileNotFoundError:
                    continue  # taken or replaced by its own upload since the listing
                if older_than_s is not None and before.st_mtime > time.time() - older_than_s:
                    continue  # may still be resumed or renamed
                try:
                    deliver(sink, account, path, transport=transport, peer="leftover", interrupted=True, remove=False)
                    count += 1
                    if _unchanged(before, path):
                        path.unlink(missing_ok=True)
                    else:  # a client wrote to it while it was taken: its own upload (or the next sweep) hands it on
                        log.info("tt10_leftover_changed_kept", account=account.name, station=account.station,
                                 transport=transport, path=str(path))  # fmt: skip
                except Exception as exc:  # noqa: BLE001 - logged; the file stays for the next sweep or start
                    log.error(
                        "tt10_leftover_not_taken",
                        account=account.name,
                        station=account.station,
                        transport=transport,
                        path=str(path),
                        error=repr(exc),
                    )
    return count


class HomeSweeper:
    """While the servers run: every ``interval_s``, the files left in the homes at least ``age_s`` since
    their last write go to the sink as at start (``recover_leftovers(older_than_s=age_s)``)."""

    def __init__(
        self,
        sink: UploadSink,
        accounts: dict[str, Account],
        *,
        transport: str,
        age_s: float,
        interval_s: float | None = None,
    ) -> None:
        if age_s <= 0:
            raise ValueError("age_s must be > 0")
        self.sink, self.accounts, self.transport, self.age_s = sink, accounts, transport, age_s
        self.interval_s = interval_s if interval_s is not None else max(1.0, min(age_s / 4, 300.0))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sweep_once(self) -> int:
        taken = recover_leftovers(self.sink, self.accounts, transport=self.transport, older_than_s=self.age_s)
        if taken:
            log.info("tt10_leftovers_swept", files=taken, transport=self.transport, age_s=self.age_s)
        return taken

    def start(self) -> HomeSweeper:
        self._thread = threading.Thread(target=self._run, name="tt10-home-sweeper", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sweep_once()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
