"""Alarm lifecycle: latching, acknowledgement, audio pause, escalation, records, restore."""

from __future__ import annotations

import pytest
from monitor_testkit import KEY, Chair

from monitor.engine import AlarmEngine
from monitor.lifecycle import (
    AlarmLifecycle,
    AlarmState,
    AlarmTransition,
    ConditionChange,
    TransitionEvent,
)
from monitor.protocol import AlarmKind, LifecycleSettings, Phase, Priority, default_protocol

E = TransitionEvent
SETTINGS = LifecycleSettings(
    latching=frozenset({Priority.HIGH, Priority.CRISIS}),
    audio_pause_s=120,
    escalate_after_s={Priority.MEDIUM: 300, Priority.HIGH: 120},
)


QUIET = LifecycleSettings(audio_pause_s=120)  # no escalation


def change(
    rule: str,
    active: bool,
    time: float,
    priority: Priority = Priority.MEDIUM,
    kind: AlarmKind = AlarmKind.PHYSIOLOGICAL,
    session: str = "s1",
    value: float = 1.0,
) -> ConditionChange:
    return ConditionChange(session, rule, kind, priority, active, time, value, 0.0, f"{rule} text")


def events(records: list[AlarmTransition]) -> list[tuple[str, str, float]]:
    return [(r.rule_id, r.event.value, r.time) for r in records]


def test_raise_and_clear_a_medium_alarm() -> None:
    life = AlarmLifecycle(SETTINGS, protocol_version="v9")
    raised = life.apply(change("hr", True, 10, value=115))
    assert len(raised) == 1
    record = raised[0]
    assert record.event is E.RAISED
    assert record.state is AlarmState.RAISED
    assert (record.session_key, record.rule_id, record.kind) == (
        "s1",
        "hr",
        AlarmKind.PHYSIOLOGICAL,
    )
    assert (record.value, record.limit, record.text, record.actor) == (115, 0.0, "hr text", None)
    assert (record.raised_at, record.escalate_at, record.protocol_version) == (10, 310, "v9")
    assert [a.alarm_id for a in life.active()] == [record.alarm_id]

    cleared = life.apply(change("hr", False, 20, value=100))
    # The alarm keeps the value that raised it; the transition says what ended it.
    assert [(r.event, r.state, r.value, r.reading, r.alarm_id) for r in cleared] == [
        (E.CLEARED, AlarmState.CLEARED, 115, 100, record.alarm_id)
    ]
    assert (cleared[0].cleared_at, cleared[0].acknowledged_at) == (20, None)
    assert life.active() == []


def test_high_alarm_latches_until_acknowledged() -> None:
    life = AlarmLifecycle(SETTINGS)
    (raised,) = life.apply(change("spo2", True, 0, Priority.HIGH))
    (ended,) = life.apply(change("spo2", False, 30, Priority.HIGH))
    assert (ended.event, ended.state, ended.condition_active) == (
        E.CONDITION_ENDED,
        AlarmState.RAISED,
        False,
    )
    (alarm,) = life.active("s1")
    assert alarm.audible
    assert not alarm.condition_active

    # The condition comes back before anyone acknowledged: the same alarm, not a new one.
    (back,) = life.apply(change("spo2", True, 40, Priority.HIGH))
    assert (back.event, back.alarm_id) == (E.CONDITION_RETURNED, raised.alarm_id)
    life.apply(change("spo2", False, 50, Priority.HIGH))

    done = life.acknowledge(raised.alarm_id, actor="rn.kim", time=60)
    assert [(r.event, r.state, r.actor) for r in done] == [
        (E.ACKNOWLEDGED, AlarmState.ACKNOWLEDGED, "rn.kim"),
        (E.CLEARED, AlarmState.CLEARED, "rn.kim"),
    ]
    assert life.active() == []
    assert life.acknowledge(raised.alarm_id, actor="rn.kim", time=61) == []


def test_technical_alarms_do_not_latch() -> None:
    life = AlarmLifecycle(SETTINGS)
    life.apply(change("device_silent", True, 0, Priority.HIGH, AlarmKind.TECHNICAL))
    cleared = life.apply(change("device_silent", False, 5, Priority.HIGH, AlarmKind.TECHNICAL))
    assert [r.event for r in cleared] == [E.CLEARED]


