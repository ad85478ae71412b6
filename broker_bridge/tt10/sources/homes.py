"""What the FTP and SFTP servers share: handing a file written into an account's home to the
sink, and the files a previous run left in the homes.

A finished upload is removed from the home once the sink took it (the sink's archive is the
copy of record, and the quota counts what the home holds). A file the transport knows to be
interrupted stays, so the client can resume it (``REST``/``APPE``), until it is sent again or
the server restarts. At start, every file still in a home (interrupted, refused by the sink, or
written just before a crash) is handed to the sink with ``interrupted=True`` (nobody can tell
whether it was whole) and removed once taken.
"""

from __future__ import annotations

import os
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


def recover_leftovers(sink: UploadSink, accounts: dict[str, Account], *, transport: str) -> int:
    """Hand every file left in the homes to the sink (``interrupted=True``); returns how many."""
    count = 0
    for account in accounts.values():
        account.root.mkdir(parents=True, exist_ok=True)
        for folder, _dirs, files in os.walk(account.root):
            for name in sorted(files):
                path = Path(folder, name)
                try:
                    deliver(sink, account, path, transport=transport, peer="leftover", interrupted=True, remove=True)
                    count += 1
                except Exception as exc:  # noqa: BLE001 - logged; the file stays for the next start
                    log.error(
                        "tt10_leftover_not_taken",
                        account=account.name,
                        station=account.station,
                        transport=transport,
                        path=str(path),
                        error=repr(exc),
                    )
    return count
