"""Serial ASCII input: send the profile's poll command, read one reply line, parse it.

The line (up to the profile's ``line_terminator``; lines matching
``ignore_lines`` such as echoes and prompts are skipped) is checked against
its checksum when the profile has one, split into named fields (a regex with
named groups, or a delimiter and a positional field list), and each value's
field becomes a number (``scale``/``offset`` applied). The status comes from
flag fields and error letters (worst wins: 02 over 01 over 00; every cause
kept).

Failures are flagged, never guessed:

* no reply: every value None / "02", "no reply: timeout after 1 s" (not
  retried in the same poll, like Modbus RTU);
* half a line: "broken reply: incomplete line '...' (no terminator in 1 s)";
* a wrong checksum or a line that does not parse: asked again up to
  ``retries`` times, then None / "02" with "broken reply: bad checksum ..." -
  a garbled line is never split into plausible-looking numbers;
* a field that is not a number: that value None / "02" with its cause;
  a text or numeric sentinel: None with the device status kept.

The init command (if any) is sent after the port is opened, and its reply
discarded. Isolation of a dead device as for Modbus RTU.
"""

from __future__ import annotations

import re
import time

import structlog

from broker_bridge.envelope import Reading
from edge_agent.codec import UnusableLineError, check_line_checksum, decode_text_value, split_fields
from edge_agent.sources.polling import DeviceSource, Isolation, PollReport, RequestReport, clip, join
from edge_agent.sources.serial_line import NoReplyError, SerialLine, join_line
from station_profiles.profile_model import SerialAsciiDevice, SerialAsciiProfile, combine_conditions

log = structlog.get_logger("edge_agent.sources.serial_ascii")


class SerialAsciiSource(DeviceSource):
    transport = "serial_ascii"

    def __init__(
        self, station_id: str, device: SerialAsciiDevice, profile: SerialAsciiProfile, line: SerialLine | None = None
    ) -> None:
        super().__init__(station_id, device, profile)
        self.line = join_line(device, station_id, line)
        enc = profile.encoding
        self._poll = profile.poll_command.encode(enc)
        self._init = profile.init_command.encode(enc) if profile.init_command else None
        self._term = profile.line_terminator.encode(enc)
        self._ignore = re.compile(profile.ignore_lines) if profile.ignore_lines else None
        self._initialised_for = -1  # the line's open count the init command was sent for
        self.isolation = Isolation(device.isolate_after, device.isolated_poll_every)
        self.last_poll = PollReport()
        self.polls = 0
        self._failing_cause: str | None = None
        self.log = log.bind(station=station_id, device=device.id, port=device.port)

    @property
    def device_id(self) -> str:
        return self.device.id

    @property
    def isolated(self) -> bool:
        return self.isolation.isolated

    async def close(self) -> None:
        self.line.close()

    def _decode(self, data: bytes) -> str:
        return data.decode(self.profile.encoding, errors="replace")

    def _first_line(self, buf: bytes) -> str | None:
        """The first complete line that is not ignored (None: not there yet)."""
        rest = buf
        if rest.startswith(self._poll):
            rest = rest[len(self._poll) :]  # the device echoed the command (without our line terminator)
        while True:
            at = rest.find(self._term)
            if at < 0:
                return None
            text = self._decode(rest[:at]).strip("\r\n")
            rest = rest[at + len(self._term) :]
            if not text.strip() or (self._ignore is not None and self._ignore.search(text)):
                continue
            if text.encode(self.profile.encoding, errors="replace") == self._poll.strip(b"\r\n"):
                continue  # the device echoed the command
            return text

    async def _ensure_initialised(self) -> None:
        if self._init is None or (self.line.is_open and self._initialised_for == self.line.opens):
            return
        # Its reply (a prompt, a menu) is read until init_wait_s and thrown away.
        try:
            await self.line.exchange(self._init, lambda _: False, self.profile.init_wait_s)
        except NoReplyError as exc:
            if exc.kind != "timeout":
                raise
        self._initialised_for = self.line.opens

    def _readings(self, ts: int, cause: str) -> list[Reading]:
        cause = clip(cause)
        return [Reading(ts, self.device.id, v.parameter, None, v.unit, "02", cause) for v in self.profile.values]

    async def poll(self) -> list[Reading]:
        self.polls += 1
        ts = time.time_ns()
        report = PollReport()
        self.last_poll = report
        if not self.isolation.should_try():
            report.skipped = self.isolation.skipped_cause()
            return self._readings(ts, report.skipped)
        rr = RequestReport("line", 0, 1)
        report.requests.append(rr)
        fields: dict[str, str] | None = None
        failure = ""
        try:
            await self._ensure_initialised()
            for attempt in range(1 + self.device.retries):
                rr.attempts = attempt + 1
                try:
                    ex = await self.line.exchange(self._poll, lambda b: self._first_line(b) is not None, self.timeout_s)
                except NoReplyError as exc:
                    rr.latency_s = exc.latency_s
                    if exc.kind == "timeout" and exc.partial.strip():
                        failure = (
                            f"broken reply: incomplete line {self._decode(exc.partial).strip()!r} "
                            f"(no terminator in {self.timeout_s:g} s)"
                        )
                        continue
                    raise
                ts, rr.latency_s = ex.ts_ns, ex.latency_s
                text = self._first_line(ex.reply)
                assert text is not None
                report.line = text
                try:
                    fields = self._parse(text)
                    break
                except UnusableLineError as exc:
                    failure = f"broken reply: {exc}"
                    if attempt < self.device.retries:
                        self.log.debug("serial.retry", cause=failure, attempt=attempt + 1)
        except NoReplyError as exc:
            failure = exc.cause
        if fields is None:
            rr.cause = failure
            self._after(failure)
            return self._readings(ts, failure)
        self._after(None)
        report.raw = {name: [text] for name, text in fields.items()}
        status, status_cause = self.profile.status.evaluate(fields) if self.profile.status else ("00", "")
        out: list[Reading] = []
        for v in self.profile.values:
            d = decode_text_value(fields[v.field], scale=v.scale, offset=v.offset, sentinels=v.sentinels)
            if d.value is None:
                code = combine_conditions([(status, ""), (d.status or "00", "")])[0]
                out.append(
                    Reading(ts, self.device.id, v.parameter, None, v.unit, code, clip(join(status_cause, d.cause)))
                )
            else:
                out.append(Reading(ts, self.device.id, v.parameter, d.value, v.unit, status, clip(status_cause)))
        return out

    def _parse(self, text: str) -> dict[str, str]:
        p = self.profile
        covered = text
        if p.checksum is not None:
            covered = check_line_checksum(
                text, p.checksum.algorithm, p.checksum.separator, p.checksum.skip_start, p.encoding
            )
        return split_fields(
            covered,
            regex=p.parse.regex,
            delimiter=p.parse.delimiter,
            fields=p.parse.fields,
            allow_extra=p.parse.allow_extra_fields,
        )

    def _after(self, failure: str | None) -> None:
        change = self.isolation.record(failure)
        if change == "isolated":
            self.log.warning(
                "serial.device_isolated",
                cause=failure,
                failed_polls=self.isolation.failed_polls,
                poll_every=self.isolation.every,
            )
        elif change == "recovered":
            self.log.info("serial.device_recovered")
        if failure is None:
            if self._failing_cause is not None:
                self.log.info("serial.recovered")
            self._failing_cause = None
        else:
            if failure != self._failing_cause:
                self.log.warning("serial.read_failed", cause=failure)
            self._failing_cause = failure
