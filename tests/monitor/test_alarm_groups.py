"""One alarm per parameter: the tiers of an alarm group, as a central station shows them.

Run with the default protocol, where SpO2 ≤ 93 / ≤ 90 / ≤ 85 (and ≤ 90 for 60 s) are tiers
of one SpO2-low alarm, SBP ≥ 160 / ≥ baseline + 30 / ≥ 180 / ≥ 200 of one SBP-high alarm,
and so on (docs/ALARMS.md, "One alarm per parameter").
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from monitor_testkit import KEY, Chair, EvaluatorKind, one_alarm_per_rule

from monitor.alarm_text import rule_text
from monitor.engine import AlarmEngine
from monitor.lifecycle import (
    AlarmLifecycle,
    AlarmState,
    AlarmTransition,
    ConditionChange,
    TransitionEvent,
)
from monitor.protocol import (
    DEFAULT_PROTOCOL_PATH,
    AlarmKind,
    LifecycleSettings,
    Phase,
    Priority,
    ProtocolError,
    default_alarm_group,
    default_protocol,
    parse_protocol,
)
from monitor.vitals import SampleQuality, Vital

E = TransitionEvent
NORMAL = {"hr": 72.0, "pr": 72.0, "pi": 1.5}
DEFAULT = DEFAULT_PROTOCOL_PATH.read_text(encoding="utf-8")


@pytest.fixture(params=["vector", "reference"])
def kind(request: pytest.FixtureRequest) -> EvaluatorKind:
    kind: EvaluatorKind = request.param
    return kind


def grouped(kind: EvaluatorKind = "vector", phase: Phase = Phase.INFUSION) -> Chair:
    return Chair(kind, phase=phase, protocol=default_protocol())


def story(log: list[AlarmTransition], group: str) -> list[tuple[object, ...]]:
    """(time, event, rule shown, priority, state, text) of one group's alarm transitions."""
    return [
        (r.time, r.event.value, r.rule_id, r.priority.value, r.state.value, r.text)
        for r in log
        if r.group == group
    ]


# --- the protocol ---------------------------------------------------------------------------


def test_every_default_rule_is_a_tier_of_its_vital_and_direction() -> None:
    protocol = default_protocol()
    groups: dict[str, list[str]] = {}
    for rule in protocol.rules:
        assert rule.alarm_group == default_alarm_group(rule.vital, rule.op)  # written out
        groups.setdefault(rule.alarm_group, []).append(rule.id)
    assert groups["spo2_low"] == ["spo2_low_medium", "spo2_low_high", "spo2_desat",
                                  "spo2_low_sustained"]  # fmt: skip
    assert groups["sbp_high"] == ["sbp_high_medium", "sbp_rise_medium", "sbp_high_high",
                                  "sbp_high_crisis"]  # fmt: skip
    assert groups["dbp_high"] == ["dbp_high_medium", "dbp_high_high", "dbp_high_crisis"]
    assert sorted(groups) == [
        "dbp_high", "hr_high", "hr_low", "map_low", "pr_high", "pr_low", "sbp_high", "sbp_low",
        "spo2_low",
    ]  # fmt: skip


def without_group_lines(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.startswith("alarm_group"))


def test_without_the_key_a_rule_is_grouped_by_vital_and_direction() -> None:
    protocol = parse_protocol(without_group_lines(DEFAULT))
    assert [r.alarm_group for r in protocol.rules] == [
        r.alarm_group for r in default_protocol().rules
    ]


def rule_block(rule_id: str, vital: str, op: str, limit: float, group: str | None) -> str:
    line = f'alarm_group = "{group}"\n' if group is not None else ""
    return (
        f'\n[[rule]]\nid = "{rule_id}"\nvital = "{vital}"\nop = "{op}"\nlimit = {limit}\n'
        f'{line}priority = "medium"\n'
    )


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        (rule_block("odd_one", "hr", ">", 120, "spo2_low"), "on spo2 ('spo2_low_medium'), not hr"),
        (rule_block("spo2_high", "spo2", ">=", 99, "spo2_low"), "holds lower limits"),
        (rule_block("x", "hr", ">", 120, "device_silent"), "is the id of another rule or check"),
        (rule_block("y", "hr", ">", 120, "HR-high"), "must be lower case letters"),
    ],
)
def test_alarm_group_errors_name_the_rule_key_and_line(extra: str, problem: str) -> None:
    text = DEFAULT + extra
    with pytest.raises(ProtocolError) as caught:
        parse_protocol(text, source="clinic.toml")
    error = caught.value
    assert problem in error.problem
    assert error.key == "alarm_group"
    assert error.line is not None
    assert text.splitlines()[error.line - 1].startswith("alarm_group = ")
    assert error.rule_id in extra


