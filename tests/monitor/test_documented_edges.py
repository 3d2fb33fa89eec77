"""Edges docs/ALARMS.md resolves in writing, pinned on both evaluators: low perfusion at
check-in (before any baseline) and when the device-silent alarm ends."""

from __future__ import annotations

import math

import pytest
from monitor_testkit import Chair, EvaluatorKind

from monitor.lifecycle import TransitionEvent
from monitor.protocol import Phase, default_protocol
from monitor.vitals import SampleQuality

E = TransitionEvent


@pytest.fixture(params=["vector", "reference"])
def kind(request: pytest.FixtureRequest) -> EvaluatorKind:
    kind: EvaluatorKind = request.param
    return kind


def events(chair: Chair) -> list[tuple[float, str, str]]:
    return [(r.time, r.event.value, r.rule_id) for r in chair.log]


# --- low perfusion at check-in -----------------------------------------------------------------


def test_low_perfusion_at_check_in_holds_spo2_without_an_alarm(kind: EvaluatorKind) -> None:
    """At check-in the technical alarms do not apply yet (no monitor may be attached), but
    the low-signal gate does: an SpO2 of 84 with a perfusion index of 0.3 is unreliable and
    raises nothing. When the session moves to baseline with the index still low, the
    low-signal alarm is raised at the phase change; once the index recovers, the SpO2 that
    is still 84 raises its alarm on that very sample (the index is applied first)."""
    chair = Chair(kind, phase=Phase.CHECKED_IN, protocol=default_protocol())
    for t in range(0, 30):
        chair.second(t, spo2=84, hr=72, pr=72, pi=0.3)
    assert events(chair) == []
    chair.set_phase(Phase.BASELINE, 30)
    assert events(chair) == [(30, "raised", "spo2_low_signal")]
    for t in range(30, 40):
        chair.second(t, spo2=84, hr=72, pr=72, pi=0.3)
    chair.second(40, spo2=84, hr=72, pr=72, pi=0.6)
    assert events(chair)[1:] == [
        (40, "raised", "spo2_desat"),
        (40, "cleared", "spo2_low_signal"),
    ]


def test_spo2_alarms_apply_from_check_in_without_a_baseline(kind: EvaluatorKind) -> None:
    """Only baseline-relative rules wait for a baseline; a reliable desaturation at check-in
    raises its alarm at once."""
    chair = Chair(kind, phase=Phase.CHECKED_IN, protocol=default_protocol())
    chair.second(0, spo2=84, hr=72, pr=72, pi=1.5)
    assert [(t, e, r) for t, e, r in events(chair)] == [(0, "raised", "spo2_desat")]


# --- when device_silent ends ---------------------------------------------------------------------


def silent_chair(kind: EvaluatorKind) -> Chair:
    chair = Chair(kind, protocol=default_protocol())
    chair.run(0, 5, spo2=97, hr=72, pr=72, pi=1.5)  # last samples at 4
    for t in range(5, 20):
        chair.tick(t)
    assert chair.times("device_silent") == [14]
    return chair


def test_device_silent_ends_at_the_first_tick_after_any_sample(kind: EvaluatorKind) -> None:
    """Any sample of any vital says the device is talking, even one it flags as unusable
    (the link is what the alarm is about; the values have alarms of their own). The check is
    time-driven, so it ends on the engine's next tick, not on the sample itself."""
    chair = silent_chair(kind)
    chair.send(20, quality=SampleQuality.ARTIFACT, spo2=50)
    assert chair.times("device_silent", E.CLEARED) == []
    chair.tick(20)
    assert chair.times("device_silent", E.CLEARED) == [20]
    # Still no usable SpO2: the no-value alarm it suppressed is raised now.
    assert chair.times("spo2_no_value") == [20]


def test_device_silent_ends_on_a_sample_without_a_value(kind: EvaluatorKind) -> None:
    chair = silent_chair(kind)
    chair.send(20, hr=math.nan)  # the device sent the vital, without a value
    chair.tick(20)
    assert chair.times("device_silent", E.CLEARED) == [20]


@pytest.mark.parametrize(
    ("send_at", "quality"),
    [
        (20, SampleQuality.UNBOUND),  # not this session's: its device is not bound here
        (9, SampleQuality.NONE),  # a backlog sample from before the silence window
    ],
)
def test_device_silent_does_not_end_on(
    kind: EvaluatorKind, send_at: float, quality: SampleQuality
) -> None:
    chair = silent_chair(kind)
    chair.send(send_at, quality=quality, hr=72)
    chair.tick(20)
    assert chair.times("device_silent", E.CLEARED) == []
