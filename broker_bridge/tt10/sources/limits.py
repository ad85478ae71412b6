"""Per-account quota (bytes held in the home) and rate limit (uploads started per minute),
shared by the FTP and SFTP servers so an account's limits hold across both."""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from broker_bridge.tt10.sources.accounts import Account


def home_usage(root: Path, *, excluding: Path | None = None) -> int:
    """Bytes of the regular files under ``root`` (``excluding`` one file, the one to be replaced)."""
    total = 0
    for folder, _dirs, files in os.walk(root):
        for name in files:
            path = Path(folder, name)
            if excluding is not None and path == excluding:
                continue
            try:
                total += path.lstat().st_size
            except FileNotFoundError:  # removed since the listing
                continue
    return total


class AccountLimits:
    """``admit`` a new upload or say why not, in words a client can show its operator."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._starts: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def rate_refusal(self, account: Account) -> str | None:
        """None and counts the upload when the account may start one more this minute."""
        now = self._clock()
        with self._lock:
            starts = self._starts.setdefault(account.name, deque())
            while starts and starts[0] <= now - 60.0:
                starts.popleft()
            if len(starts) >= account.max_files_per_minute:
                wait = max(1, int(starts[0] + 60.0 - now + 0.999))
                return f"rate limit: at most {account.max_files_per_minute} files per minute; retry in {wait} s"
            starts.append(now)
        return None

    @staticmethod
    def budget(account: Account, target: Path, *, keeps_existing: bool) -> int:
        """Bytes the upload to ``target`` may write before the account is over its quota."""
        others = home_usage(account.root, excluding=target)
        kept = target.stat().st_size if keeps_existing and target.exists() else 0
        return account.quota_bytes - others - kept

    @staticmethod
    def quota_refusal(account: Account, budget: int) -> str | None:
        if budget > 0:
            return None
        used = account.quota_bytes - budget
        return f"quota exceeded: {used} of {account.quota_bytes} bytes held"