# --- the flood of issue 14 --------------------------------------------------------------------


def test_one_reading_of_196_over_121_is_two_alarms_and_the_advice(kind: EvaluatorKind) -> None:
    """Five alarms before (DBP ≥ 100, ≥ 110, ≥ 120, SBP ≥ 160 and the combination): now one
    per parameter that is out of range, plus the combination, which asks for a different
    action (pausing the infusion) and so stays an alarm of its own."""
    chair = grouped(kind)
    chair.nibp(0, 196, 121, 146)
    assert [(r.event, r.group) for r in chair.log] == [
        (E.RAISED, "sbp_high"),
        (E.RAISED, "dbp_high"),
        (E.RAISED, "infusion_safety"),
    ]  # one transition each: the three DBP tiers raised together are one RAISED
    shown = {a.group: (a.rule_id, a.priority, a.text) for a in chair.engine.active_alarms(KEY)}
    assert shown["dbp_high"] == ("dbp_high_crisis", Priority.CRISIS, "DBP 121 ≥ 120")
    # SBP ≥ 180 waits for its confirming reading: SBP shows its medium tier.
    assert shown["sbp_high"] == ("sbp_high_medium", Priority.MEDIUM, "SBP 196 ≥ 160")
    assert shown["infusion_safety"][1] is Priority.HIGH
    assert len(shown) == 3

    # Outside the infusion the combination does not apply: two alarms.
    recovering = grouped(kind, Phase.RECOVERY)
    recovering.nibp(0, 196, 121, 146)
    assert {a.group for a in recovering.engine.active_alarms(KEY)} == {"sbp_high", "dbp_high"}


# --- tiers: escalate, de-escalate, worst value, latching -----------------------------------


def test_a_desaturation_is_one_alarm_that_follows_its_worst_tier(kind: EvaluatorKind) -> None:
    chair = grouped(kind)
    chair.run(0, 100, spo2=97, **NORMAL)
    chair.run(100, 120, spo2=88, **NORMAL)  # ≤ 93 and ≤ 90 both hold from 115
    chair.run(120, 122, spo2=84, **NORMAL)  # the desat limit, at once
    chair.run(122, 124, spo2=82, **NORMAL)  # deeper: a new worst value
    chair.run(124, 126, spo2=84, **NORMAL)  # better, still ≤ 85: nothing to say
    chair.run(126, 140, spo2=88, **NORMAL)  # past 85 + 1: back to the ≤ 90 tier
    chair.run(140, 150, spo2=95, **NORMAL)  # past 93 + 1: every tier has ended

    (alarm_id,) = {r.alarm_id for r in chair.log if r.group == "spo2_low"}
    assert alarm_id == f"{KEY}:spo2_low:115000"
    assert story(chair.log, "spo2_low") == [
        (115, "raised", "spo2_low_high", "high", "raised", "SpO2 88 ≤ 90"),
        (120, "tier_changed", "spo2_desat", "crisis", "raised", "SpO2 84 ≤ 85"),
        (122, "worsened", "spo2_desat", "crisis", "raised", "SpO2 82 ≤ 85"),
        # Unacknowledged, the alarm keeps the crisis priority its latching desat tier gave
        # it; its rule and text follow the tier that holds, with the worst value reached.
        (126, "tier_changed", "spo2_low_high", "crisis", "raised", "SpO2 88 ≤ 90 (lowest 82)"),
        # Ended, it latches and shows the worst it reached.
        (140, "condition_ended", "spo2_desat", "crisis", "raised", "SpO2 82 ≤ 85"),
    ]
    ended = next(r for r in chair.log if r.event is E.CONDITION_ENDED and r.group == "spo2_low")
    assert (ended.value, ended.worst_value, ended.reading, ended.vital) == (82, 82, 95, Vital.SPO2)

    done = chair.take(chair.engine.acknowledge(alarm_id, actor="rn.lee", time=200))
    assert [(r.event, r.state) for r in done] == [
        (E.ACKNOWLEDGED, AlarmState.ACKNOWLEDGED),
        (E.CLEARED, AlarmState.CLEARED),
    ]


