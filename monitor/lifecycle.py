"""Alarm lifecycle: raised → acknowledged → cleared, with latching, audio pause and escalation.

Pure and clock-free: every input carries its time and every change comes back as an
`AlarmTransition` record for the server to store and broadcast. Inputs are condition
changes (an alarm condition became active or inactive), values of the alarming vital, a
person's actions (acknowledge, audio pause) and ticks (escalation, end of a pause).

* A session has one alarm per *alarm group*: the conditions of a group's rules are its
  *tiers* (SpO2 ≤ 93 / ≤ 90 / ≤ 85). The alarm's rule, limit and text follow the worst tier
  that holds (highest priority; among equal priorities the rule listed first), its priority
  too, except that an unacknowledged alarm keeps a priority that escalation or a latching
  tier gave it. A change of the worst tier is a TIER_CHANGED transition; a value past the
  worst reached so far is WORSENED. Changes at one instant make one transition per alarm.
* The first tier to hold raises the alarm. When the last one ends the alarm clears, unless
  it is a latching physiological alarm (the protocol's `latching` priorities, judged on the
  worst priority it kept) that nobody has acknowledged yet: that one stays raised
  (CONDITION_ENDED) until acknowledged. An ended alarm shows the worst it reached: its worst
  tier, priority and value.
* A worse tier (a higher priority than the one acknowledged) breaks through an
  acknowledgement: the alarm is raised again.
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
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, fields, replace

from monitor.protocol import AlarmKind, LifecycleSettings, Priority
from monitor.vitals import Vital


class AlarmState(enum.StrEnum):
    RAISED = "raised"
    ACKNOWLEDGED = "acknowledged"
    CLEARED = "cleared"


class TransitionEvent(enum.StrEnum):
    """What happened; the alarm's resulting state is `AlarmTransition.state`."""

    RAISED = "raised"
    TIER_CHANGED = "tier_changed"  # another tier of the alarm's group is now the worst
    WORSENED = "worsened"  # the value went past the worst the alarm had reached
    CONDITION_ENDED = "condition_ended"  # latched: stays raised until acknowledged
    CONDITION_RETURNED = "condition_returned"  # the condition of a latched alarm is back
    ACKNOWLEDGED = "acknowledged"
    ESCALATED = "escalated"
    AUDIO_PAUSED = "audio_paused"
    AUDIO_RESUMED = "audio_resumed"
    CLEARED = "cleared"


