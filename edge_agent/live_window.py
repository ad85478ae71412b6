"""Live batches: how many polls one signed live message carries (the station file's ``live_batch_s``).

0, the default: whatever the live lane holds is sealed at once, one poll a message. Otherwise the
first live poll opens a window of ``live_batch_s``; when it ends, the polls begun within it are sealed
into one batch, and the polls begun later open the next window. A window that would outgrow one batch
(the publisher's readings per batch, the envelope's 1 MiB) is sealed at once, early. Meanwhile the
readings wait in the outbox's staged table, committed like any other: a kill inside the window loses
none of them, and the restarted agent seals them once it is connected again.

Fewer, larger messages cost the collector less CPU per reading and delay live data by up to the
window (figures: edge_agent/README.md, Live batches)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import structlog

from broker_bridge.envelope import BATCH_FRAMING_BYTES, MAX_ENVELOPE_BYTES
from broker_bridge.keys import SigningKey
from edge_agent.outbox import LIVE, Outbox, SealedBatch

log = structlog.get_logger("edge_agent.live_window")

# Polls are scheduled a whole number of intervals apart (the agent reports how late each began); a poll
# scheduled this little before a window's end is the next window's first, whatever rounding the wall and
# monotonic clocks' conversion adds (a 5 s window of 1 s polls takes 5, never 6).
END_SLACK_NS = 50_000_000
# A window begun this far ahead of the clock means the clock was stepped back (a smaller step only
# lengthens one window by as much).
CLOCK_STEP_NS = 10**9


class LiveWindow:
    """Seals the live lane of ``outbox`` window by window; ``seal_next`` is the publisher's live-lane seal.

    The agent says when each poll starts and ends (``poll_started``, ``poll_done``): a window is cut at the
    scheduled moment of the first poll after its end, which every reading of the polls before it precedes,
    so a window never splits a poll (devices polled concurrently stage their readings device by device,
    not in time order, so a cut by the readings' own times could).
    """

    def __init__(
        self,
        outbox: Outbox,
        window_s: float,
        max_readings: int,
        *,
        wall: Callable[[], int] = time.time_ns,
        monotonic_ns: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        self.outbox = outbox
        self.window_ns = round(window_s * 1e9)
        self.max_readings = max_readings
        self.max_bytes = MAX_ENVELOPE_BYTES - BATCH_FRAMING_BYTES
        self._wall, self._monotonic_ns = wall, monotonic_ns
        self._starts: list[int] = []  # when each live poll staged and not yet sealed began (wall ns), oldest first
        self._polling_since: int | None = None  # the poll under way began then
        # When (monotonic ns) the live lane next needs a look: the publisher pumps every 50 ms, a look is a query.
        self._look_at: float = -math.inf
        self._flushing = False
        self.early_seals = 0  # windows sealed before their end because another reading would not fit

    def poll_started(self, late_ns: int = 0) -> None:
        """A poll begins, ``late_ns`` after its scheduled moment. It counts from that moment, which every
        reading it takes follows and every reading of the poll before it precedes (a poll begins after
        the one before it ended, on time or at once when that one overran): windows of a fixed-rate
        schedule then hold the same number of polls whatever the timers' jitter and the machine's load."""
        self._polling_since = self._wall() - max(0, late_ns)

    def poll_done(self, live: bool) -> None:
        """The poll's readings are committed (``live``: to the live lane; else to the backlog, or refused)."""
        if live and self._polling_since is not None:
            self._starts.append(self._polling_since)
        self._polling_since = None
        self._look_at = -math.inf  # they may have filled the window, or be the poll its end waited for

    def flush(self) -> None:
        """Seal whatever is staged live without waiting for its window (the agent is stopping)."""
        self._flushing = True
        self._look_at = -math.inf

    def seal_next(self, key: SigningKey, historical_after_s: float) -> SealedBatch | None:
        """The next live batch if one is due, else None."""
        if self.window_ns == 0 or self._flushing:
            return self.outbox.seal_next(key, self.max_readings, historical_after_s, lane=LIVE)
        if self._monotonic_ns() < self._look_at:
            return None
        window = self.outbox.live_window(self.max_readings)
        if window is None:
            self._starts.clear()  # sealed, or turned historical while the uplink was down
            self._look_at = math.inf  # nothing to wait for until poll_done() says so
            return None
        now = self._wall()
        # Committed, the poll not yet done: the readings are the poll's under way.
        starts = self._starts or ([self._polling_since] if self._polling_since is not None else [])
        before: int | None = None
        if window.readings >= self.max_readings or window.wire_bytes >= self.max_bytes:
            # Full: the batch limit cuts it; the rest stays in the window, which keeps its end.
            self.early_seals += 1
            log.info(
                "live_window_sealed_early", station=self.outbox.station_id, readings=window.readings,
                wire_bytes=window.wire_bytes,
            )  # fmt: skip
        elif not starts:
            pass  # staged before this agent's first poll (a restart): their window is gone, send them now
        elif now < starts[0] - CLOCK_STEP_NS:
            # The window began "in the future": the clock was stepped back, and waiting for the window's end
            # could hold live data for as long as the step. Seal it now; the next window is on the new clock.
            log.warning(
                "live_window_clock_stepped_back", station=self.outbox.station_id,
                ahead_s=round((starts[0] - now) / 1e9, 3),
            )  # fmt: skip
            self._starts.clear()
        else:
            closes = starts[0] + self.window_ns - END_SLACK_NS
            if now < closes:
                self._look_at = self._monotonic_ns() + (closes - now)
                return None
            if self._polling_since is not None and self._polling_since < closes:
                self._look_at = math.inf  # the poll under way began inside the window: poll_done() ends it
                return None
            later = [s for s in [*self._starts, self._polling_since] if s is not None and s >= closes]
            before = later[0] if later else None
            self._starts = [s for s in self._starts if s >= closes]
        self._look_at = -math.inf  # what is left, if anything, opens the next window: look again
        return self.outbox.seal_next(key, self.max_readings, historical_after_s, lane=LIVE, before_ns=before)