def test_after_acknowledging_the_priority_follows_the_tiers(kind: EvaluatorKind) -> None:
    chair = grouped(kind, Phase.RECOVERY)  # no combination alarm in recovery
    chair.run(0, 20, spo2=84, **NORMAL)
    (alarm,) = chair.engine.active_alarms(KEY)
    chair.take(chair.engine.acknowledge(alarm.alarm_id, actor="rn", time=20))
    chair.run(20, 40, spo2=89, **NORMAL)  # the desat tier ends; ≤ 90 holds
    assert story(chair.log, "spo2_low")[-1] == (
        20, "tier_changed", "spo2_low_high", "high", "acknowledged", "SpO2 89 ≤ 90 (lowest 84)"
    )  # fmt: skip
    # A tier no worse than the one acknowledged does not raise it again …
    chair.run(40, 42, spo2=84, **NORMAL)
    assert story(chair.log, "spo2_low")[-1][1:5] == (
        "tier_changed", "spo2_desat", "crisis", "acknowledged"
    )  # fmt: skip
    chair.run(42, 60, spo2=95, **NORMAL)
    assert story(chair.log, "spo2_low")[-1][1:5] == ("cleared", "spo2_desat", "crisis", "cleared")


def test_a_worse_tier_breaks_through_an_acknowledgement_and_a_pause(kind: EvaluatorKind) -> None:
    chair = grouped(kind, Phase.RECOVERY)
    chair.run(0, 20, spo2=88, **NORMAL)
    (alarm,) = chair.engine.active_alarms(KEY)
    assert alarm.priority is Priority.HIGH
    chair.take(chair.engine.acknowledge(alarm.alarm_id, actor="rn", time=20))
    chair.nibp(21, 165, 90)  # another alarm, raised, so that there is something to pause
    chair.take(chair.engine.pause_audio(KEY, actor="rn", time=22))
    chair.second(23, spo2=84, **NORMAL)  # worse than what was acknowledged
    back = chair.log[-2:]
    assert [(r.event, r.group, r.state, r.priority) for r in back] == [
        (E.TIER_CHANGED, "spo2_low", AlarmState.RAISED, Priority.CRISIS),
        (E.AUDIO_RESUMED, "sbp_high", AlarmState.RAISED, Priority.MEDIUM),
    ]
    assert (back[0].acknowledged_by, back[0].acknowledged_at, back[0].audible) == (None, None, True)
    assert back[0].alarm_id == alarm.alarm_id  # the same alarm, raised again
    assert chair.engine.audio_paused_until(KEY) is None


def test_latching_goes_by_the_worst_priority_reached(kind: EvaluatorKind) -> None:
    chair = grouped(kind, Phase.RECOVERY)
    chair.nibp(0, 205, 90)  # ≥ 200 (crisis) and ≥ 160 (medium)
    chair.nibp(300, 170, 90)  # below 200 − 5: the crisis tier ends, ≥ 160 holds
    chair.nibp(600, 150, 90)  # below 160 − 5: the last (medium) tier ends
    assert story(chair.log, "sbp_high") == [
        (0, "raised", "sbp_high_crisis", "crisis", "raised",
         "SBP 205 ≥ 200: consider pausing infusion"),
        (300, "tier_changed", "sbp_high_medium", "crisis", "raised",
         "SBP 170 ≥ 160 (highest 205)"),
        (600, "condition_ended", "sbp_high_crisis", "crisis", "raised",
         "SBP 205 ≥ 200: consider pausing infusion"),
    ]  # fmt: skip


def test_an_acknowledged_tier_change_is_kept_and_a_medium_alarm_clears(
    kind: EvaluatorKind,
) -> None:
    chair = grouped(kind, Phase.RECOVERY)
    chair.nibp(0, 165, 90)
    chair.nibp(300, 150, 90)
    assert [e for _, e, *_ in story(chair.log, "sbp_high")] == ["raised", "cleared"]


def test_worst_value_counts_only_usable_samples_while_the_alarm_holds(kind: EvaluatorKind) -> None:
    chair = grouped(kind, Phase.RECOVERY)
    chair.run(0, 10, spo2=80, quality=SampleQuality.ARTIFACT, **NORMAL)  # before: not counted
    chair.run(10, 30, spo2=89, **NORMAL)  # raised at 25 (15 s at ≤ 90)
    chair.run(30, 35, spo2=70, quality=SampleQuality.ARTIFACT, **NORMAL)  # motion: not a value
    chair.run(35, 40, spo2=75, hr=72, pr=72, pi=0.3)  # perfusion too low: held, not a value
    chair.run(40, 45, spo2=88, **NORMAL)  # a usable new worst
    assert [(t, e, text) for t, e, _, _, _, text in story(chair.log, "spo2_low")] == [
        (25, "raised", "SpO2 89 ≤ 90"),
        (40, "worsened", "SpO2 88 ≤ 90"),
    ]
    (alarm,) = [a for a in chair.engine.active_alarms(KEY) if a.group == "spo2_low"]
    assert alarm.worst_value == 88