@dataclass(frozen=True, slots=True)
class ConditionChange:
    """Input: an alarm condition of one session became active or inactive.

    `group` is the alarm the condition is a tier of (empty: an alarm of its own, named by
    `rule_id`). `upper` says which way is worse for the worst value (True: higher, False:
    lower, None: no worst value is kept). Among tiers of one priority the lower `order`
    is shown.
    """

    session_key: str
    rule_id: str
    kind: AlarmKind
    priority: Priority
    active: bool
    time: float
    value: float | None
    limit: float | None
    text: str
    group: str = ""
    vital: Vital | None = None
    upper: bool | None = None
    order: int = 0

    @property
    def alarm_group(self) -> str:
        return self.group or self.rule_id


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
    text: str  # the worst tier, its latest value and the worst one ("SpO2 84 ≤ 85 (lowest 82)")
    value: float | None  # its latest value: at the raise, a tier change, a new worst value
    limit: float | None  # the worst tier's limit
    condition_active: bool
    audio_paused: bool
    raised_at: float
    acknowledged_at: float | None = None
    acknowledged_by: str | None = None
    cleared_at: float | None = None
    escalate_at: float | None = None  # when an unacknowledged alarm goes up one priority
    protocol_version: str = ""
    group: str = ""  # its alarm group: one alarm per session and group ("" before groups)
    vital: Vital | None = None  # the vital its tiers watch, for a physiological rule alarm
    worst_value: float | None = None  # the worst value reached while its condition held

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
    value that ended the condition, otherwise the alarm's own `value`. `rule_id` is the
    tier shown after the change, so the history keeps every tier change. A list of
    transitions (or of records) is what `AlarmLifecycle.restore` rebuilds alarms from.
    """

    event: TransitionEvent
    time: float
    actor: str | None = None
    reading: float | None = None


_RECORD_FIELDS = tuple(f.name for f in fields(AlarmRecord))


IdFactory = Callable[[str, str, float], str]  # (session key, alarm group, time raised)

Describe = Callable[[str, str, float | None, float | None, float | None], str | None]
"""(session key, rule id, value, limit, worst value) → the alarm text for that tier, or
None to keep the text its condition came with."""


@dataclass(frozen=True, slots=True)
class _Tier:
    """A tier of an alarm whose condition holds (or held: the peak)."""

    rule_id: str
    priority: Priority
    order: int
    limit: float | None
    text: str  # as its condition came with it

    @property
    def rank(self) -> tuple[int, int]:
        return (self.priority.rank, -self.order)

    @classmethod
    def of(cls, change: ConditionChange) -> _Tier:
        return cls(change.rule_id, change.priority, change.order, change.limit, change.text)


@dataclass(slots=True)
class _Episode:
    """What the lifecycle keeps about a live alarm beyond its record."""

    tiers: dict[str, _Tier]  # the tiers whose condition holds now
    peak: _Tier  # the worst tier reached
    peak_priority: Priority  # the highest priority the alarm has had
    floor: Priority | None = None  # while unacknowledged: from escalation, ended latching tiers
    acknowledged_priority: Priority | None = None  # a higher one breaks through the ack
    upper: bool | None = None  # which way is worse for the worst value

    def top(self) -> _Tier:
        return max(self.tiers.values(), key=lambda tier: tier.rank)


def _higher(priority: Priority, other: Priority | None) -> Priority:
    return priority if other is None or priority.rank >= other.rank else other


def _worse(value: float | None, than: float | None, upper: bool | None) -> bool:
    """Whether `value` is past the worst value `than` (any value is, when there is none)."""
    if value is None or upper is None:
        return False
    if than is None:
        return True
    return value > than if upper else value < than


class AlarmLifecycle:
    """The live alarms of every session, and the rules for how they change.

    Each live alarm is held as its `AlarmRecord`, replaced (never mutated) on every change;
    `audio_paused` is a session's state, so it is filled in when a record is handed out.
    `describe` renders a tier's text with another value (the engine passes the protocol's
    text); without it an alarm shows the text its tier's condition came with.
    """

    def __init__(
        self,
        settings: LifecycleSettings,
        *,
        protocol_version: str = "",
        id_factory: IdFactory | None = None,
        describe: Describe | None = None,
    ) -> None:
        self.settings = settings
        self.protocol_version = protocol_version
        self._id_factory = id_factory
        self._describe = describe
        self._alarms: dict[str, AlarmRecord] = {}
        self._episodes: dict[str, _Episode] = {}
        self._by_group: dict[tuple[str, str], str] = {}
        self._by_session: dict[str, dict[str, None]] = {}  # ordered set of alarm ids
        self._paused: dict[str, float] = {}  # session → audio paused until
        self._escalations: list[tuple[float, int, str]] = []
        self._seq = 0
        self._superseded: list[AlarmRecord] = []  # restored, merged into another: to clear
        self._watching: dict[str, int] = {}  # session → its alarms that keep a worst value
        # Per session and group: the last id base issued and its suffix count.
        self._last_base: dict[str, dict[str, tuple[str, int]]] = {}

    # --- inputs ---------------------------------------------------------------------------

    def apply(self, change: ConditionChange) -> list[AlarmTransition]:
        """A condition became active or inactive."""
        return self.apply_instant([change])

    def apply_instant(self, changes: Sequence[ConditionChange]) -> list[AlarmTransition]:
        """Conditions that changed at one instant, in the order they changed.

        The tiers of one alarm that change together make one transition, as they left it:
        SpO2 84 raising the ≤ 93, ≤ 90 and ≤ 85 tiers at once is one RAISED at ≤ 85. A
        condition that changes twice in the instant (two samples with the same time) is
        taken one change at a time, as it would be if the samples came in two batches.
        """
        if not changes:
            return []
        time = changes[0].time
        if any(change.time != time for change in changes):
            raise ValueError("changes of one instant must share its time")
        by_alarm: dict[tuple[str, str], list[ConditionChange]] = {}
        for change in changes:
            by_alarm.setdefault((change.session_key, change.alarm_group), []).append(change)
        out: list[AlarmTransition] = []
        for key, group_changes in by_alarm.items():
            run: list[ConditionChange] = []
            for change in group_changes:
                if any(c.rule_id == change.rule_id for c in run):
                    out += self._apply_group(key, run, time)
                    run = []
                run.append(change)
            out += self._apply_group(key, run, time)
        return out

    def observe(
        self, session_key: str, group: str, value: float, time: float, *, upper: bool
    ) -> list[AlarmTransition]:
        """A usable value of the vital an alarm watches: past the worst value reached while
        its condition holds, it is the alarm's new worst (WORSENED)."""
        alarm_id = self._by_group.get((session_key, group))
        if alarm_id is None:
            return []
        alarm, episode = self._alarms[alarm_id], self._episodes[alarm_id]
        if episode.upper is None:
            episode.upper = upper
        if not (alarm.condition_active and episode.tiers):
            return []
        if not _worse(value, alarm.worst_value, episode.upper):
            return []
        top = episode.top()
        alarm = self._put(
            replace(
                alarm,
                value=value,
                worst_value=value,
                text=self._text(session_key, top, value, value),
            )
        )
        return [self._record(alarm, TransitionEvent.WORSENED, time)]

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
        episode = self._episodes[alarm_id]
        # From now on the priority follows the tiers alone (from the next tier change), and
        # only a priority above this one raises the alarm again.
        episode.floor = None
        episode.acknowledged_priority = alarm.priority
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
        """Escalate alarms left unacknowledged too long; end audio pauses that ran out; clear
        restored alarms merged into another of their group."""
        out = [self._clear(record, now, None) for record in self._superseded]
        self._superseded = []
        while self._escalations and self._escalations[0][0] <= now:
            due, _, alarm_id = heapq.heappop(self._escalations)
            alarm = self._alarms.get(alarm_id)
            if alarm is None or alarm.state is not AlarmState.RAISED or alarm.escalate_at != due:
                continue  # acknowledged, cleared or rescheduled since
            priority = alarm.priority.raised()
            episode = self._episodes[alarm_id]
            episode.floor = _higher(priority, episode.floor)
            episode.peak_priority = _higher(priority, episode.peak_priority)
            alarm = self._schedule(replace(alarm, priority=priority), now)
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

    def watching_values(self) -> Collection[str]:
        """Sessions with an alarm whose condition holds on a vital (its worst value is kept);
        kept up to date as alarms change, so asking costs nothing on the hot path."""
        return self._watching.keys()

    def restore(self, records: Iterable[AlarmRecord]) -> list[AlarmRecord]:
        """Rebuild live alarms from stored records (after a restart).

        Give the records in the order they were made (or just the latest per alarm); alarms
        whose latest record is CLEARED are ignored. Audio pauses are not restored: after a
        restart every raised alarm sounds again, which errs on the safe side. A restored
        alarm knows the tier its record shows, at the record's priority; lower tiers that
        still hold join it as their conditions are seen again.

        Records of one session and alarm group (stored before alarm groups, or under a
        protocol that grouped its rules otherwise) become one alarm: the most severe one,
        with the others' conditions as its tiers. The others are cleared at the next tick,
        which the server stores like any transition, so no screen keeps them.
        """
        latest: dict[str, AlarmRecord] = {}
        for record in records:
            latest[record.alarm_id] = record
        by_group: dict[tuple[str, str], list[AlarmRecord]] = {}
        for record in sorted(latest.values(), key=lambda r: (r.raised_at, r.alarm_id)):
            if record.state is AlarmState.CLEARED or record.alarm_id in self._alarms:
                continue
            record = replace(record.alarm, group=record.group or record.rule_id)
            by_group.setdefault((record.session_key, record.group), []).append(record)
        restored = []
        for key, same in by_group.items():
            previous = self._by_group.get(key)
            if previous is not None:
                self._forget(self._alarms[previous])  # the stored records stand
            record = max(
                same,
                key=lambda r: (r.priority.rank, r.state is AlarmState.RAISED, r.raised_at),
            )
            self._superseded += [r for r in same if r is not record]
            raised = record.state is AlarmState.RAISED
            alarm = replace(
                record,
                audio_paused=False,
                acknowledged_by=None if raised else record.acknowledged_by,
                acknowledged_at=None if raised else record.acknowledged_at,
                escalate_at=record.escalate_at if raised else None,
                condition_active=any(r.condition_active for r in same),
            )
            tiers = {
                r.rule_id: _Tier(r.rule_id, r.priority, 0, r.limit, r.text)
                for r in same
                if r.condition_active
            }
            peak = _Tier(record.rule_id, record.priority, 0, record.limit, record.text)
            episode = _Episode(
                tiers=tiers,
                peak=peak,
                peak_priority=record.priority,
                floor=record.priority if raised else None,
                acknowledged_priority=None if raised else record.priority,
            )
            self._register(alarm, episode)
            if alarm.escalate_at is not None:
                self._push(alarm)
            restored.append(alarm)
        return [self._as_seen(a) for a in restored]

    def tier_rules(self, alarm_id: str) -> list[str]:
        """The rules whose conditions hold for a live alarm (its tiers)."""
        episode = self._episodes.get(alarm_id)
        return list(episode.tiers) if episode is not None else []

    # --- internals ------------------------------------------------------------------------

    def _apply_group(
        self, key: tuple[str, str], changes: list[ConditionChange], time: float
    ) -> list[AlarmTransition]:
        """The changes of one instant to the tiers of one alarm (existing or not)."""
        alarm_id = self._by_group.get(key)
        before = self._alarms.get(alarm_id) if alarm_id is not None else None
        first = changes[0]
        if before is not None:
            episode = self._episodes[before.alarm_id]
            value, worst = before.value, before.worst_value
        else:
            episode = _Episode(tiers={}, peak=_Tier.of(first), peak_priority=first.priority)
            value, worst = None, None
        # A latching tier that ends while nobody has acknowledged the alarm keeps its priority.
        unacknowledged = before is not None and before.state is AlarmState.RAISED
        for change in changes:
            if change.upper is not None:
                episode.upper = change.upper
            if change.value is not None:
                value = change.value
            if change.active:
                if change.rule_id in episode.tiers:
                    continue  # already known (e.g. restored after a restart)
                tier = _Tier.of(change)
                episode.tiers[change.rule_id] = tier
                if tier.rank > episode.peak.rank:
                    episode.peak = tier
                if _worse(change.value, worst, episode.upper):
                    worst = change.value
            else:
                ended = episode.tiers.pop(change.rule_id, None)
                if ended and unacknowledged and self._latches(change.kind, ended.priority):
                    episode.floor = _higher(ended.priority, episode.floor)
        if before is None:
            return self._raise(key, first, episode, value, worst, time) if episode.tiers else []
        if not episode.tiers:
            if not before.condition_active:
                return []
            return self._end(before, episode, worst, value, time)
        after = self._shown(before, episode, value, worst)
        if not before.condition_active:
            after = self._reschedule(before, after, time)
            resumed = self._break_through(after.session_key, time, after)
            return [self._record(after, TransitionEvent.CONDITION_RETURNED, time), *resumed]
        shown_before = (before.rule_id, before.priority, before.limit)
        if (after.rule_id, after.priority, after.limit) != shown_before:
            return self._change_tier(before, after, episode, time)
        if after.worst_value != before.worst_value:
            after = self._put(after)
            return [self._record(after, TransitionEvent.WORSENED, time)]
        return []  # a lower tier came or went: the alarm shows the same

    def _shown(
        self, alarm: AlarmRecord, episode: _Episode, value: float | None, worst: float | None
    ) -> AlarmRecord:
        """`alarm` as its tiers make it: the worst that holds, at least at its floor."""
        top = episode.top()
        return replace(
            alarm,
            rule_id=top.rule_id,
            priority=_higher(top.priority, episode.floor),
            limit=top.limit,
            value=value,
            worst_value=worst,
            text=self._text(alarm.session_key, top, value, worst),
            condition_active=True,
        )

    def _text(self, session_key: str, tier: _Tier, value: float | None, worst: float | None) -> str:
        if self._describe is not None:
            text = self._describe(session_key, tier.rule_id, value, tier.limit, worst)
            if text is not None:
                return text
        return tier.text

    def _change_tier(
        self, before: AlarmRecord, after: AlarmRecord, episode: _Episode, time: float
    ) -> list[AlarmTransition]:
        episode.peak_priority = _higher(after.priority, episode.peak_priority)
        acknowledged = episode.acknowledged_priority
        if (
            before.state is AlarmState.ACKNOWLEDGED
            and acknowledged is not None
            and after.priority.rank > acknowledged.rank
        ):
            # A worse tier than the one acknowledged: the alarm is raised again.
            episode.acknowledged_priority = None
            after = self._schedule(
                replace(after, state=AlarmState.RAISED, acknowledged_at=None, acknowledged_by=None),
                time,
            )
            resumed = self._break_through(after.session_key, time, after)
            return [self._record(after, TransitionEvent.TIER_CHANGED, time), *resumed]
        after = self._reschedule(before, after, time)
        resumed = []
        if after.state is AlarmState.RAISED and after.priority.rank > before.priority.rank:
            resumed = self._break_through(after.session_key, time, after)
        return [self._record(after, TransitionEvent.TIER_CHANGED, time), *resumed]

    def _reschedule(self, before: AlarmRecord, after: AlarmRecord, time: float) -> AlarmRecord:
        """Keep `after`; a raised alarm whose priority changed escalates on the new one's time."""
        if after.state is AlarmState.RAISED and after.priority is not before.priority:
            return self._schedule(after, time)
        return self._put(after)

    def _end(
        self,
        alarm: AlarmRecord,
        episode: _Episode,
        worst: float | None,
        reading: float | None,
        time: float,
    ) -> list[AlarmTransition]:
        """The last tier ended: the alarm latches or clears, showing the worst it reached."""
        latches = alarm.state is AlarmState.RAISED and self._latches(
            alarm.kind, _higher(alarm.priority, episode.floor)
        )
        peak = episode.peak
        value = worst if worst is not None else alarm.value
        alarm = self._put(
            replace(
                alarm,
                condition_active=False,
                rule_id=peak.rule_id,
                limit=peak.limit,
                priority=_higher(alarm.priority, episode.peak_priority),
                value=value,
                worst_value=worst,
                text=self._text(alarm.session_key, peak, value, worst),
            )
        )
        if latches:
            return [self._record(alarm, TransitionEvent.CONDITION_ENDED, time, reading=reading)]
        return [self._clear(alarm, time, None, reading=reading)]

    def _latches(self, kind: AlarmKind, priority: Priority) -> bool:
        return kind is AlarmKind.PHYSIOLOGICAL and priority in self.settings.latching

    def _raised(self, session_key: str) -> list[AlarmRecord]:
        return [
            self._alarms[i]
            for i in self._by_session.get(session_key, {})
            if self._alarms[i].state is AlarmState.RAISED
        ]

    def _raise(
        self,
        key: tuple[str, str],
        first: ConditionChange,
        episode: _Episode,
        value: float | None,
        worst: float | None,
        time: float,
    ) -> list[AlarmTransition]:
        session_key, group = key
        top = episode.top()
        episode.peak, episode.peak_priority = top, top.priority
        alarm = AlarmRecord(
            alarm_id=self._new_id(session_key, group, time),
            session_key=session_key,
            rule_id=top.rule_id,
            kind=first.kind,
            priority=top.priority,
            state=AlarmState.RAISED,
            text=self._text(session_key, top, value, worst),
            value=value,
            limit=top.limit,
            condition_active=True,
            audio_paused=False,
            raised_at=time,
            protocol_version=self.protocol_version,
            group=group,
            vital=first.vital,
            worst_value=worst,
        )
        self._register(alarm, episode)
        alarm = self._schedule(alarm, time)
        resumed = self._break_through(session_key, time, alarm)
        return [self._record(alarm, TransitionEvent.RAISED, time), *resumed]

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
        self._watch(self._alarms.get(alarm.alarm_id), -1)
        self._alarms[alarm.alarm_id] = alarm
        self._watch(alarm, +1)
        return alarm

    def _watch(self, alarm: AlarmRecord | None, step: int) -> None:
        """Count the alarms of each session that keep a worst value (`watching_values`)."""
        if alarm is None or not (alarm.condition_active and alarm.vital):
            return
        count = self._watching.get(alarm.session_key, 0) + step
        if count:
            self._watching[alarm.session_key] = count
        else:
            del self._watching[alarm.session_key]

    def _register(self, alarm: AlarmRecord, episode: _Episode) -> None:
        self._put(alarm)
        self._episodes[alarm.alarm_id] = episode
        self._by_group[(alarm.session_key, alarm.group)] = alarm.alarm_id
        self._by_session.setdefault(alarm.session_key, {})[alarm.alarm_id] = None

    def _forget(self, alarm: AlarmRecord) -> None:
        self._watch(self._alarms.pop(alarm.alarm_id, None), -1)
        self._episodes.pop(alarm.alarm_id, None)
        key = (alarm.session_key, alarm.group)
        if self._by_group.get(key) == alarm.alarm_id:
            del self._by_group[key]
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

    def _new_id(self, session_key: str, group: str, time: float) -> str:
        if self._id_factory is not None:
            return self._id_factory(session_key, group, time)
        # Deterministic and unique across restarts: session, alarm group and the time it was
        # raised; a second raise of the same group in the same millisecond gets a suffix.
        base = f"{session_key}:{group}:{round(time * 1000)}"
        issued = self._last_base.setdefault(session_key, {})
        last_base, n = issued.get(group, ("", 0))
        n = n + 1 if base == last_base else 1
        candidate = base if n == 1 else f"{base}.{n}"
        while candidate in self._alarms:
            n += 1
            candidate = f"{base}.{n}"
        issued[group] = (base, n)
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
