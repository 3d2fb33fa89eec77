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
from dataclasses import dataclass, fields, replace

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


@dataclass(frozen=True, slots=True, kw_only=True)
class AlarmRecord:
    """One alarm as it stands: the single definition of an alarm's fields.

    The lifecycle keeps its live alarms as these, every `AlarmTransition` is one (plus what
    happened), the server stores it (`app.storage.models.Alarm` maps to and from it), and
    the API and the screens show it (`app.events.AlarmOut` is derived from it). Times are
    epoch seconds.
    """

    alarm_id: str
    session_key: str
    rule_id: str
    kind: AlarmKind
    priority: Priority  # the current one: escalation raises it
    state: AlarmState
    text: str  # as raised ("SpO2 86 ≤ 90")
    value: float | None  # the value that raised the alarm, or brought its condition back
    limit: float | None
    condition_active: bool
    audio_paused: bool
    raised_at: float
    acknowledged_at: float | None = None
    acknowledged_by: str | None = None
    cleared_at: float | None = None
    escalate_at: float | None = None  # when an unacknowledged alarm goes up one priority
    protocol_version: str = ""

    @property
    def audible(self) -> bool:
        return self.state is AlarmState.RAISED and not self.audio_paused

    @property
    def iec_priority(self) -> Priority:
        """The IEC 60601-1-8 priority to display: crisis is shown as high."""
        return Priority.HIGH if self.priority is Priority.CRISIS else self.priority

    @property
    def alarm(self) -> AlarmRecord:
        """This alarm's record alone (a transition without what happened)."""
        if type(self) is AlarmRecord:
            return self
        return AlarmRecord(**{name: getattr(self, name) for name in _RECORD_FIELDS})


@dataclass(frozen=True, slots=True, kw_only=True)
class AlarmTransition(AlarmRecord):
    """One change to one alarm: the record the server stores and broadcasts.

    It is the alarm's record just after the change, plus what happened (`event`), when, and
    who did it. `reading` is the value at this change: for CLEARED and CONDITION_ENDED the
    value that ended the condition, otherwise the alarm's own `value`. A list of
    transitions (or of records) is what `AlarmLifecycle.restore` rebuilds alarms from.
    """

    event: TransitionEvent
    time: float
    actor: str | None = None
    reading: float | None = None


_RECORD_FIELDS = tuple(f.name for f in fields(AlarmRecord))


IdFactory = Callable[[str, str, float], str]