def test_at_check_in_low_perfusion_holds_the_worst_value_too(kind: EvaluatorKind) -> None:
    """At check-in the low-signal alarm does not apply, but its gate does: SpO2 held by a
    low perfusion index is not a value, for the alarm's worst as for its conditions."""
    chair = grouped(kind, Phase.CHECKED_IN)
    chair.second(0, spo2=84, hr=72, pr=72, pi=1.5)  # reliable: raised at once
    for t in range(1, 5):
        chair.second(t, spo2=70, hr=72, pr=72, pi=0.3)  # unreliable
    chair.second(5, spo2=83, hr=72, pr=72, pi=0.6)  # reliable again, the index first
    assert [(t, e, text) for t, e, _, _, _, text in story(chair.log, "spo2_low")] == [
        (0, "raised", "SpO2 84 ≤ 85"),
        (5, "worsened", "SpO2 83 ≤ 85"),
    ]


def test_a_backlog_counts_its_values_from_the_raise_on(kind: EvaluatorKind) -> None:
    """A gateway's backlog in one batch gives the alarm the same worst value and transitions
    as the samples one second at a time (36 samples: the engine's large-batch path, against
    its small-batch path one sample at a time)."""
    values = [97] * 30 + [84, 83, 87, 82, 84, 95]
    whole = grouped(kind, Phase.RECOVERY)
    rows = [(KEY, Vital.SPO2, v, float(t)) for t, v in enumerate(values)]
    whole.take(whole.engine.ingest(whole.engine.batch(rows)))
    split = grouped(kind, Phase.RECOVERY)
    for row in rows:
        split.take(split.engine.ingest(split.engine.batch([row])))
    assert story(whole.log, "spo2_low") == story(split.log, "spo2_low")
    assert story(whole.log, "spo2_low") == [
        (30, "raised", "spo2_desat", "crisis", "raised", "SpO2 84 ≤ 85"),
        (31, "worsened", "spo2_desat", "crisis", "raised", "SpO2 83 ≤ 85"),
        # 87 is past 85 + 1 and the ≤ 93 / ≤ 90 tiers wait 15 s: no tier holds; it latched.
        (32, "condition_ended", "spo2_desat", "crisis", "raised", "SpO2 83 ≤ 85"),
        (33, "condition_returned", "spo2_desat", "crisis", "raised", "SpO2 82 ≤ 85"),
        (35, "condition_ended", "spo2_desat", "crisis", "raised", "SpO2 82 ≤ 85"),
    ]


def test_restart_keeps_one_alarm_per_group(kind: EvaluatorKind) -> None:
    chair = grouped(kind)
    chair.run(0, 30, spo2=88, **NORMAL)
    (before,) = [a for a in chair.engine.active_alarms(KEY) if a.group == "spo2_low"]

    engine = AlarmEngine(evaluator=kind)
    engine.add_session(KEY, Phase.INFUSION, 30)
    restored = engine.restore(chair.log)
    assert {a.alarm_id for a in restored} == {a.alarm_id for a in chair.engine.active_alarms()}
    rows = [(KEY, v, x, 31.0) for v, x in (("spo2", 87), ("hr", 72), ("pr", 72), ("pi", 1.5))]
    out = engine.ingest(engine.batch(rows))
    assert [(r.event, r.alarm_id, r.worst_value) for r in out] == [
        (E.WORSENED, before.alarm_id, 87)  # the restored alarm keeps its worst value going
    ]
    out = engine.ingest(engine.batch([(KEY, "spo2", 95, 32.0)]))
    assert [(r.event, r.alarm_id) for r in out if r.group == "spo2_low"] == [
        (E.CONDITION_ENDED, before.alarm_id)
    ]


