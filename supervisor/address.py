"""``host:port`` as people type it on a command line, for any server (broker, warehouse, ...)."""

from __future__ import annotations


def split_host_port(text: str, what: str, example: str) -> tuple[str, int]:
    """(host, port) of ``text``; the last colon separates them, so an IPv6 host keeps its own colons."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"{what} {text!r} must look like host:port, e.g. {example}")
    return host, int(port)
