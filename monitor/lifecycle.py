"""Alarm lifecycle: raised → acknowledged → cleared, with latching, audio pause and escalation.

Pure and clock-free: every input carries its time and every change comes back as an
`AlarmTransition` record for the server to store and broadcast. Inputs are condition
changes (an alarm condition became active or inactive), a person's actions (acknowledge,
audio pause) and ticks (escalation, end of a pause).

* A condition becoming active raises an alarm. When it ends, the alarm clears, unless it is
  a latching physiological alarm (the protocol's `latching` priorities) that nobody has
  acknowledged yet: that one stays raised (CONDITION_ENDED) until acknowledged.
* Acknowledging silences an alarm for good and stops its escalation; an acknowledged alarm
  clears when its condition ends (at once if it already has).
* Audio pause silences a session's raised alarms for a while (`audio_pause_s`); a new alarm,
  a returning condition or an escalation in that session ends the pause at once.
* An alarm left unacknowledged for `escalate_after_s[priority]` goes up one priority
  (medium → high → crisis), and the timer starts again at the new priority.
"""

from __future__ import annotations

import enum
import heapq
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from monitor.protocol import AlarmKind, LifecycleSettings, Priority


class AlarmState(enum.StrEnum):
    RAISED = "raised"
    ACKNOWLEDGED = "acknowledged"
    CLEARED = "cleared"


class TransitionEvent(enum.StrEnum):
    """What happened; the alarm's resulting state is `AlarmTransition.state`."""

    RAISED = "raised"
    CONDITION_ENDED = "condition_ended"  # latched: stays raised until acknowledged
    CONDITION_RETURNED = "condition_returned"  # the condition of a latched alarm is back
    ACKNOWLEDGED = "acknowledged"
    ESCALATED = "escalated"
    AUDIO_PAUSED = "audio_paused"
    AUDIO_RESUMED = "audio_resumed"
    CLEARED = "cleared"


@dataclass(frozen=True, slots=True)
class ConditionChange:
    """Input: an alarm condition of one session became active or inactive."""

    session_key: str
    rule_id: str
    kind: AlarmKind
    priority: Priority
    active: bool
    time: float
    value: float | None
    limit: float | None
    text: str


@dataclass(frozen=True, slots=True)
class AlarmTransition:
    """One change to one alarm: the record the server stores and broadcasts.

    `text` is the alarm's text as raised ("SpO2 86 ≤ 90"); `value` and `limit` are those at
    this transition. `raised_at` and `escalate_at` let `AlarmLifecycle.restore` rebuild the
    alarm after a restart.
    """

    alarm_id: str
    session_key: str
    rule_id: str
    kind: AlarmKind
    priority: Priority
    event: TransitionEvent
    state: AlarmState
    time: float
    value: float | None
    limit: float | None
    text: str
    actor: str | None
    condition_active: bool
    audio_paused: bool
    raised_at: float
    escalate_at: float | None
    protocol_version: str


@dataclass(frozen=True, slots=True)
class ActiveAlarm:
    """A snapshot of a live (not yet cleared) alarm."""

    alarm_id: str
    session_key: str
    rule_id: str
    kind: AlarmKind
    priority: Priority
    state: AlarmState
    condition_active: bool
    raised_at: float
    value: float | None
    limit: float | None
    text: str
    acknowledged_by: str | None
    audio_paused: bool
    escalate_at: float | None

    @property
    def audible(self) -> bool:
        return self.state is AlarmState.RAISED and not self.audio_paused

    @property
    def iec_priority(self) -> Priority:
        """The IEC 60601-1-8 priority to display: crisis is shown as high."""
        return Priority.HIGH if self.priority is Priority.CRISIS else self.priority


@dataclass
class _Alarm:
    alarm_id: str
    session_key: str
    rule_id: str
    kind: AlarmKind
    priority: Priority
    state: AlarmState
    condition_active: bool
    raised_at: float
    value: float | None
    limit: float | None
    text: str
    acknowledged_by: str | None = None
    escalate_at: float | None = None


IdFactory = Callable[[str, str, float], str]


