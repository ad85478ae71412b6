"""An MQTT client that reads its socket in large chunks, not three small reads per packet.

paho reads a packet with one ``recv(1)`` for its type, one per byte of its remaining length and one
for its body: three or four system calls for a 200-byte PUBLISH, each of which gives up the
interpreter lock, and the network thread then waits for it behind whichever thread took it (the
collector's flush and warehouse threads). The collector's network thread admits every message, so
these waits bounded its rate. Here the socket is read 256 KiB at a time and paho's small reads are
served from that buffer; ``pending()`` tells paho's loop that buffered bytes are ready, so it reads on
without a ``select()`` (the same method paho already asks an SSL socket for its decrypted bytes).

paho's socket is made in ``Client._create_socket`` (paho-mqtt 2.x, pinned <3 in pyproject): the one
place wrapped here. Everything but ``recv`` and ``pending`` goes to the real socket.

Over TLS it changes nothing: an SSL socket's ``recv`` returns one TLS record, and Mosquitto writes a
record per packet (reading many records per system call would need ``ssl.MemoryBIO`` under paho's
handshake). The collector beside its broker connects over loopback, where it counts.
"""

from __future__ import annotations

import socket
from typing import Any

import paho.mqtt.client as mqtt

READ_AHEAD_BYTES = 256 * 1024


class ReadAheadSocket:
    """A non-blocking socket (plain or TLS) whose reads are served from one large ``recv``."""

    __slots__ = ("_sock", "_buffer", "_at")

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = b""
        self._at = 0

    def recv(self, bufsize: int) -> bytes:
        if self._at >= len(self._buffer):
            # BlockingIOError (nothing to read) and ssl.SSLWant*Error reach paho as from the socket itself;
            # b"" (the broker closed the connection) too.
            data = self._sock.recv(READ_AHEAD_BYTES)
            if len(data) <= bufsize:
                return data
            self._buffer, self._at = data, 0
        start = self._at
        self._at = min(start + bufsize, len(self._buffer))
        chunk = self._buffer[start : self._at]
        if self._at >= len(self._buffer):
            self._buffer, self._at = b"", 0
        return chunk

    def buffered(self) -> int:
        return len(self._buffer) - self._at

    def pending(self) -> int:
        """Bytes readable without a system call: ours, and a TLS socket's decrypted ones."""
        inner = self._sock.pending() if hasattr(self._sock, "pending") else 0
        return self.buffered() + inner

    def fileno(self) -> int:  # select() asks for it by name
        return self._sock.fileno()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class ReadAheadClient(mqtt.Client):
    """paho's client over a ``ReadAheadSocket``; a read goes on while whole buffered packets wait
    (paho reads one packet per read event unless it has messages in flight: a ``select()`` each)."""

    def _create_socket(self):  # type: ignore[override]
        sock = super()._create_socket()
        return ReadAheadSocket(sock) if isinstance(sock, socket.socket) else sock