def test_acknowledged_alarm_clears_when_its_condition_ends() -> None:
    life = AlarmLifecycle(SETTINGS)
    (raised,) = life.apply(change("spo2", True, 0, Priority.HIGH))
    (ack,) = life.acknowledge(raised.alarm_id, actor="rn", time=5)
    assert ack.state is AlarmState.ACKNOWLEDGED
    assert ack.condition_active
    (alarm,) = life.active()
    assert not alarm.audible
    assert (alarm.acknowledged_by, alarm.acknowledged_at) == ("rn", 5)
    assert ack.alarm == alarm  # the transition carries the alarm's one record
    assert [r.event for r in life.apply(change("spo2", False, 9, Priority.HIGH))] == [E.CLEARED]
    # A new occurrence is a new alarm with a new id.
    (again,) = life.apply(change("spo2", True, 20, Priority.HIGH))
    assert again.alarm_id != raised.alarm_id


def test_audio_pause_expires() -> None:
    life = AlarmLifecycle(QUIET)
    assert life.pause_audio("s1", actor="rn", time=0) == []  # nothing sounding: no pause
    life.apply(change("a", True, 0))
    life.apply(change("b", True, 1, Priority.HIGH))
    paused = life.pause_audio("s1", actor="rn", time=10)
    assert sorted(events(paused)) == [("a", "audio_paused", 10), ("b", "audio_paused", 10)]
    assert all(r.audio_paused and r.actor == "rn" for r in paused)
    assert not any(a.audible for a in life.active("s1"))
    assert life.tick(129) == []
    resumed = life.tick(130)  # 120 s later
    assert sorted(events(resumed)) == [("a", "audio_resumed", 130), ("b", "audio_resumed", 130)]
    assert all(a.audible for a in life.active("s1"))


def test_a_new_alarm_breaks_through_the_pause() -> None:
    life = AlarmLifecycle(SETTINGS)
    life.apply(change("a", True, 0))
    life.apply(change("a", True, 0, session="s2"))
    life.pause_audio("s1", actor="rn", time=10)
    life.pause_audio("s2", actor="rn", time=10)
    out = life.apply(change("c", True, 20))
    assert events(out) == [("c", "raised", 20), ("a", "audio_resumed", 20)]
    assert not out[0].audio_paused
    assert life.audio_paused_until("s1") is None
    assert life.audio_paused_until("s2") == 130  # other sessions keep their pause


def test_escalation_of_an_unacknowledged_alarm() -> None:
    life = AlarmLifecycle(SETTINGS)
    (_raised,) = life.apply(change("hr", True, 0))
    life.pause_audio("s1", actor="rn", time=250)
    assert life.tick(299) == []
    out = life.tick(300)
    assert [(r.event, r.priority) for r in out] == [(E.ESCALATED, Priority.HIGH)]
    assert not out[0].audio_paused  # a higher alarm breaks through the pause
    assert [r.priority for r in life.tick(420)] == [Priority.CRISIS]
    assert life.tick(10_000) == []  # crisis is the top
    # Escalated to high, it now latches.
    assert [r.event for r in life.apply(change("hr", False, 500))] == [E.CONDITION_ENDED]


def test_acknowledging_stops_escalation() -> None:
    life = AlarmLifecycle(SETTINGS)
    (raised,) = life.apply(change("hr", True, 0))
    life.acknowledge(raised.alarm_id, actor="rn", time=100)
    assert life.tick(1000) == []
    assert life.active()[0].priority is Priority.MEDIUM


def test_ending_a_session_clears_its_alarms() -> None:
    life = AlarmLifecycle(SETTINGS)
    life.apply(change("a", True, 0, Priority.HIGH))
    life.apply(change("a", False, 5, Priority.HIGH))  # latched
    life.apply(change("b", True, 0, session="s2"))
    out = life.end_session("s1", 50)
    assert events(out) == [("a", "cleared", 50)]
    assert [a.session_key for a in life.active()] == ["s2"]


def test_alarm_ids_are_unique_and_deterministic() -> None:
    life = AlarmLifecycle(SETTINGS)
    ids = []
    for _ in range(3):  # raised and cleared again in the same millisecond
        ids.append(life.apply(change("a", True, 1.0))[0].alarm_id)
        life.apply(change("a", False, 1.0))
    assert ids == ["s1:a:1000", "s1:a:1000.2", "s1:a:1000.3"]
    custom = AlarmLifecycle(SETTINGS, id_factory=lambda s, r, t: f"{s}/{r}/{t:g}")
    assert custom.apply(change("a", True, 2.5))[0].alarm_id == "s1/a/2.5"