class AlarmLifecycle:
    """The live alarms of every session, and the rules for how they change."""

    def __init__(
        self,
        settings: LifecycleSettings,
        *,
        protocol_version: str = "",
        id_factory: IdFactory | None = None,
    ) -> None:
        self.settings = settings
        self.protocol_version = protocol_version
        self._id_factory = id_factory
        self._alarms: dict[str, _Alarm] = {}
        self._by_condition: dict[tuple[str, str], str] = {}
        self._by_session: dict[str, dict[str, None]] = {}  # ordered set of alarm ids
        self._paused: dict[str, float] = {}  # session → audio paused until
        self._escalations: list[tuple[float, int, str]] = []
        self._seq = 0
        # Per session and rule: the last id base issued and its suffix count.
        self._last_base: dict[str, dict[str, tuple[str, int]]] = {}

    # --- inputs ---------------------------------------------------------------------------

    def apply(self, change: ConditionChange) -> list[AlarmTransition]:
        """A condition became active or inactive."""
        alarm_id = self._by_condition.get((change.session_key, change.rule_id))
        alarm = self._alarms.get(alarm_id) if alarm_id is not None else None
        if change.active:
            if alarm is not None:
                if alarm.condition_active:
                    return []  # already known (e.g. restored after a restart)
                alarm.condition_active = True
                alarm.value, alarm.limit = change.value, change.limit
                resumed = self._break_through(alarm.session_key, change.time, alarm)
                return [
                    self._record(alarm, TransitionEvent.CONDITION_RETURNED, change.time),
                    *resumed,
                ]
            return self._raise(change)
        if alarm is None:
            return []
        alarm.condition_active = False
        if alarm.state is AlarmState.RAISED and self._latches(alarm):
            return [
                self._record(
                    alarm, TransitionEvent.CONDITION_ENDED, change.time, value=change.value
                )
            ]
        return [self._clear(alarm, change.time, None, value=change.value)]

    def acknowledge(self, alarm_id: str, *, actor: str, time: float) -> list[AlarmTransition]:
        """A person acknowledged an alarm; a latched alarm whose condition ended clears."""
        alarm = self._alarms.get(alarm_id)
        if alarm is None or alarm.state is not AlarmState.RAISED:
            return []
        alarm.state = AlarmState.ACKNOWLEDGED
        alarm.acknowledged_by = actor
        alarm.escalate_at = None
        out = [self._record(alarm, TransitionEvent.ACKNOWLEDGED, time, actor=actor)]
        if not alarm.condition_active:
            out.append(self._clear(alarm, time, actor))
        return out

    def acknowledge_session(
        self, session_key: str, *, actor: str, time: float
    ) -> list[AlarmTransition]:
        """Acknowledge every raised alarm of a session."""
        out: list[AlarmTransition] = []
        for alarm_id in list(self._by_session.get(session_key, {})):
            out += self.acknowledge(alarm_id, actor=actor, time=time)
        return out

    def pause_audio(
        self, session_key: str, *, actor: str, time: float, duration_s: float | None = None
    ) -> list[AlarmTransition]:
        """Silence the session's raised alarms for a while; nothing to pause, no pause."""
        raised = self._raised(session_key)
        if not raised:
            return []
        duration = self.settings.audio_pause_s if duration_s is None else duration_s
        if duration <= 0:
            raise ValueError("an audio pause needs a duration > 0")
        self._paused[session_key] = time + duration
        return [self._record(a, TransitionEvent.AUDIO_PAUSED, time, actor=actor) for a in raised]

    def tick(self, now: float) -> list[AlarmTransition]:
        """Escalate alarms left unacknowledged too long; end audio pauses that ran out."""
        out: list[AlarmTransition] = []
        while self._escalations and self._escalations[0][0] <= now:
            due, _, alarm_id = heapq.heappop(self._escalations)
            alarm = self._alarms.get(alarm_id)
            if alarm is None or alarm.state is not AlarmState.RAISED or alarm.escalate_at != due:
                continue  # acknowledged, cleared or rescheduled since
            alarm.priority = alarm.priority.raised()
            self._schedule(alarm, now)
            resumed = self._break_through(alarm.session_key, now, alarm)
            out += [self._record(alarm, TransitionEvent.ESCALATED, now), *resumed]
        for session_key, until in list(self._paused.items()):
            if until <= now:
                del self._paused[session_key]
                out += [
                    self._record(a, TransitionEvent.AUDIO_RESUMED, now)
                    for a in self._raised(session_key)
                ]
        return out

    def end_session(
        self, session_key: str, time: float, actor: str | None = None
    ) -> list[AlarmTransition]:
        """The session is over (discharged, or removed): clear all its alarms."""
        out = [
            self._clear(self._alarms[alarm_id], time, actor)
            for alarm_id in list(self._by_session.get(session_key, {}))
        ]
        self._paused.pop(session_key, None)
        self._by_session.pop(session_key, None)
        self._last_base.pop(session_key, None)
        return out

    # --- queries and restore --------------------------------------------------------------

    def active(self, session_key: str | None = None) -> list[ActiveAlarm]:
        """Live alarms, highest priority first, then oldest first."""
        if session_key is None:
            alarms = list(self._alarms.values())
        else:
            alarms = [self._alarms[i] for i in self._by_session.get(session_key, {})]
        alarms.sort(key=lambda a: (-a.priority.rank, a.raised_at, a.alarm_id))
        return [self._snapshot(a) for a in alarms]

    def alarm(self, alarm_id: str) -> ActiveAlarm | None:
        alarm = self._alarms.get(alarm_id)
        return None if alarm is None else self._snapshot(alarm)

    def audio_paused_until(self, session_key: str) -> float | None:
        return self._paused.get(session_key)

    def restore(self, records: Iterable[AlarmTransition]) -> list[ActiveAlarm]:
        """Rebuild live alarms from stored records (after a restart).

        Give the records in the order they were made (or just the latest per alarm); alarms
        whose latest record is CLEARED are ignored. Audio pauses are not restored: after a
        restart every raised alarm sounds again, which errs on the safe side.
        """
        latest: dict[str, AlarmTransition] = {}
        for record in records:
            latest[record.alarm_id] = record
        restored = []
        for record in sorted(latest.values(), key=lambda r: (r.raised_at, r.alarm_id)):
            if record.state is AlarmState.CLEARED or record.alarm_id in self._alarms:
                continue
            previous = self._by_condition.get((record.session_key, record.rule_id))
            if previous is not None:
                self._forget(self._alarms[previous])  # keep the most recently raised
            alarm = _Alarm(
                alarm_id=record.alarm_id,
                session_key=record.session_key,
                rule_id=record.rule_id,
                kind=record.kind,
                priority=record.priority,
                state=record.state,
                condition_active=record.condition_active,
                raised_at=record.raised_at,
                value=record.value,
                limit=record.limit,
                text=record.text,
                acknowledged_by=record.actor if record.state is AlarmState.ACKNOWLEDGED else None,
            )
            self._register(alarm)
            if alarm.state is AlarmState.RAISED and record.escalate_at is not None:
                alarm.escalate_at = record.escalate_at
                self._push(alarm)
            restored.append(alarm)
        return [self._snapshot(a) for a in restored]

    # --- internals ------------------------------------------------------------------------

    def _latches(self, alarm: _Alarm) -> bool:
        return alarm.kind is AlarmKind.PHYSIOLOGICAL and alarm.priority in self.settings.latching

    def _raised(self, session_key: str) -> list[_Alarm]:
        return [
            self._alarms[i]
            for i in self._by_session.get(session_key, {})
            if self._alarms[i].state is AlarmState.RAISED
        ]

    def _raise(self, change: ConditionChange) -> list[AlarmTransition]:
        alarm = _Alarm(
            alarm_id=self._new_id(change.session_key, change.rule_id, change.time),
            session_key=change.session_key,
            rule_id=change.rule_id,
            kind=change.kind,
            priority=change.priority,
            state=AlarmState.RAISED,
            condition_active=True,
            raised_at=change.time,
            value=change.value,
            limit=change.limit,
            text=change.text,
        )
        self._register(alarm)
        self._schedule(alarm, change.time)
        resumed = self._break_through(change.session_key, change.time, alarm)
        return [self._record(alarm, TransitionEvent.RAISED, change.time), *resumed]

    def _break_through(self, session_key: str, time: float, cause: _Alarm) -> list[AlarmTransition]:
        """A new or higher alarm ends the session's audio pause."""
        if self._paused.pop(session_key, None) is None:
            return []
        return [
            self._record(a, TransitionEvent.AUDIO_RESUMED, time)
            for a in self._raised(session_key)
            if a is not cause
        ]

    def _clear(
        self, alarm: _Alarm, time: float, actor: str | None, value: float | None = None
    ) -> AlarmTransition:
        alarm.state = AlarmState.CLEARED
        alarm.condition_active = False
        alarm.escalate_at = None
        record = self._record(alarm, TransitionEvent.CLEARED, time, actor=actor, value=value)
        self._forget(alarm)
        return record

    def _register(self, alarm: _Alarm) -> None:
        self._alarms[alarm.alarm_id] = alarm
        self._by_condition[(alarm.session_key, alarm.rule_id)] = alarm.alarm_id
        self._by_session.setdefault(alarm.session_key, {})[alarm.alarm_id] = None

    def _forget(self, alarm: _Alarm) -> None:
        self._alarms.pop(alarm.alarm_id, None)
        key = (alarm.session_key, alarm.rule_id)
        if self._by_condition.get(key) == alarm.alarm_id:
            del self._by_condition[key]
        self._by_session.get(alarm.session_key, {}).pop(alarm.alarm_id, None)

    def _schedule(self, alarm: _Alarm, now: float) -> None:
        after = self.settings.escalate_after_s.get(alarm.priority)
        if after is None or alarm.priority is Priority.CRISIS:
            alarm.escalate_at = None
            return
        alarm.escalate_at = now + after
        self._push(alarm)

    def _push(self, alarm: _Alarm) -> None:
        assert alarm.escalate_at is not None
        self._seq += 1
        heapq.heappush(self._escalations, (alarm.escalate_at, self._seq, alarm.alarm_id))

    def _new_id(self, session_key: str, rule_id: str, time: float) -> str:
        if self._id_factory is not None:
            return self._id_factory(session_key, rule_id, time)
        # Deterministic and unique across restarts: session, rule and the time it was raised;
        # a second raise of the same rule in the same millisecond gets a suffix.
        base = f"{session_key}:{rule_id}:{round(time * 1000)}"
        issued = self._last_base.setdefault(session_key, {})
        last_base, n = issued.get(rule_id, ("", 0))
        n = n + 1 if base == last_base else 1
        candidate = base if n == 1 else f"{base}.{n}"
        while candidate in self._alarms:
            n += 1
            candidate = f"{base}.{n}"
        issued[rule_id] = (base, n)
        return candidate

    def _record(
        self,
        alarm: _Alarm,
        event: TransitionEvent,
        time: float,
        *,
        actor: str | None = None,
        value: float | None = None,
    ) -> AlarmTransition:
        return AlarmTransition(
            alarm_id=alarm.alarm_id,
            session_key=alarm.session_key,
            rule_id=alarm.rule_id,
            kind=alarm.kind,
            priority=alarm.priority,
            event=event,
            state=alarm.state,
            time=time,
            value=alarm.value if value is None else value,
            limit=alarm.limit,
            text=alarm.text,
            actor=actor,
            condition_active=alarm.condition_active,
            audio_paused=alarm.session_key in self._paused and alarm.state is AlarmState.RAISED,
            raised_at=alarm.raised_at,
            escalate_at=alarm.escalate_at,
            protocol_version=self.protocol_version,
        )

    def _snapshot(self, alarm: _Alarm) -> ActiveAlarm:
        return ActiveAlarm(
            alarm_id=alarm.alarm_id,
            session_key=alarm.session_key,
            rule_id=alarm.rule_id,
            kind=alarm.kind,
            priority=alarm.priority,
            state=alarm.state,
            condition_active=alarm.condition_active,
            raised_at=alarm.raised_at,
            value=alarm.value,
            limit=alarm.limit,
            text=alarm.text,
            acknowledged_by=alarm.acknowledged_by,
            audio_paused=alarm.session_key in self._paused and alarm.state is AlarmState.RAISED,
            escalate_at=alarm.escalate_at,
        )
