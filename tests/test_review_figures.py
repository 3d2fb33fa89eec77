"""Summary figures from plain arrays, against values worked out by hand (no web stack)."""

from __future__ import annotations

import numpy as np
import pytest

from app.review.figures import (
    AlarmFacts,
    LimitSpec,
    SessionFigures,
    VitalSeries,
    chair_hours,
    downsample_min_max,
    hold_durations,
    session_figures,
    site_figures,
)
from monitor.protocol import Op, default_protocol

PROTOCOL = default_protocol()  # its NIBP baseline: the mean of the last two readings
SESSION_END = 1000.0
BASELINE_WINDOW = (100.0, 400.0)


def known_series() -> dict[str, VitalSeries]:
    hr_values = [70, 72, 75, 80, 120, 125, 118, 90, 80, 70]
    hr_usable = [True] * 10
    hr_usable[6] = False  # 118 flagged: counts for nothing
    spo2_times = [0, 1, 2, 3, 4, 5, 6, 30]
    spo2_values = [97, 92, 89, 88, 89, 91, 96, 85]
    spo2_usable = [True] * 7 + [False]  # the 85 is motion artifact, not a desaturation
    return {
        "hr": VitalSeries.of("hr", list(range(10)), hr_values, hr_usable),
        "pr": VitalSeries.of("pr", [100, 101, 102], [60, 64, 90], [True] * 3),
        "spo2": VitalSeries.of("spo2", spo2_times, spo2_values, spo2_usable),
        "nibp_sys": VitalSeries.of(
            "nibp_sys", [110, 200, 350, 500, 800, 900], [120, 130, 126, 165, 182, 150], [True] * 6
        ),
        "nibp_dia": VitalSeries.of(
            "nibp_dia", [110, 200, 350, 500, 800, 900], [80, 84, 82, 99, 104, 90], [True] * 6
        ),
    }


LIMITS = [
    LimitSpec("hr_high_medium", "hr", Op.GT, 110, "medium"),
    LimitSpec("hr_low_medium", "hr", Op.LT, 50, "medium"),
    LimitSpec("spo2_low_medium", "spo2", Op.LE, 93, "medium"),
    LimitSpec("sbp_high_medium", "nibp_sys", Op.GE, 160, "medium"),
    LimitSpec("dbp_high_medium", "nibp_dia", Op.GE, 100, "medium"),
]
ALARMS = [
    AlarmFacts("spo2_low_high", "high", raised_at=0, acknowledged_at=30),
    AlarmFacts("spo2_low_medium", "medium", raised_at=10, acknowledged_at=100),
    AlarmFacts("spo2_desat", "crisis", raised_at=20, acknowledged_at=None),
    AlarmFacts("spo2_low_high", "high", raised_at=50, acknowledged_at=60),
]


def test_values_hold_until_the_next_sample_but_not_across_a_gap() -> None:
    times = np.array([0.0, 1.0, 2.0, 10.0])
    assert hold_durations(times, 5.0, 11.0).tolist() == [1.0, 1.0, 5.0, 1.0]
    assert hold_durations(np.zeros(0), 5.0, 1.0).size == 0


def test_session_figures_match_the_hand_computed_values() -> None:
    figures = session_figures(
        known_series(),
        session_end=SESSION_END,
        baseline_window=BASELINE_WINDOW,
        stored_baselines={"nibp_dia": 81.0},
        limits=LIMITS,
        alarms=ALARMS,
        protocol=PROTOCOL,
    )
    by_vital = {v.vital: v for v in figures.vitals}

    hr = by_vital["hr"]
    assert (hr.peak, hr.peak_at, hr.lowest, hr.lowest_at) == (125, 5, 70, 0)
    assert hr.usable_samples == 9
    assert hr.baseline is None  # no HR sample inside the baseline phase
    assert by_vital["pr"].baseline == 64  # median of 60, 64, 90

    # NIBP: the mean of the baseline phase's last two readings, (130 + 126) / 2.
    sys = by_vital["nibp_sys"]
    assert (sys.baseline, sys.peak, sys.peak_at) == (128, 182, 800)
    assert by_vital["nibp_dia"].baseline == 81.0  # the engine's stored baseline wins
    assert by_vital["nibp_mean"].peak is None  # never measured

    minutes = {b.limit.rule_id: b.minutes for b in figures.beyond_limits}
    # HR > 110: 120 at t=4 holds 1 s, 125 at t=5 holds 2 s (the flagged 118 at t=6 is skipped).
    assert minutes["hr_high_medium"] == pytest.approx(3 / 60)
    assert minutes["hr_low_medium"] == 0
    # SpO2 ≤ 93: 92, 89, 88, 89, 91 at t=1…5, one second each.
    assert minutes["spo2_low_medium"] == pytest.approx(5 / 60)
    # SBP ≥ 160: 165 stands 500→800 (300 s), 182 stands 800→900 (100 s).
    assert minutes["sbp_high_medium"] == pytest.approx(400 / 60)
    assert minutes["dbp_high_medium"] == pytest.approx(100 / 60)

    assert (figures.lowest_spo2, figures.lowest_spo2_at) == (88, 3)
    assert figures.seconds_spo2_below_90 == 3  # 89, 88, 89
    assert figures.alarm_counts == {"low": 0, "medium": 1, "high": 2, "crisis": 1}
    assert figures.acknowledged == 3
    assert figures.median_ack_s == 30  # median of 30, 90 and 10 s