def test_records_from_before_alarm_groups_become_one_alarm(kind: EvaluatorKind) -> None:
    """Alarms stored one per rule (before groups, or by a protocol that grouped otherwise)
    are taken into the running protocol's groups: the most severe stays, the others clear
    at the next tick, and every tier's condition is known, so the alarm ends when they do."""
    old = Chair(kind, protocol=one_alarm_per_rule())
    old.run(0, 30, spo2=88, **NORMAL)
    stored = [replace(r, group="") for r in old.log]  # as migrated: no group yet
    per_rule = {a.rule_id for a in old.engine.active_alarms(KEY)}
    assert {"spo2_low_medium", "spo2_low_high"} <= per_rule

    engine = AlarmEngine(evaluator=kind)
    engine.add_session(KEY, Phase.INFUSION, 30)
    restored = engine.restore(stored)
    spo2 = [a for a in restored if a.group == "spo2_low"]
    assert [(a.rule_id, a.vital) for a in spo2] == [("spo2_low_high", Vital.SPO2)]
    merged = engine.tick(30)
    assert [(r.event, r.rule_id) for r in merged] == [(E.CLEARED, "spo2_low_medium")]
    rows = [(KEY, v, x, 31.0) for v, x in (("spo2", 88), ("hr", 72), ("pr", 72), ("pi", 1.5))]
    assert engine.ingest(engine.batch(rows)) == []  # no duplicate for a still-held tier
    rows = [(KEY, "spo2", 92, 32.0)]  # ≤ 90 ends, ≤ 93 still holds
    out = [r for r in engine.ingest(engine.batch(rows)) if r.group == "spo2_low"]
    assert [(r.event, r.rule_id) for r in out] == [(E.TIER_CHANGED, "spo2_low_medium")]
    out = [r for r in engine.ingest(engine.batch([(KEY, "spo2", 95, 33.0)]))]
    assert [(r.event, r.group) for r in out if r.group == "spo2_low"] == [
        (E.CONDITION_ENDED, "spo2_low")
    ]


# --- the lifecycle on its own --------------------------------------------------------------


def tier(rule: str, active: bool, time: float, priority: Priority, value: float) -> ConditionChange:
    return ConditionChange(
        "s1", rule, AlarmKind.PHYSIOLOGICAL, priority, active, time, value, 90.0, f"{rule} text",
        group="g", vital=Vital.SPO2, upper=False,
    )  # fmt: skip


def test_changes_of_one_instant_make_one_transition_per_alarm() -> None:
    life = AlarmLifecycle(LifecycleSettings())
    out = life.apply_instant(
        [tier("a", True, 5, Priority.MEDIUM, 88), tier("b", True, 5, Priority.HIGH, 88)]
    )
    assert [(r.event, r.rule_id, r.priority) for r in out] == [(E.RAISED, "b", Priority.HIGH)]
    # The same condition twice in one instant (two samples with one time) is taken in turn.
    again = life.apply_instant([tier("b", False, 6, Priority.HIGH, 95),
                                tier("b", True, 6, Priority.HIGH, 87)])  # fmt: skip
    assert [(r.event, r.rule_id) for r in again] == [
        (E.TIER_CHANGED, "a"),
        (E.TIER_CHANGED, "b"),
    ]
    with pytest.raises(ValueError, match="share its time"):
        life.apply_instant([tier("a", False, 7, Priority.MEDIUM, 95),
                            tier("b", False, 8, Priority.HIGH, 95)])  # fmt: skip


def test_among_tiers_of_one_priority_the_first_listed_is_shown() -> None:
    life = AlarmLifecycle(LifecycleSettings())
    first = replace(tier("sustained", True, 5, Priority.CRISIS, 84), order=3)
    second = replace(tier("desat", True, 5, Priority.CRISIS, 84), order=2)
    (raised,) = life.apply_instant([first, second])
    assert raised.rule_id == "desat"


# --- text -------------------------------------------------------------------------------------


def test_alarm_text_has_the_value_first_then_the_worst_then_the_advice() -> None:
    protocol = default_protocol()
    assert rule_text(protocol.rule("spo2_desat"), 84, 85, worst=82) == "SpO2 84 ≤ 85 (lowest 82)"
    assert rule_text(protocol.rule("spo2_desat"), 82, 85, worst=82) == "SpO2 82 ≤ 85"
    assert (
        rule_text(protocol.rule("sbp_rise_medium"), 172, 168, baseline=138, worst=181)
        == "SBP 172 ≥ 168 (baseline 138 + 30; highest 181)"
    )
    assert (
        rule_text(protocol.rule("sbp_high_high"), 186, 180, worst=190)
        == "SBP 186 ≥ 180 (highest 190): consider pausing infusion"
    )
