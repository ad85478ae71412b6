"""Plausible, seedable measurement signals for simulated analyzers.

    value(t) = base + daily_amplitude * cos(2*pi*(local_hour(t) - peak_hour) / 24)
               + gauss(0, noise)                        clamped to [min, max]

``local_hour`` is the hour of day in Vietnam (ICT, UTC+7, no daylight
saving), so the diurnal cycle peaks at ``peak_hour`` local time whatever the
host's time zone. With the same seed, station, device and parameter the
sequence of noise draws is the same, so a run is reproducible given the same
request times.
"""

from __future__ import annotations

import math
import random
import zlib
from dataclasses import dataclass

from vocabulary.local_time import VIETNAM_OFFSET_S

ICT_OFFSET_S = VIETNAM_OFFSET_S


def local_hour(t_s: float, offset_s: int = ICT_OFFSET_S) -> float:
    """Hour of day (0..24) at UTC offset ``offset_s`` for Unix time ``t_s``."""
    return ((t_s + offset_s) % 86400.0) / 3600.0


def stable_seed(*parts: object) -> int:
    """A seed that is the same in every process (unlike hash(), which is salted)."""
    return zlib.crc32("\x1f".join(str(p) for p in parts).encode("utf-8"))


@dataclass
class Signal:
    base: float
    daily_amplitude: float = 0.0
    peak_hour: float = 14.0
    noise: float = 0.0
    min: float | None = None
    max: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def expected(self, t_s: float) -> float:
        """The noise-free value at Unix time ``t_s``."""
        phase = 2.0 * math.pi * (local_hour(t_s) - self.peak_hour) / 24.0
        return self.base + self.daily_amplitude * math.cos(phase)

    def sample(self, t_s: float) -> float:
        """A fresh noisy value at ``t_s`` (each call draws new noise)."""
        value = self.expected(t_s)
        if self.noise > 0:
            value += self._rng.gauss(0.0, self.noise)
        if self.min is not None:
            value = max(self.min, value)
        if self.max is not None:
            value = min(self.max, value)
        return value

    @classmethod
    def from_hint(cls, hint: object | None, *, seed: int, fallback_base: float = 0.0) -> Signal:
        """Build from a profile's ``signal:`` hint (station_profiles SignalHint), or a flat line."""
        if hint is None:
            return cls(base=fallback_base, seed=seed)
        return cls(
            base=hint.base,  # type: ignore[attr-defined]
            daily_amplitude=hint.daily_amplitude,  # type: ignore[attr-defined]
            peak_hour=hint.peak_hour,  # type: ignore[attr-defined]
            noise=hint.noise,  # type: ignore[attr-defined]
            min=hint.min,  # type: ignore[attr-defined]
            max=hint.max,  # type: ignore[attr-defined]
            seed=seed,
        )