def figures_under(limit: LimitSpec) -> SessionFigures:
    """The known series' figures against one limit, without baselines or alarms."""
    return session_figures(
        known_series(),
        session_end=SESSION_END,
        baseline_window=BASELINE_WINDOW,
        stored_baselines={},
        limits=[limit],
        alarms=[],
        protocol=PROTOCOL,
    )


def test_time_beyond_a_limit_counts_against_the_limit_in_force_then() -> None:
    # SBP ≥ 160, raised to 170 for this session at t=600 and back to 160 at t=850.
    overridden = LimitSpec(
        "sbp_high_medium", "nibp_sys", Op.GE, 160, "medium", changes=((600, 170), (850, 160))
    )
    figures = figures_under(overridden)
    (beyond,) = figures.beyond_limits
    # 165 at t=500 is read under 160 and stands 300 s; 182 at t=800 is read under 170 and
    # stands 100 s; 150 at t=900 is under 160 again. The override does not hide the 182.
    assert beyond.minutes == pytest.approx(400 / 60)
    assert beyond.limit.changes == ((600, 170), (850, 160))
    raised_early = LimitSpec("sbp_high_medium", "nibp_sys", Op.GE, 160, "medium", ((400, 170),))
    figures = figures_under(raised_early)
    assert figures.beyond_limits[0].minutes == pytest.approx(100 / 60)  # only the 182 counts


def test_the_last_sample_holds_no_further_than_the_session_end() -> None:
    series = {"spo2": VitalSeries.of("spo2", [0, 1], [88, 88], [True, True])}
    figures = session_figures(
        series,
        session_end=3.0,
        baseline_window=None,
        stored_baselines={},
        limits=[],
        alarms=[],
        protocol=PROTOCOL,
    )
    assert figures.seconds_spo2_below_90 == 3  # 1 s, then 2 s up to the end (not 5)
    assert figures.median_ack_s is None
    assert figures.alarm_counts == {"low": 0, "medium": 0, "high": 0, "crisis": 0}


def test_site_figures_per_chair_hour_and_acknowledged_within_a_minute() -> None:
    alarms = [
        AlarmFacts("spo2_low_high", "high", 0, 30, actionable=True),
        AlarmFacts("spo2_low_medium", "medium", 10, 100, actionable=False),
        AlarmFacts("spo2_desat", "crisis", 20, None),
        AlarmFacts("spo2_low_high", "high", 50, 60, actionable=False),
    ]
    # Two sessions: 0–3600 and 1800–9000, counted inside 0–7200: 3600 s + 5400 s = 2.5 h.
    spans = [(0.0, 3600.0), (1800.0, 9000.0)]
    assert chair_hours(spans, 0, 7200) == 2.5
    figures = site_figures(alarms, spans, 0, 7200)
    assert figures.sessions == 2
    assert figures.alarms_per_chair_hour == pytest.approx(4 / 2.5)
    assert figures.acknowledged_within_60s == 2  # 30 s and 10 s; 90 s is late, one never
    assert figures.share_acknowledged_within_60s == 0.5
    assert figures.median_ack_s == 30
    rules = {r.rule_id: r for r in figures.rules}
    assert figures.rules[0].rule_id == "spo2_low_high"  # the most frequent first
    assert (rules["spo2_low_high"].alarms, rules["spo2_low_high"].marked_actionable) == (2, 1)
    assert rules["spo2_low_high"].marked_not_actionable == 1
    assert rules["spo2_desat"].marked_actionable + rules["spo2_desat"].marked_not_actionable == 0


def test_a_site_without_sessions_or_alarms_has_no_rates() -> None:
    figures = site_figures([], [], 0, 3600)
    assert figures.alarms_per_chair_hour is None
    assert figures.share_acknowledged_within_60s is None


def test_down_sampling_keeps_every_columns_extremes() -> None:
    times = np.arange(10_000, dtype=np.float64)
    values = 95 + 2 * np.sin(times / 300)
    values[5_003] = 71.0  # a two-second desaturation in a long trace
    values[5_004] = 79.0
    kept_t, kept_v = downsample_min_max(times, values, columns=100)
    assert kept_t.size <= 200
    assert np.all(np.diff(kept_t) > 0)  # still in time order
    assert 71.0 in kept_v
    assert kept_v.max() == values.max()
    # Each column's lowest and highest, worked out column by column (the last one closed).
    width = 9_999 / 100
    for column in range(100):
        upper = np.inf if column == 99 else (column + 1) * width
        inside = (times >= column * width) & (times < upper)
        in_kept = (kept_t >= column * width) & (kept_t < upper)
        assert kept_v[in_kept].min() == values[inside].min()
        assert kept_v[in_kept].max() == values[inside].max()


def test_short_traces_are_not_down_sampled() -> None:
    times = np.arange(50, dtype=np.float64)
    kept_t, kept_v = downsample_min_max(times, times * 2, columns=100)
    assert kept_t.tolist() == times.tolist()
    assert kept_v.tolist() == (times * 2).tolist()
