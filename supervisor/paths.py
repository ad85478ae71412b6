"""Where quantrac keeps what it fetched or built for itself when it is not run from a checkout."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir"]


def cache_dir() -> Path:
    """``$QUANTRAC_CACHE_DIR``, else systemd's ``$CACHE_DIRECTORY`` (``CacheDirectory=quantrac``),
    else ``$XDG_CACHE_HOME/quantrac``, else ``~/.cache/quantrac``.

    A checkout's own ``.cache/`` (scripts/bootstrap.sh) is looked at first by the callers; this is
    where an installed quantrac (pipx, a wheel) puts the QuestDB jar and the Mosquitto plugin.
    """
    for var in ("QUANTRAC_CACHE_DIR", "CACHE_DIRECTORY"):
        value = os.environ.get(var)
        if value:
            return Path(value.split(":")[0]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "quantrac"
