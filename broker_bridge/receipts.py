"""The warehouse's receipt to a station on ``quantrac/v1/<station>/receipt``: JSON, QoS 1, retained.

After a commit the collector tells the station how far its batches are committed: a watermark
(every seq <= ``watermark`` is in the warehouse) and the committed ranges above it. The agent
keeps every batch the broker acknowledged until a receipt covers it, and sends it again when none
did in time: a broker's PUBACK is not a promise that the batch reaches the warehouse.

The receipt is signed with the collector's own Ed25519 key. The signed bytes travel as they were
signed (``body``, a JSON text inside the JSON object), so the agent verifies them, never a
re-encoding: ``{"kid": ..., "body": "<receipt JSON>", "sig": "<base64 signature>"}``.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import nacl.exceptions

from broker_bridge.envelope import SIGNATURE_LEN, VerifyKey
from broker_bridge.json_message import (
    MessageError,
    as_int,
    as_list,
    as_object,
    as_station_id,
    as_str,
    as_time_ns,
    encode_json,
    load_json_object,
    require,
)
from broker_bridge.keys import SigningKey

MAX_RECEIPT_RANGES = 64  # committed ranges above the watermark: the newest ones when there are more
MAX_RECEIPT_BYTES = 8 * 1024


@dataclass(frozen=True, slots=True)
class Receipt:
    station: str
    watermark: int  # every seq <= watermark is committed (0: nothing known to be)
    ranges: tuple[tuple[int, int], ...]  # committed inclusive ranges above the watermark, ascending, disjoint
    ts_ns: int  # when the collector wrote it

    def covers(self, seq: int) -> bool:
        return seq <= self.watermark or any(first <= seq <= last for first, last in self.ranges)

    def signed(self, key: SigningKey) -> SignedReceipt:
        body = encode_json(
            {
                "station": self.station,
                "watermark": self.watermark,
                "ranges": [list(r) for r in self.ranges],
                "ts_ns": self.ts_ns,
            }
        )
        return SignedReceipt(self, key.key_id, body, key.private_key.sign(body))


@dataclass(frozen=True, slots=True)
class SignedReceipt:
    """A receipt as it travels: parsed, but trusted only after ``verified``."""

    receipt: Receipt
    key_id: str
    body: bytes  # the exact bytes signed
    signature: bytes

    def encode(self) -> bytes:
        return encode_json(
            {
                "kid": self.key_id,
                "body": self.body.decode("ascii"),
                "sig": base64.b64encode(self.signature).decode("ascii"),
            }
        )

    @classmethod
    def parse(cls, payload: bytes) -> SignedReceipt:
        doc = load_json_object(payload, "receipt", MAX_RECEIPT_BYTES)
        key_id = as_str(require(doc, "kid", "kid"), "kid", 64)
        body_text = as_str(require(doc, "body", "body"), "body", MAX_RECEIPT_BYTES)
        try:
            signature = base64.b64decode(as_str(require(doc, "sig", "sig"), "sig", 128), validate=True)
        except binascii.Error as exc:
            raise MessageError("schema", "sig", f"must be base64: {exc}") from exc
        if len(signature) != SIGNATURE_LEN:
            raise MessageError("schema", "sig", f"must be {SIGNATURE_LEN} bytes, got {len(signature)}")
        try:
            inner = as_object(json.loads(body_text), "body")
        except ValueError as exc:
            raise MessageError("undecodable", "body", f"is not JSON: {exc}") from exc
        ranges = []
        for i, item in enumerate(as_list(require(inner, "ranges", "body.ranges"), "body.ranges", MAX_RECEIPT_RANGES)):
            pair = as_list(item, f"body.ranges[{i}]", 2)
            if len(pair) != 2:
                raise MessageError("schema", f"body.ranges[{i}]", "must be [first, last]")
            first, last = (as_int(v, f"body.ranges[{i}]", 1) for v in pair)
            if first > last or (ranges and first <= ranges[-1][1] + 1):
                raise MessageError("schema", f"body.ranges[{i}]", "ranges must be ascending, disjoint and non-empty")
            ranges.append((first, last))
        watermark = as_int(require(inner, "watermark", "body.watermark"), "body.watermark")
        if ranges and ranges[0][0] <= watermark + 1:
            raise MessageError("schema", "body.ranges[0]", f"must begin above the watermark {watermark} + 1")
        receipt = Receipt(
            as_station_id(require(inner, "station", "body.station"), "body.station"),
            watermark,
            tuple(ranges),
            as_time_ns(require(inner, "ts_ns", "body.ts_ns"), "body.ts_ns"),
        )
        return cls(receipt, key_id, body_text.encode("utf-8"), signature)

    def verified(self, keys: Mapping[str, VerifyKey]) -> Receipt:
        """The receipt, if one of the collector keys the station trusts signed it; else MessageError."""
        key = keys.get(self.key_id)
        if key is None:
            raise MessageError("unknown_key", "kid", f"no trusted collector key {self.key_id}")
        try:
            key.verify(self.body, self.signature)
        except nacl.exceptions.BadSignatureError as exc:
            raise MessageError("bad_signature", "sig", f"does not verify with collector key {self.key_id}") from exc
        return self.receipt


def receipt_of(station: str, committed: Iterable[tuple[int, int]], ts_ns: int) -> Receipt:
    """A receipt from a station's committed ranges (ascending, disjoint, merged): the watermark is the top of
    the range starting at 1, and the newest MAX_RECEIPT_RANGES ranges above it are listed."""
    ranges = list(committed)
    watermark = 0
    if ranges and ranges[0][0] <= 1:
        watermark = ranges.pop(0)[1]
    return Receipt(station, watermark, tuple(ranges[-MAX_RECEIPT_RANGES:]), ts_ns)