class AlarmLifecycle:
    """The live alarms of every session, and the rules for how they change.

    Each live alarm is held as its `AlarmRecord`, replaced (never mutated) on every change;
    `audio_paused` is a session's state, so it is filled in when a record is handed out.
    """

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
        self._alarms: dict[str, AlarmRecord] = {}
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
                alarm = self._put(
                    replace(alarm, condition_active=True, value=change.value, limit=change.limit)
                )
                resumed = self._break_through(alarm.session_key, change.time, alarm)
                return [
                    self._record(alarm, TransitionEvent.CONDITION_RETURNED, change.time),
                    *resumed,
                ]
            return self._raise(change)
        if alarm is None:
            return []
        alarm = self._put(replace(alarm, condition_active=False))
        if alarm.state is AlarmState.RAISED and self._latches(alarm):
            return [
                self._record(
                    alarm, TransitionEvent.CONDITION_ENDED, change.time, reading=change.value
                )
            ]
        return [self._clear(alarm, change.time, None, reading=change.value)]

    def acknowledge(self, alarm_id: str, *, actor: str, time: float) -> list[AlarmTransition]:
        """A person acknowledged an alarm; a latched alarm whose condition ended clears."""
        alarm = self._alarms.get(alarm_id)
        if alarm is None or alarm.state is not AlarmState.RAISED:
            return []
        alarm = self._put(
            replace(
                alarm,
                state=AlarmState.ACKNOWLEDGED,
                acknowledged_at=time,
                acknowledged_by=actor,
                escalate_at=None,
            )
        )
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
            alarm = self._schedule(replace(alarm, priority=alarm.priority.raised()), now)
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

    def active(self, session_key: str | None = None) -> list[AlarmRecord]:
        """Live alarms, highest priority first, then oldest first."""
        if session_key is None:
            alarms = list(self._alarms.values())
        else:
            alarms = [self._alarms[i] for i in self._by_session.get(session_key, {})]
        alarms.sort(key=lambda a: (-a.priority.rank, a.raised_at, a.alarm_id))
        return [self._as_seen(a) for a in alarms]

    def alarm(self, alarm_id: str) -> AlarmRecord | None:
        alarm = self._alarms.get(alarm_id)
        return None if alarm is None else self._as_seen(alarm)

    def audio_paused_until(self, session_key: str) -> float | None:
        return self._paused.get(session_key)

    def restore(self, records: Iterable[AlarmRecord]) -> list[AlarmRecord]:
        """Rebuild live alarms from stored records (after a restart).

        Give the records in the order they were made (or just the latest per alarm); alarms
        whose latest record is CLEARED are ignored. Audio pauses are not restored: after a
        restart every raised alarm sounds again, which errs on the safe side.
        """
        latest: dict[str, AlarmRecord] = {}
        for record in records:
            latest[record.alarm_id] = record
        restored = []
        for record in sorted(latest.values(), key=lambda r: (r.raised_at, r.alarm_id)):
            if record.state is AlarmState.CLEARED or record.alarm_id in self._alarms:
                continue
            previous = self._by_condition.get((record.session_key, record.rule_id))
            if previous is not None:
                self._forget(self._alarms[previous])  # keep the most recently raised
            raised = record.state is AlarmState.RAISED
            alarm = replace(
                record.alarm,
                audio_paused=False,
                acknowledged_by=None if raised else record.acknowledged_by,
                acknowledged_at=None if raised else record.acknowledged_at,
                escalate_at=record.escalate_at if raised else None,
            )
            self._register(alarm)
            if alarm.escalate_at is not None:
                self._push(alarm)
            restored.append(alarm)
        return [self._as_seen(a) for a in restored]

    # --- internals ------------------------------------------------------------------------

    def _latches(self, alarm: AlarmRecord) -> bool:
        return alarm.kind is AlarmKind.PHYSIOLOGICAL and alarm.priority in self.settings.latching

    def _raised(self, session_key: str) -> list[AlarmRecord]:
        return [
            self._alarms[i]
            for i in self._by_session.get(session_key, {})
            if self._alarms[i].state is AlarmState.RAISED
        ]

    def _raise(self, change: ConditionChange) -> list[AlarmTransition]:
        alarm = AlarmRecord(
            alarm_id=self._new_id(change.session_key, change.rule_id, change.time),
            session_key=change.session_key,
            rule_id=change.rule_id,
            kind=change.kind,
            priority=change.priority,
            state=AlarmState.RAISED,
            text=change.text,
            value=change.value,
            limit=change.limit,
            condition_active=True,
            audio_paused=False,
            raised_at=change.time,
            protocol_version=self.protocol_version,
        )
        self._register(alarm)
        alarm = self._schedule(alarm, change.time)
        resumed = self._break_through(change.session_key, change.time, alarm)
        return [self._record(alarm, TransitionEvent.RAISED, change.time), *resumed]

    def _break_through(
        self, session_key: str, time: float, cause: AlarmRecord
    ) -> list[AlarmTransition]:
        """A new or higher alarm ends the session's audio pause."""
        if self._paused.pop(session_key, None) is None:
            return []
        return [
            self._record(a, TransitionEvent.AUDIO_RESUMED, time)
            for a in self._raised(session_key)
            if a.alarm_id != cause.alarm_id
        ]

    def _clear(
        self, alarm: AlarmRecord, time: float, actor: str | None, reading: float | None = None
    ) -> AlarmTransition:
        alarm = replace(
            alarm,
            state=AlarmState.CLEARED,
            condition_active=False,
            cleared_at=time,
            escalate_at=None,
        )
        record = self._record(alarm, TransitionEvent.CLEARED, time, actor=actor, reading=reading)
        self._forget(alarm)
        return record

    def _put(self, alarm: AlarmRecord) -> AlarmRecord:
        """Keep `alarm` as the current record of its id."""
        self._alarms[alarm.alarm_id] = alarm
        return alarm

    def _register(self, alarm: AlarmRecord) -> None:
        self._put(alarm)
        self._by_condition[(alarm.session_key, alarm.rule_id)] = alarm.alarm_id
        self._by_session.setdefault(alarm.session_key, {})[alarm.alarm_id] = None

    def _forget(self, alarm: AlarmRecord) -> None:
        self._alarms.pop(alarm.alarm_id, None)
        key = (alarm.session_key, alarm.rule_id)
        if self._by_condition.get(key) == alarm.alarm_id:
            del self._by_condition[key]
        self._by_session.get(alarm.session_key, {}).pop(alarm.alarm_id, None)

    def _schedule(self, alarm: AlarmRecord, now: float) -> AlarmRecord:
        """`alarm` with its next escalation time (none at the top), kept and queued."""
        after = self.settings.escalate_after_s.get(alarm.priority)
        if after is None or alarm.priority is Priority.CRISIS:
            return self._put(replace(alarm, escalate_at=None))
        alarm = self._put(replace(alarm, escalate_at=now + after))
        self._push(alarm)
        return alarm

    def _push(self, alarm: AlarmRecord) -> None:
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

    def _as_seen(self, alarm: AlarmRecord) -> AlarmRecord:
        """`alarm` with its session's audio pause filled in."""
        paused = alarm.state is AlarmState.RAISED and alarm.session_key in self._paused
        return alarm if alarm.audio_paused is paused else replace(alarm, audio_paused=paused)

    def _record(
        self,
        alarm: AlarmRecord,
        event: TransitionEvent,
        time: float,
        *,
        actor: str | None = None,
        reading: float | None = None,
    ) -> AlarmTransition:
        seen = self._as_seen(alarm)
        return AlarmTransition(
            **{name: getattr(seen, name) for name in _RECORD_FIELDS},
            event=event,
            time=time,
            actor=actor,
            reading=seen.value if reading is None else reading,
        )
