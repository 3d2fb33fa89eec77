"""One alarm record: monitor's AlarmRecord, its stored row and its wire form agree."""

from __future__ import annotations

import dataclasses

from sqlalchemy import select

from app.alarms import repository
from app.events import AlarmOut
from app.storage.db import Database
from app.storage.models import Alarm, AlarmTransitionRecord, InfusionSession
from monitor.lifecycle import AlarmLifecycle, AlarmRecord, AlarmTransition, ConditionChange
from monitor.protocol import AlarmKind, LifecycleSettings, Priority
from monitor.vitals import Vital
from tests.conftest import Clinic

SETTINGS = LifecycleSettings(
    latching=frozenset({Priority.HIGH}),
    audio_pause_s=120,
    escalate_after_s={Priority.MEDIUM: 300},
)
# Epoch seconds with microseconds, as the server's clock gives them.
T0 = 1_790_000_000.123456


def test_the_wire_schema_has_exactly_the_record_fields() -> None:
    record = {field.name for field in dataclasses.fields(AlarmRecord)}
    wire = set(AlarmOut.model_fields)
    # The engine's session key is the server's session id; the chair is the server's.
    assert wire == (record - {"session_key"}) | {"session_id", "chair_id"}


def lifecycle_story(session_key: str) -> list[AlarmTransition]:
    """A medium alarm raised, paused, its condition gone and back, acknowledged, cleared;
    and a latching high one whose condition ended, left raised."""
    life = AlarmLifecycle(SETTINGS, protocol_version="test-7")

    def change(rule: str, active: bool, at: float, value: float, priority: Priority) -> None:
        log.extend(
            life.apply(
                ConditionChange(
                    session_key,
                    rule,
                    AlarmKind.PHYSIOLOGICAL,
                    priority,
                    active,
                    T0 + at,
                    value,
                    90.0,
                    f"SpO2 {value:g} ≤ 90",
                )
            )
        )

    log: list[AlarmTransition] = []
    change("spo2_low", True, 0, 88, Priority.MEDIUM)
    log += life.pause_audio(session_key, actor="rn.a", time=T0 + 5)
    change("spo2_high", True, 6, 84, Priority.HIGH)
    change("spo2_high", False, 9, 93, Priority.HIGH)  # latched: stays raised
    change("spo2_low", False, 10, 95, Priority.MEDIUM)  # cleared
    change("spo2_low", True, 20, 87, Priority.MEDIUM)  # a new alarm
    log += life.acknowledge(log[-1].alarm_id, actor="rn.b", time=T0 + 25.5)

    # Two tiers of one blood-pressure alarm: its group, vital and worst value are kept too.
    def tier(rule: str, limit: float, value: float, priority: Priority, at: float) -> None:
        text = f"SBP {value:g} ≥ {limit:g}"
        log.extend(
            life.apply(
                ConditionChange(session_key, rule, AlarmKind.PHYSIOLOGICAL, priority, True,
                                T0 + at, value, limit, text, group="sbp_high",
                                vital=Vital.NIBP_SYS, upper=True)
            )
        )  # fmt: skip

    tier("sbp_high_medium", 160, 172, Priority.MEDIUM, 30)
    tier("sbp_high_crisis", 200, 204, Priority.CRISIS, 330)
    log += life.observe(session_key, "sbp_high", 209, T0 + 630, upper=True)
    return log


def test_the_story_has_a_tiered_alarm_with_its_worst_value() -> None:
    tiered = [t for t in lifecycle_story("5") if t.group == "sbp_high"]
    assert [(t.event.value, t.rule_id, t.priority, t.worst_value) for t in tiered] == [
        ("raised", "sbp_high_medium", Priority.MEDIUM, 172),
        ("tier_changed", "sbp_high_crisis", Priority.CRISIS, 204),
        ("worsened", "sbp_high_crisis", Priority.CRISIS, 209),
    ]
    assert {(t.vital, t.alarm_id) for t in tiered} == {(Vital.NIBP_SYS, tiered[0].alarm_id)}


def test_a_stored_and_reloaded_alarm_is_its_record_on_the_wire(clinic: Clinic) -> None:
    db = Database(clinic.url)
    try:
        with db.session() as session:
            session_id, chair_id = session.execute(
                select(InfusionSession.id, InfusionSession.chair_id).limit(1)
            ).one()
        transitions = lifecycle_story(str(session_id))
        with db.session() as session:
            chairs = repository.store_transitions(session, transitions, {str(session_id): chair_id})
        assert chairs == [chair_id] * len(transitions)

        latest = {t.alarm_id: t for t in transitions}  # each alarm as its last change left it
        with db.session() as session:
            rows = {row.id: row for row in session.scalars(select(Alarm))}
            assert set(rows) == set(latest)
            for alarm_id, transition in latest.items():
                reloaded = rows[alarm_id].record()
                wire = AlarmOut.of(transition, chair_id).model_dump(mode="json")
                assert AlarmOut.of(reloaded, chair_id).model_dump(mode="json") == wire
                assert repository.alarm_out(rows[alarm_id]).model_dump(mode="json") == wire
                # Field for field, not only through the wire (times to the microsecond).
                for field in dataclasses.fields(AlarmRecord):
                    mine, stored = getattr(transition, field.name), getattr(reloaded, field.name)
                    if isinstance(mine, float) and field.name.endswith("_at"):
                        assert abs(mine - stored) < 1e-6, field.name
                    else:
                        assert mine == stored, field.name
            # Each stored transition keeps the tier it showed: the history of tier changes.
            stored = session.execute(
                select(AlarmTransitionRecord.rule_id).order_by(AlarmTransitionRecord.id)
            ).scalars()
            assert list(stored) == [t.rule_id for t in transitions]
            # The restored records are the engine's own alarms again.
            life = AlarmLifecycle(SETTINGS)
            restored = life.restore(repository.active_alarm_records(session))
            assert {a.alarm_id for a in restored} == {
                t.alarm_id for t in latest.values() if t.state.value != "cleared"
            }
    finally:
        db.close()


def test_every_wire_field_comes_from_the_record() -> None:
    (raised,) = AlarmLifecycle(SETTINGS, protocol_version="v2").apply(
        ConditionChange("41", "hr_high", AlarmKind.PHYSIOLOGICAL, Priority.MEDIUM, True,
                        T0, 131.0, 130.0, "HR 131 ≥ 130")
    )  # fmt: skip
    wire = AlarmOut.of(raised, chair_id=7).model_dump(mode="json")
    assert wire == {
        "alarm_id": raised.alarm_id,
        "session_id": 41,
        "chair_id": 7,
        "rule_id": "hr_high",
        "kind": "physiological",
        "priority": "medium",
        "state": "raised",
        "text": "HR 131 ≥ 130",
        "value": 131.0,
        "limit": 130.0,
        "condition_active": True,
        "audio_paused": False,
        "raised_at": "2026-09-21T14:13:20.123456Z",
        "acknowledged_at": None,
        "acknowledged_by": None,
        "cleared_at": None,
        "escalate_at": "2026-09-21T14:18:20.123456Z",
        "protocol_version": "v2",
        "group": "hr_high",  # a condition without a group is an alarm of its own
        "vital": None,
        "worst_value": None,
    }
