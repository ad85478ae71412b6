"""Exceedance episodes as a pure function of a series of valid means (no I/O).

An episode opens at the first valid mean above the limit (or below its lower bound, pH), counts its
exceeding periods, escalates once (the ``escalate_after``-th exceeding period, or at once when a mean
exceeds ``escalate_factor`` x the limit), and closes at the first valid mean back under
limit x (1 - hysteresis) (above lower x (1 + hysteresis)). Means between the two keep it open;
invalid or missing periods decide nothing (a gap neither opens nor closes an episode). Because an
episode is a function of the series, late data are handled by scanning again from a point where the
state is known: the opening of the episode that spans the first changed period, or that period
itself when none does (outside an episode the state is closed).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from analysis.settings import EpisodeRules, Limit


@dataclass
class Episode:
    opened: int  # END of the first exceeding period (UTC ns)
    periods: int
    peak: float
    last_mean: float
    escalated_at: int | None = None
    closed_at: int | None = None

    @property
    def state(self) -> str:
        if self.closed_at is not None:
            return "closed"
        return "escalated" if self.escalated_at is not None else "open"


def exceeds(limit: Limit, mean: float) -> bool:
    return mean > limit.value or (limit.lower is not None and mean < limit.lower)


def back_under(limit: Limit, mean: float, hysteresis: float) -> bool:
    upper_ok = mean < limit.value * (1 - hysteresis)
    lower_ok = limit.lower is None or mean > limit.lower * (1 + hysteresis)
    return upper_ok and lower_ok


def _severity(limit: Limit, mean: float) -> float:
    """How far past the limit, as a factor (for escalation and the peak of a lower-bound breach)."""
    if mean > limit.value:
        return mean / limit.value if limit.value else float("inf")
    if limit.lower is not None and mean < limit.lower:
        return limit.lower / mean if mean > 0 else float("inf")
    return 0.0


def scan(means: Iterable[tuple[int, float]], limit: Limit, rules: EpisodeRules) -> list[Episode]:
    """The episodes of ``means`` ((period end, valid mean), oldest first), starting from a closed state."""
    episodes: list[Episode] = []
    current: Episode | None = None
    for end, mean in means:
        if not limit.applies(end):
            continue
        if current is None:
            if exceeds(limit, mean):
                current = Episode(end, 1, mean, mean)
                episodes.append(current)
                _maybe_escalate(current, end, limit, mean, rules)
            continue
        current.last_mean = mean
        if exceeds(limit, mean):
            current.periods += 1
            if _severity(limit, mean) > _severity(limit, current.peak):
                current.peak = mean
            _maybe_escalate(current, end, limit, mean, rules)
        elif back_under(limit, mean, rules.hysteresis):
            current.closed_at = end
            current = None
    return episodes


def _maybe_escalate(episode: Episode, end: int, limit: Limit, mean: float, rules: EpisodeRules) -> None:
    if episode.escalated_at is not None:
        return
    if episode.periods >= rules.escalate_after or (
        rules.escalate_factor is not None and _severity(limit, mean) > rules.escalate_factor
    ):
        episode.escalated_at = end
