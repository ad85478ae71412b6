"""The attack table of docs/security.md, run with ONE station's credentials against a real deployment.

``bench/attack.py staging`` (see its --help and docs/security.md "Running the attack table against
staging"). Every attack is a function that tries one thing and returns a ``Result``: what was tried,
what the generated configuration (``quantrac broker config``) and the collector must answer, what was
observed, and PASS, FAIL or UNOBSERVED (what one station's access cannot see, said so; never a FAIL).
Collector-side attacks are judged from QuestDB's ``rejects`` by each payload's SHA-256 when
``--questdb-pg`` is given.

Only one connection as the station is open at a time: the generated config names every session after
its user (``use_username_as_clientid``), so a second connection as the same station replaces the
first. The station's own agent must not run meanwhile (use a station kept for this test).

Every payload carries the run's marker ``quantrac-attack-<run id>`` (in the device name, the cause,
a JSON field or the garbage itself) and its SHA-256 is in the report, so the rows it leaves in
``rejects`` (and the payload store) can be found afterwards.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import secrets
import ssl
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import msgpack
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker_bridge.broker_config import MAX_PACKET_SIZE, create_pki
from broker_bridge.envelope import MAX_ENVELOPE_BYTES, BatchBody, Envelope, Reading, seal
from broker_bridge.keys import SigningKey, key_id
from broker_bridge.probe import NOT_AUTHORIZED, PACKET_TOO_LARGE, SESSION_TAKEN_OVER, Probe, RawClient, drain
from broker_bridge.session import BrokerAddress
from broker_bridge.station_messages import Will
from broker_bridge.topics import data_subscription, data_topic, status_topic
from store.queries import batches_received_since, recent_rejects

PASS, FAIL, UNOBSERVED = "PASS", "FAIL", "UNOBSERVED"
ACCEPTED = (0x00, 0x10)  # PUBACK Success, No matching subscribers (both success codes)
DEFAULT_COLLECTOR_CLIENT_ID = "quantrac-collector-1"  # `quantrac collector run --client-id` default
KINDS = ("random", "truncated", "bit_flip", "unknown_key", "wrong_shape", "contract", "huge")


@dataclass
class Result:
    attack: str
    tried: str
    expected: str
    observed: str = ""
    verdict: str = UNOBSERVED
    sha256: list[str] = field(default_factory=list)


@dataclass
class Sent:
    """A payload the broker let through: the collector must store it as a reject with this reason."""

    result: Result
    payload: bytes
    reason: str
    detail: str = ""

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.payload).hexdigest()


class Payloads:
    """Unique garbage of every kind, cheap enough to make 100,000 in seconds (each marked, each unique)."""

    def __init__(self, station: str, key: SigningKey, rng: random.Random, marker: str = "") -> None:
        self.station, self.key, self.rng = station, key, rng
        self.marker = marker.encode()
        self.device = marker or "d"
        self.stranger = Ed25519PrivateKey.generate()

    def body(self, n: int, status: str = "00") -> BatchBody:
        now = time.time_ns()
        return BatchBody(
            self.station, n + 1, now, (Reading(now - n, self.device, "SO2", float(n), "ug/m3", status, ""),)
        )

    def make(self, n: int) -> tuple[str, bytes]:
        kind = "huge" if n % 1000 == 999 else KINDS[n % (len(KINDS) - 1)]
        tag = self.marker + n.to_bytes(8, "big")
        if kind == "random":
            return kind, tag + self.rng.randbytes(self.rng.randrange(1, 400))
        if kind == "huge":
            return kind, tag + os.urandom(900 * 1024)
        if kind == "wrong_shape":
            return kind, msgpack.packb({"v": 1, "n": n, "m": self.device, "body": [n, "x"] * self.rng.randrange(1, 5)})
        if kind == "unknown_key":
            return kind, seal(self.body(n), key_id(self.stranger.public_key()), self.stranger)
        if kind == "contract":
            return kind, seal(self.body(n, status="07"), self.key.key_id, self.key.private_key)
        good = bytearray(seal(self.body(n), self.key.key_id, self.key.private_key))
        if kind == "truncated":
            return kind, bytes(good[: self.rng.randrange(len(good) - 60, len(good) - 1)])  # cut in the signature
        good[self.rng.randrange(len(good) - 70, len(good))] ^= 1 << self.rng.randrange(8)  # in the signature
        return kind, bytes(good)


def publish_all(address: BrokerAddress, items: list[bytes], topic: str, client_id: str | None = None) -> float:
    """Publish every payload at QoS 1 as fast as the broker takes them; every PUBACK must be a success."""
    probe = Probe(address, client_id=client_id)
    probe.client.max_inflight_messages_set(1000)
    probe.client.max_queued_messages_set(0)
    rc = probe.connect(timeout=15)
    if rc.is_failure:
        raise RuntimeError(f"{address.username} could not connect: {rc}")
    t0 = time.monotonic()
    try:
        for start in range(0, len(items), 5000):  # in steps, so paho's own queue stays small
            infos = [probe.client.publish(topic, payload, qos=1) for payload in items[start : start + 5000]]
            for info in infos:
                info.wait_for_publish(timeout=120)
                if not info.is_published():
                    raise RuntimeError(f"the broker did not acknowledge publish {info.mid}: {info.rc}")
    finally:
        probe.close()
    return time.monotonic() - t0


def code(value: int | None) -> str:
    return "none" if value is None else f"0x{value:02X}"


class StagingRun:
    def __init__(
        self,
        address: BrokerAddress,
        key: SigningKey,
        *,
        other_station: str | None,
        pg_conninfo: str | None,
        collector_client_id: str = DEFAULT_COLLECTOR_CLIENT_ID,
        flood: int = 200,
        listen_s: float = 5.0,
        wait_s: float = 60.0,
        run_id: str | None = None,
    ) -> None:
        self.address, self.key = address, key
        self.station = address.username
        self.other = other_station or "QUANTRAC_ATTACK_OTHER"
        self.other_given = other_station is not None
        self.pg = pg_conninfo
        self.collector_client_id = collector_client_id
        self.flood, self.listen_s, self.wait_s = flood, listen_s, wait_s
        self.run_id = run_id or datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ-") + secrets.token_hex(3)
        self.marker = f"quantrac-attack-{self.run_id}"
        self.results: list[Result] = []
        self.sent: list[Sent] = []
        self.never: list[tuple[Result, bytes]] = []  # refused by the broker: must never reach a collector
        self.started = datetime.now(UTC)
        self.finished: datetime | None = None
        self.stranger = Ed25519PrivateKey.generate()
        self.reading_ts = time.time_ns() - 60 * 10**9  # one time for every reading: a repeated key repeats it

    # -- helpers ------------------------------------------------------------------------------------

    def result(self, attack: str, tried: str, expected: str) -> Result:
        r = Result(attack, tried, expected)
        self.results.append(r)
        return r

    def garbage(self, what: str) -> bytes:
        return f"{self.marker} {what} ".encode() + secrets.token_bytes(16)

    def signed(self, body: bytes, private_key: Ed25519PrivateKey | None = None, kid: str | None = None) -> bytes:
        private_key = private_key or self.key.private_key
        return Envelope(kid or self.key.key_id, body, private_key.sign(body)).encode()

    def raw_body(self, seq: int, readings: list[dict]) -> bytes:
        """A batch body written by hand from docs/wire-format.md, as a third-party script would."""
        items = [list(r.values()) for r in readings]
        doc = {"station": self.station, "seq": seq, "sent_ns": time.time_ns(), "hist": False, "readings": items}
        return msgpack.packb(doc, use_bin_type=True)

    def reading(self, **fields) -> dict:
        r = {"ts": self.reading_ts, "device": self.marker, "parameter": "SO2", "value": 1.0,
             "unit": "ug/m3", "status": "00", "cause": self.marker}  # fmt: skip
        r.update(fields)
        return r

    def probe(self, **kwargs) -> Probe:
        p = Probe(self.address, **kwargs)
        rc = p.connect(timeout=15)
        if rc.is_failure:
            p.close()
            raise RuntimeError(f"{self.station} cannot connect with its own password: CONNACK {rc}")
        return p

    def kicked(self, probe: Probe, result: Result) -> None:
        for reason in drain(probe.disconnects):
            result.observed += f"; disconnected by the broker ({reason})"
            if getattr(reason, "value", None) == SESSION_TAKEN_OVER:
                result.observed += ": another connection as this station (is its agent running?)"

    # -- the attacks ----------------------------------------------------------------------------------

    def connect_refusals(self) -> None:
        cases = [
            ("wrong_password", f"CONNECT as {self.station} with a wrong password", self.station,
             "wrong-" + secrets.token_hex(16)),
            ("borrowed_password", f"CONNECT as {self.other} with {self.station}'s password", self.other,
             self.address.password),
            ("anonymous", "CONNECT without user name and password", "", ""),
        ]  # fmt: skip
        for name, tried, user, password in cases:
            r = self.result(name, tried, "CONNACK 0x87 Not authorized")
            client = RawClient(self.address)
            try:
                if user:
                    rc = client.connect(username=user, password=password)
                else:
                    bare = BrokerAddress(self.address.host, self.address.port, None, None, self.address.tls)
                    client.address = bare
                    rc = client.connect()
            finally:
                client.disconnect()
            r.observed = f"CONNACK {code(rc)}"
            r.verdict = PASS if rc >= 0x80 else FAIL
        if self.address.tls is not None:
            r = self.result("tls_other_ca", "TLS handshake trusting another CA than the broker's", "handshake refused")
            with tempfile.TemporaryDirectory(prefix="quantrac-attack-ca-") as tmp:
                stranger_ca = create_pki(Path(tmp)).ca_cert
                other = BrokerAddress(self.address.host, self.address.port, self.station, self.address.password)
                try:
                    RawClient(other.with_tls(stranger_ca)).disconnect()
                    r.observed, r.verdict = "connected: the broker's certificate was accepted", FAIL
                except ssl.SSLCertVerificationError as exc:
                    r.observed, r.verdict = f"refused: {exc.verify_message}", PASS

    def on_one_connection(self) -> None:
        """The attacks one connection as the station can try in turn."""
        probe = self.probe()
        try:
            self.shared_subscription(probe)
            self.read_others(probe)
            self.publish_as_other(probe)
            self.retained_data(probe)
            self.collector_side(probe)
        finally:
            probe.close()

    def shared_subscription(self, probe: Probe) -> None:
        for group in ("collectors", "quantrac-attack"):
            topic_filter = data_subscription(group)
            r = self.result(f"share_{group}", f"SUBSCRIBE {topic_filter}", "SUBACK 0x87 (quantrac_acl plugin)")
            rcs = probe.subscribe(topic_filter, timeout=10)
            r.observed = "SUBACK " + ", ".join(code(rc.value) for rc in rcs)
            r.verdict = PASS if all(rc.value == NOT_AUTHORIZED for rc in rcs) else FAIL
            if r.verdict == FAIL:
                probe.unsubscribe(topic_filter)  # granted: it would take its share of the collectors' batches
                r.observed += " (granted: unsubscribed at once)"
            self.kicked(probe, r)

    def read_others(self, probe: Probe) -> None:
        filters = ["#", "quantrac/v1/+/data", "quantrac/v1/+/status", data_topic(self.other)]
        r = self.result(
            "read_other_stations",
            f"SUBSCRIBE {', '.join(filters)} and listen {self.listen_s:g} s",
            f"no message outside quantrac/v1/{self.station}/",
        )
        since = datetime.now(UTC)
        for topic_filter in filters:
            probe.subscribe(topic_filter, timeout=10)
        time.sleep(self.listen_s)
        for topic_filter in filters:
            probe.unsubscribe(topic_filter)
        messages = drain(probe.messages)
        foreign = sorted({m.topic for m in messages if not m.topic.startswith(f"quantrac/v1/{self.station}/")})
        r.observed = f"{len(messages)} messages, {len(foreign)} foreign topics" + (
            f": {foreign[:5]}" if foreign else ""
        )
        if foreign:
            r.verdict = FAIL
        elif self.pg is None:
            r.verdict = PASS
            r.observed += " (other stations' traffic meanwhile unknown: no --questdb-pg)"
        else:
            others = batches_received_since(self.pg, since, except_station=self.station)
            r.observed += f" while the warehouse committed {others} batches of other stations"
            r.verdict = PASS if others else UNOBSERVED  # nothing flowed: nothing could have leaked
        self.kicked(probe, r)

    def publish_as_other(self, probe: Probe) -> None:
        who = self.other if self.other_given else f"{self.other} (no --other-station: a made-up id)"
        targets = [
            data_topic(self.other),
            status_topic(self.other),
            f"quantrac/v1/{self.station}/receipt",
            "quantrac/v1/data",
        ]
        for topic in targets:
            r = self.result(
                f"publish {topic}", f"PUBLISH QoS 1 to {topic} as {self.station}", "PUBACK 0x87, delivered to nobody"
            )
            if topic == data_topic(self.other):
                r.tried += f" (other station {who})"
            payload = self.garbage(f"as-other {topic}")
            rc = probe.publish(topic, payload, timeout=10).value
            r.observed = f"PUBACK {code(rc)}"
            r.verdict = PASS if rc == NOT_AUTHORIZED else FAIL
            r.sha256.append(hashlib.sha256(payload).hexdigest())
            self.never.append((r, payload))
            self.kicked(probe, r)

    def retained_data(self, probe: Probe) -> None:
        topic = data_topic(self.station)
        r = self.result("retained_data", f"PUBLISH QoS 1 retained on {topic}", "PUBACK 0x87 (quantrac_acl plugin)")
        payload = self.garbage("retained")
        rc = probe.publish(topic, payload, timeout=10, retain=True).value
        r.observed = f"PUBACK {code(rc)}"
        r.verdict = PASS if rc == NOT_AUTHORIZED else FAIL
        r.sha256.append(hashlib.sha256(payload).hexdigest())
        if r.verdict == FAIL:
            probe.publish(topic, b"", timeout=10, retain=True)  # clear what the broker kept
            r.observed += " (kept by the broker: cleared with an empty retained message)"
        self.kicked(probe, r)

    def collector_side(self, probe: Probe) -> None:
        """Payloads the broker must let through (only the collector can tell): each must become a reject."""
        stranger_kid = key_id(self.stranger.public_key())

        def status_json(name: str) -> bytes:  # each case's bytes differ (its name in the note): one reject each
            doc = {"state": "offline", "station": self.station, "session": 2**63 - 2, "note": f"{self.marker} {name}"}
            return json.dumps(doc).encode()

        thrice = [self.reading(value=v) for v in (1.0, 2.0, 3.0)]
        cases = [
            ("status_unsigned", status_topic(self.station), status_json("status_unsigned"), "undecodable", "",
             "an unsigned status (a will with session 2^63-2, as before status was signed)"),
            ("status_stranger_key", status_topic(self.station),
             self.signed(status_json("status_stranger_key"), self.stranger, stranger_kid),
             "unknown_key", "", "a status signed by a key nobody registered"),
            ("status_forged_signature", status_topic(self.station),
             self.signed(status_json("status_forged_signature"), self.stranger),
             "bad_signature", "", f"a status naming {self.station}'s key id, signed by another key"),
            ("data_garbage", data_topic(self.station), self.garbage("garbage") + os.urandom(256), "undecodable", "",
             "random bytes on its data topic"),
            ("data_nul_in_device", data_topic(self.station),
             self.signed(self.raw_body(1, [self.reading(device=self.marker + "\x00x")])),
             "schema", "device holds the control character U+0000", "a batch signed with its key, NUL in a device"),
            ("data_nul_in_unit", data_topic(self.station),
             self.signed(self.raw_body(1, [self.reading(unit="ug\x00")])),
             "schema", "unit holds the control character U+0000", "a batch signed with its key, NUL in a unit"),
            ("data_repeated_key", data_topic(self.station), self.signed(self.raw_body(1, thrice)),
             "duplicate_reading_key", "repeats reading 0's key",
             "a batch signed with its key, one reading key 3 times"),
        ]  # fmt: skip
        for name, topic, payload, reason, detail, what in cases:
            r = self.result(name, f"PUBLISH {what} to {topic}", f"PUBACK success, then a reject '{reason}'")
            rc = probe.publish(topic, payload, timeout=10).value
            r.observed = f"PUBACK {code(rc)}"
            if rc not in ACCEPTED:
                r.verdict = FAIL  # the broker must not stand between a station and its own topics
            self.sent.append(Sent(r, payload, reason, detail))
            r.sha256.append(hashlib.sha256(payload).hexdigest())
            self.kicked(probe, r)

    def wills(self) -> None:
        """A will is published by the broker when a connection dies without DISCONNECT, as for a dead station."""
        will = json.loads(Will(self.station, 2**63 - 2).encode())

        def body(name: str) -> bytes:
            return json.dumps(will | {"note": f"{self.marker} {name}"}).encode()

        cases = [
            ("will_unsigned", body("will_unsigned"), "undecodable", "an unsigned will (session 2^63-2)"),
            ("will_forged_signature", self.signed(body("will_forged_signature"), self.stranger), "bad_signature",
             f"a will naming {self.station}'s key id, signed by another key"),
        ]  # fmt: skip
        for name, payload, reason, what in cases:
            r = self.result(
                name, f"CONNECT with {what} on {status_topic(self.station)}, then drop the socket",
                f"will published by the broker, then a reject '{reason}'",
            )  # fmt: skip
            client = RawClient(self.address)
            rc = client.connect(will=(status_topic(self.station), payload, False))
            client.drop()
            r.observed = f"CONNACK {code(rc)}, socket dropped"
            if rc != 0:
                r.verdict = FAIL
            self.sent.append(Sent(r, payload, reason))
            r.sha256.append(hashlib.sha256(payload).hexdigest())
            time.sleep(0.5)  # the broker notices the closed socket in its next loop

    def oversized(self) -> None:
        topic = data_topic(self.station)
        payload = self.marker.encode() + b"x" * (MAX_ENVELOPE_BYTES + 1 - len(self.marker))
        r = self.result(
            "payload_over_1MiB", f"PUBLISH {len(payload):,} bytes (MAX_ENVELOPE_BYTES + 1) to {topic}",
            "PUBACK 0x95 Packet too large (message_size_limit), delivered to nobody",
        )  # fmt: skip
        client = RawClient(self.address, timeout=20)
        try:
            client.connect()
            kind, rc = client.publish(topic, payload)
        finally:
            client.disconnect()
        r.observed = f"{kind.upper()} {code(rc)}"
        r.verdict = PASS if (kind, rc) == ("puback", PACKET_TOO_LARGE) else FAIL
        r.sha256.append(hashlib.sha256(payload).hexdigest())
        self.never.append((r, payload))

        announced = 80 * 1024 * 1024
        r = self.result(
            "packet_over_max_packet_size",
            f"PUBLISH header announcing {announced:,} bytes (over max_packet_size {MAX_PACKET_SIZE:,}), 1 KiB sent",
            "DISCONNECT 0x95 from the header alone, connection closed",
        )
        client = RawClient(self.address, timeout=10)
        try:
            client.connect()
            kind, rc = client.send_oversized_header(topic, announced)
        finally:
            client.drop()
        r.observed = f"{kind.upper()} {code(rc)}" + (
            " (no answer: the broker waits for the rest)" if kind == "closed" else ""
        )
        r.verdict = PASS if (kind, rc) == ("disconnect", PACKET_TOO_LARGE) else FAIL

    def session_takeover(self) -> None:
        cid = self.collector_client_id
        r = self.result(
            "collector_session",
            f"CONNECT as {self.station} with client id {cid!r}, clean_start=False, then hold 3 s",
            "a session of its own (session present 0), not disconnected; the collector keeps committing",
        )
        RawClient(self.address).connect()  # clean start: no earlier session of this user is left to find
        since = datetime.now(UTC)
        probe = Probe(self.address, client_id=cid, persistent=True, session_expiry_s=60)
        rc = probe.connect(timeout=15)
        try:
            r.observed = f"CONNACK {code(rc.value)}, session present {int(bool(probe.session_present))}"
            time.sleep(3)
            kicked = drain(probe.disconnects)
            ok = not rc.is_failure and probe.session_present is False and not kicked
            if kicked:
                r.observed += f"; disconnected ({', '.join(str(k) for k in kicked)}): the collector took its id back?"
        finally:
            probe.close()
        if probe.session_present is False:  # ours, named after our user: remove it (clean start, expiry 0)
            RawClient(self.address).connect(client_id=cid)
        else:
            r.observed += "; that session was someone else's (the collector's?): left alone"
        if not ok:
            r.verdict = FAIL
        elif self.pg is None:
            r.verdict = PASS
            r.observed += "; the collector's commits not observed (no --questdb-pg)"
        else:
            deadline = time.monotonic() + max(self.listen_s, 5.0)
            committed = 0
            while time.monotonic() < deadline and not committed:
                committed = batches_received_since(self.pg, since, except_station=self.station)
                time.sleep(0.5)
            r.observed += f"; {committed} batches of other stations committed since"
            r.verdict = PASS if committed else UNOBSERVED  # no traffic, or the collector stopped: cannot tell

    def flood_rejects(self) -> None:
        if self.flood <= 0:
            return
        maker = Payloads(self.station, self.key, random.Random(self.run_id), self.marker)
        made = [maker.make(n) for n in range(self.flood)]
        r = self.result(
            "flood", f"{self.flood:,} unique garbage payloads ({', '.join(sorted({k for k, _ in made}))}) at QoS 1",
            "every PUBACK a success, then exactly one reject each",
        )  # fmt: skip
        took = publish_all(self.address, [p for _, p in made], data_topic(self.station))
        r.observed = f"published in {took:.1f} s"
        self.flood_digests = {hashlib.sha256(p).hexdigest() for _, p in made}
        self.flood_result = r
        r.sha256.extend(sorted(self.flood_digests))

    # -- judging by QuestDB -----------------------------------------------------------------------------

    def judge_rejects(self) -> None:
        flood = getattr(self, "flood_result", None)
        if self.pg is None:
            for s in self.sent:
                if s.result.verdict != FAIL:
                    s.result.observed += "; reject not checked (no --questdb-pg)"
            if flood is not None:
                flood.observed += "; rejects not counted (no --questdb-pg)"  # stays UNOBSERVED, like the others
            return
        wanted = {s.sha256 for s in self.sent} | getattr(self, "flood_digests", set())
        deadline = time.monotonic() + self.wait_s
        while True:
            rows = recent_rejects(self.pg, since=self.started, limit=10_000_000)
            found: dict[str, list] = {}
            for row in rows:
                found.setdefault(row.payload_sha256, []).append(row)
            if wanted <= set(found) or time.monotonic() > deadline:
                break
            time.sleep(1.0)
        for s in self.sent:
            got = found.get(s.sha256, [])
            if not got:
                s.result.observed += f"; no reject within {self.wait_s:g} s"
                s.result.verdict = FAIL
                continue
            row = got[0]
            s.result.observed += f"; reject '{row.reason}' ({row.detail[:70]})" + (
                f" x{len(got)}" if len(got) > 1 else ""
            )
            if s.result.verdict != FAIL:
                s.result.verdict = PASS if row.reason == s.reason and s.detail in row.detail else FAIL
        for r, payload in self.never:
            if hashlib.sha256(payload).hexdigest() in found:
                r.observed += "; but it reached a collector (a reject)"
                r.verdict = FAIL
            elif r.verdict == PASS:
                r.observed += "; no collector received it"
        if flood is not None:
            stored = [found[d] for d in self.flood_digests if d in found]
            reasons = Counter(rows[0].reason for rows in stored)
            extra = sum(len(rows) - 1 for rows in stored)
            flood.observed += f"; {len(stored):,} of {self.flood:,} rejected ({extra} twice); by reason: " + ", ".join(
                f"{k} {v}" for k, v in reasons.most_common()
            )
            flood.verdict = PASS if len(stored) == self.flood and extra == 0 else FAIL

    # -- the whole run --------------------------------------------------------------------------------

    def run(self) -> list[Result]:
        self.connect_refusals()
        self.on_one_connection()
        self.wills()
        self.oversized()
        self.session_takeover()
        self.flood_rejects()
        self.judge_rejects()
        self.finished = datetime.now(UTC)
        return self.results

    def failed(self) -> bool:
        return any(r.verdict == FAIL for r in self.results)

    def cleanup_note(self) -> list[str]:
        until = (self.finished or datetime.now(UTC)).isoformat()
        since = self.started.isoformat()
        return [
            f"run {self.run_id}: every payload carries '{self.marker}' (device, cause, JSON 'note' or the bytes);",
            f"sent as {self.station} between {since} and {until}. What it leaves: rejects rows, nothing else",
            "(no reading, batch, station event, retained message or broker session). Find them:",
            f"  quantrac rejects list --station {self.station} --since {since} --limit 100000 --questdb-pg HOST:PORT",
            f"  quantrac rejects export attack-{self.run_id}.jsonl --station {self.station} --since {since}"
            f" --until {until}",
            f"  SELECT ts, reason, detail, payload_sha256 FROM rejects WHERE claimed_station = '{self.station}'"
            f" AND ts BETWEEN '{since}' AND '{until}';",
            "  each payload's SHA-256 is in the --json report (also the file names in a collector's --reject-store,",
            "  which may be deleted). QuestDB cannot delete rows: keep them (marked) or, on staging only, drop the",
            "  day's partition (ALTER TABLE rejects DROP PARTITION LIST 'YYYY-MM-DD').",
        ]

    def report(self) -> dict:
        return {
            "run_id": self.run_id,
            "marker": self.marker,
            "station": self.station,
            "broker": f"{self.address.host}:{self.address.port}",
            "tls": self.address.tls is not None,
            "started": self.started.isoformat(),
            "finished": (self.finished or datetime.now(UTC)).isoformat(),
            "passed": not self.failed(),
            "results": [asdict(r) for r in self.results],
            "cleanup": self.cleanup_note(),
        }


def format_table(results: list[Result]) -> list[str]:
    """One line per attack, its verdict first."""
    return [
        f"{r.verdict:<10} {r.attack}: tried {r.tried} | expected {r.expected} | observed {r.observed}" for r in results
    ]