def test_restore_rebuilds_live_alarms_from_records() -> None:
    life = AlarmLifecycle(SETTINGS)
    log: list[AlarmTransition] = []
    log += life.apply(change("hr", True, 0))
    log += life.apply(change("spo2", True, 10, Priority.HIGH))
    log += life.apply(change("spo2", False, 20, Priority.HIGH))  # latched
    log += life.apply(change("pr", True, 30))
    log += life.acknowledge(log[-1].alarm_id, actor="rn", time=35)
    log += life.apply(change("gone", True, 40))
    log += life.apply(change("gone", False, 45))

    again = AlarmLifecycle(SETTINGS)
    restored = again.restore(log)
    assert {a.rule_id for a in restored} == {"hr", "spo2", "pr"}
    assert again.active() == life.active()
    # Timers and identities carry on: escalation (spo2 was due at 130, hr at 300), then
    # acknowledging the latched one clears it.
    assert [(r.rule_id, r.event) for r in again.tick(300)] == [
        ("spo2", E.ESCALATED),
        ("hr", E.ESCALATED),
    ]
    spo2 = next(a for a in restored if a.rule_id == "spo2")
    assert [r.event for r in again.acknowledge(spo2.alarm_id, actor="rn", time=301)] == [
        E.ACKNOWLEDGED,
        E.CLEARED,
    ]


def test_engine_restore_does_not_duplicate_a_still_active_condition() -> None:
    chair = Chair(protocol=default_protocol())
    chair.run(0, 30, spo2=88, hr=72, pr=72, pi=1.5)
    # One SpO2-low alarm: its ≤ 93 and ≤ 90 tiers hold, it shows the worse.
    (before,) = [a for a in chair.engine.active_alarms() if a.group == "spo2_low"]
    assert before.rule_id == "spo2_low_high"

    # The server restarts: a new engine, the session re-added, stored records handed back.
    engine = AlarmEngine()
    engine.add_session(KEY, Phase.INFUSION, 30)
    restored = engine.restore(chair.log)
    assert {a.alarm_id for a in restored} == {a.alarm_id for a in chair.engine.active_alarms()}

    rows = [(KEY, v, x, 31.0) for v, x in (("spo2", 88), ("hr", 72), ("pr", 72), ("pi", 1.5))]
    assert engine.ingest(engine.batch(rows)) == []  # still low: no second alarm
    rows = [(KEY, "spo2", 95, 32.0)]
    out = engine.ingest(engine.batch(rows))
    ended = [r for r in out if r.rule_id == "spo2_low_high"]
    assert [(r.event, r.alarm_id) for r in ended] == [(E.CONDITION_ENDED, before.alarm_id)]


def test_engine_restore_keeps_a_technical_clock_running() -> None:
    chair = Chair()
    chair.run(0, 5, spo2=97, hr=72, pr=72, pi=1.5)
    for t in range(5, 20):
        chair.tick(t)
    assert chair.times("device_silent") == [14]

    engine = AlarmEngine()
    engine.add_session(KEY, Phase.INFUSION, 20)
    engine.restore(chair.log)
    assert engine.tick(21) == []  # the restart does not reset "silent since"
    engine.ingest(engine.batch([(KEY, "hr", 72, 22.0)]))
    assert [r.event for r in engine.tick(22)] == [E.CLEARED]


def test_transition_records_for_every_change_via_the_engine() -> None:
    chair = Chair()
    chair.run(0, 20, spo2=97, hr=120, pr=72, pi=1.5)
    (alarm,) = chair.engine.active_alarms(KEY)
    chair.take(chair.engine.pause_audio(KEY, actor="rn.a", time=20))
    chair.take(chair.engine.acknowledge_session(KEY, actor="rn.b", time=25))
    chair.run(20, 30, spo2=97, hr=80, pr=72, pi=1.5)
    assert [(r.event.value, r.time, r.actor, r.state.value) for r in chair.log] == [
        ("raised", 10, None, "raised"),
        ("audio_paused", 20, "rn.a", "raised"),
        ("acknowledged", 25, "rn.b", "acknowledged"),
        ("cleared", 20, None, "cleared"),
    ]
    assert {r.alarm_id for r in chair.log} == {alarm.alarm_id}


@pytest.mark.parametrize("priority", [Priority.LOW, Priority.MEDIUM, Priority.HIGH])
def test_iec_priority_shows_crisis_as_high(priority: Priority) -> None:
    life = AlarmLifecycle(SETTINGS)
    life.apply(change("x", True, 0, priority))
    life.apply(change("y", True, 0, Priority.CRISIS))
    shown = {a.rule_id: a.iec_priority for a in life.active()}
    assert shown == {"x": priority, "y": Priority.HIGH}
