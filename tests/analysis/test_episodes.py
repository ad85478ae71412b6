"""Exceedance episodes on hand-made series: open, escalate once, hysteresis, gaps, effective dates."""

from __future__ import annotations

from analysis.episodes import scan
from analysis.settings import EpisodeRules, Limit

H = 3_600_000_000_000
SO2 = Limit("QCVN 19:2024 SO2 1h zone B", "QCVN 19:2024", "SO2", "mg/Nm3", "1h", 200.0, None, None, None, "x")
RULES = EpisodeRules(hysteresis=0.1, escalate_after=3, escalate_factor=2.0)


def series(*values):
    return [(k * H, v) for k, v in enumerate(values, 1) if v is not None]


def test_open_escalate_once_stay_open_in_the_band_close_under_limit_minus_hysteresis():
    (e,) = scan(series(150, 250, 260, 270, 280, 190, 185, 170, 210), SO2, RULES)[:1]
    assert e.opened == 2 * H and e.escalated_at == 4 * H and e.periods == 4 and e.peak == 280
    assert e.closed_at == 8 * H  # 190 and 185 are under 200 but not under 180
    episodes = scan(series(150, 250, 260, 270, 280, 190, 185, 170, 210), SO2, RULES)
    assert len(episodes) == 2 and episodes[1].opened == 9 * H and episodes[1].state == "open"


def test_a_mean_over_twice_the_limit_escalates_at_once():
    (e,) = scan(series(401), SO2, RULES)
    assert e.escalated_at == e.opened == H and e.state == "escalated"


def test_gaps_decide_nothing():
    (e,) = scan(series(250, None, None, 175), SO2, RULES)
    assert e.periods == 1 and e.closed_at == 4 * H


def test_a_lower_bound_is_a_breach_too():
    ph = Limit("pH", "QCVN 40", "pH", "-", "1h", 9.0, 5.5, None, None, "x")
    (e,) = scan(series(7.0, 5.0, 5.2, 6.1, 7.0), ph, RULES)
    assert e.opened == 2 * H and e.closed_at == 4 * H  # 6.1 > 5.5 x 1.1 = 6.05


def test_a_limit_applies_only_from_its_effective_date():
    later = Limit("PM2,5 24h from", "QCVN 05", "PM2,5", "ug/m3", "24h", 45.0, None, 3 * H, None, "x")
    (e,) = scan(series(48, 48, 48, 47), later, RULES)
    assert e.opened == 4 * H
