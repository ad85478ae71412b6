"""Requests to a station on ``quantrac/v1/<station>/cmd``: JSON, QoS 1, not retained.

One command exists: re-send a range of batches (the collector asks when it
sees a jump in a station's sequence numbers). The agent answers on its status
topic with a ``broker_bridge.station_messages.ResendReport``. A command is an
object with exactly one key naming it; the next command gets its own class
and a line in ``COMMANDS``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from broker_bridge.json_message import MessageError, as_int, as_object, encode_json, load_json_object, require

MAX_COMMAND_BYTES = 4096
MAX_RESEND_BATCHES = (
    10_000  # per request: the agent answers at most this many, so a bad request cannot flood the uplink
)


@dataclass(frozen=True, slots=True)
class ResendRequest:
    """Re-publish batches ``from_seq``..``to_seq`` (inclusive) byte for byte, as far as the outbox keeps them."""

    from_seq: int  # 1..2^63-1
    to_seq: int  # from_seq..2^63-1

    NAME = "resend"

    def encode(self) -> bytes:
        return encode_json({self.NAME: {"from_seq": self.from_seq, "to_seq": self.to_seq}})

    @classmethod
    def parse(cls, payload: bytes) -> ResendRequest:
        command = parse_command(payload)
        if not isinstance(command, cls):
            raise MessageError("schema", "", f"expected a {cls.NAME} command")
        return command

    @classmethod
    def _from_json(cls, value: Any) -> ResendRequest:
        request = as_object(value, cls.NAME)
        first = as_int(require(request, "from_seq", "resend.from_seq"), "resend.from_seq", 1)
        last = as_int(require(request, "to_seq", "resend.to_seq"), "resend.to_seq", 1)
        if first > last:
            raise MessageError("schema", "resend", f"range {first}..{last} is empty")
        return cls(first, last)

    def capped(self) -> ResendRequest:
        """The part of the range one request is answered for."""
        return ResendRequest(self.from_seq, min(self.to_seq, self.from_seq + MAX_RESEND_BATCHES - 1))


Command = ResendRequest  # the one kind so far; the next joins as `ResendRequest | Other`
COMMANDS: dict[str, Callable[[Any], Command]] = {ResendRequest.NAME: ResendRequest._from_json}


def parse_command(payload: bytes) -> Command:
    doc = load_json_object(payload, "command", MAX_COMMAND_BYTES)
    known = [name for name in doc if name in COMMANDS]
    if len(known) != 1:
        raise MessageError(
            "schema", "", f"a command names exactly one of {sorted(COMMANDS)}, got keys {sorted(doc)[:10]}"
        )
    return COMMANDS[known[0]](doc[known[0]])
