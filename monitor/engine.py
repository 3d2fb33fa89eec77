"""The alarm engine: what the server calls. Sessions, samples and time in; alarm records out.

`AlarmEngine` ties together the protocol, an evaluator (numpy by default, or the scalar
reference), the combination rule, per-session limit overrides and the alarm lifecycle. It
is deterministic: it never reads a clock, every call carries its time (epoch seconds).

Typical use by the server::

    engine = AlarmEngine(load_protocol(path))
    engine.add_session("42", Phase.CHECKED_IN, time=now)
    batch = SampleBatch.from_arrays(sessions, vitals, values, times, qualities)
    records = engine.ingest(batch)        # store and broadcast each AlarmTransition
    records = engine.tick(now)            # about once a second
    records = engine.acknowledge(alarm_id, actor="rn.smith", time=now)
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any, Literal

import numpy as np

from monitor.alarm_text import rule_text, technical_text
from monitor.combination import CombinationChange, CombinationTracker
from monitor.conditions import (
    VITAL_INDEX,
    VITALS_ORDER,
    ConditionEvent,
    Evaluator,
    SampleBatch,
    event_order,
    sample_usable,
    untrusted_mask,
)
from monitor.evaluator import VectorEvaluator
from monitor.lifecycle import (
    AlarmLifecycle,
    AlarmRecord,
    AlarmTransition,
    ConditionChange,
    IdFactory,
)
from monitor.overrides import LimitOverride, SessionLimits
from monitor.protocol import (
    AlarmKind,
    Phase,
    Priority,
    Protocol,
    TechnicalKind,
    default_protocol,
)
from monitor.reference import ReferenceEvaluator
from monitor.vitals import Vital

# The technical alarm for a device whose link to Vigil is lost (reported by an adapter).
LINK_LOST_RULE = "device_link_lost"
# Technical alarms a device reports about itself (equipment faults): one rule per fault
# code, `device_fault_<code>`, raised and ended by the device's own alerts.
DEVICE_FAULT_PREFIX = "device_fault_"


# Up to this many samples, a batch's values are picked in plain Python (numpy's per-call
# overhead is larger than the work).
_SMALL_BATCH = 32


def _opt(value: float) -> float | None:
    return None if math.isnan(value) else value


class AlarmEngine:
    """Alarm evaluation for many concurrent sessions, keyed by the server's session key."""

    def __init__(
        self,
        protocol: Protocol | None = None,
        *,
        evaluator: Literal["vector", "reference"] = "vector",
        capacity: int = 64,
        id_factory: IdFactory | None = None,
    ) -> None:
        self.protocol = protocol if protocol is not None else default_protocol()
        self._evaluator: Evaluator = (
            VectorEvaluator(self.protocol, capacity)
            if evaluator == "vector"
            else ReferenceEvaluator(self.protocol)
        )
        self._lifecycle = AlarmLifecycle(
            self.protocol.lifecycle,
            protocol_version=self.protocol.version,
            id_factory=id_factory,
            describe=self._describe,
        )
        combination = self.protocol.combination
        self._combination = (
            CombinationTracker(combination, self.protocol.rules) if combination else None
        )
        self._n_rules = len(self.protocol.rules)
        self._index: dict[str, int] = {}
        self._keys: list[str | None] = []
        self._free: list[int] = []
        self._phases: dict[str, Phase] = {}
        self._limits: dict[str, SessionLimits] = {}
        self._init_groups()

    def _init_groups(self) -> None:
        """What the engine needs to keep each alarm's worst value: per vital, the alarm groups
        of its rules and which way is worse, and which of its samples are usable."""
        rules = self.protocol.rules
        self._rule_by_id = {rule.id: rule for rule in rules}
        groups: list[dict[str, bool]] = [{} for _ in VITALS_ORDER]
        for rule in rules:
            groups[VITAL_INDEX[rule.vital]].setdefault(rule.alarm_group, rule.op.is_upper)
        self._groups_of_vital = [tuple(g.items()) for g in groups]
        self._untrusted = np.array(
            [untrusted_mask(self.protocol, vital) for vital in VITALS_ORDER], dtype=np.int64
        )
        self._gated = [vital in self.protocol.gated_vitals for vital in VITALS_ORDER]
        # The low-signal gate, kept from the same samples as the evaluators keep it (in every
        # phase: at check-in the gate holds SpO2 without the technical alarm applying).
        low = self.protocol.technical_check(TechnicalKind.LOW_SIGNAL)
        self._low_signal_id = low.id if low is not None else None
        self._gate: tuple[int, float, float] | None = None  # (vital, limit, hysteresis)
        if low is not None and low.vital is not None:
            self._gate = (VITAL_INDEX[low.vital], low.limit, low.hysteresis)
        self._low_signal: set[int] = set()  # sessions whose gated vitals are held
        watched = [bool(g) for g in groups]
        if self._gate is not None:
            watched[self._gate[0]] = True
        self._watched_vital = np.array(watched, dtype=np.bool_)
        # (time, session, vital, value) of the usable samples of the batch being ingested.
        self._batch_values: list[tuple[float, int, int, float]] = []

    # --- sessions -------------------------------------------------------------------------

    def add_session(self, key: str, phase: Phase, time: float) -> int:
        """Start watching a session; returns its index for `SampleBatch.session`."""
        if key in self._index:
            raise ValueError(f"session {key!r} is already being watched")
        if self._free:
            index = heapq.heappop(self._free)
            self._keys[index] = key
        else:
            index = len(self._keys)
            self._keys.append(key)
        self._index[key] = index
        self._phases[key] = phase
        self._limits[key] = SessionLimits(self.protocol, key)
        self._evaluator.add_session(index, phase, time)
        if self._combination is not None:
            self._combination.add_session(index, phase)
        return index

    def remove_session(self, key: str, time: float) -> list[AlarmTransition]:
        """Stop watching a session (discharged, or closed); its live alarms are cleared."""
        index = self.session_index(key)
        out = self._lifecycle.end_session(key, time)
        self._evaluator.remove_session(index)
        if self._combination is not None:
            self._combination.remove_session(index)
        self._low_signal.discard(index)
        del self._index[key], self._phases[key], self._limits[key]
        self._keys[index] = None
        heapq.heappush(self._free, index)
        return out

    def session_index(self, key: str) -> int:
        try:
            return self._index[key]
        except KeyError:
            raise KeyError(f"session {key!r} is not being watched") from None

    def session_key(self, index: int) -> str:
        key = self._keys[index] if 0 <= index < len(self._keys) else None
        if key is None:
            raise KeyError(f"no session at index {index}")
        return key

    def sessions(self) -> list[str]:
        return list(self._index)

    def phase(self, key: str) -> Phase:
        return self._phases[key]

    def set_phase(self, key: str, phase: Phase, time: float) -> list[AlarmTransition]:
        """The session moved to another phase; rules that no longer apply clear."""
        index = self.session_index(key)
        self._phases[key] = phase
        if self._combination is not None:
            self._combination.set_phase(index, phase)
        out = self._conditions(self._evaluator.set_phase(index, phase, time))
        if self._combination is not None:
            change = self._combination.evaluate(index, time)
            if change is not None:
                out += self._lifecycle.apply(self._combination_change(key, change))
        return out

    def set_baseline(self, key: str, vital: Vital, value: float | None) -> None:
        """Set (or, with None, unset) a baseline instead of the one taken in the baseline
        phase; e.g. to carry it over a server restart."""
        if value is not None and not math.isfinite(value):
            raise ValueError("a baseline must be a finite number")
        self._evaluator.set_baseline(self.session_index(key), vital, value)

    def baseline(self, key: str, vital: Vital) -> float | None:
        return self._evaluator.baseline(self.session_index(key), vital)

    def set_nibp_interval(self, key: str, seconds: float | None) -> None:
        """The NIBP auto interval set on the session's monitor (None: the phase's default);
        the NIBP-stale alarm waits this long plus its grace."""
        if seconds is not None and not (math.isfinite(seconds) and seconds >= 0):
            raise ValueError("an NIBP interval is a number of seconds ≥ 0 (0: no schedule)")
        self._evaluator.set_nibp_interval(self.session_index(key), seconds)

    # --- limits ---------------------------------------------------------------------------

    def override_limit(
        self, key: str, rule_id: str, new_limit: float, *, who: str, why: str, time: float
    ) -> LimitOverride:
        """Change one rule's limit for one session; takes effect from the next sample."""
        record = self._limits[self._known(key)].override(
            rule_id, new_limit, who=who, why=why, time=time
        )
        self._push_limit(key, rule_id)
        return record

    def revert_limit(
        self, key: str, rule_id: str, *, who: str, why: str, time: float
    ) -> LimitOverride:
        """Return a rule to the protocol's limit for this session."""
        record = self._limits[self._known(key)].revert(rule_id, who=who, why=why, time=time)
        self._push_limit(key, rule_id)
        return record

    def restore_override(self, record: LimitOverride) -> None:
        """Re-apply a stored override after a restart, without making a new record."""
        self._limits[self._known(record.session_key)].apply(record)
        self._push_limit(record.session_key, record.rule_id)

    def overrides(self, key: str) -> list[LimitOverride]:
        return list(self._limits[self._known(key)].history)

    def limit(self, key: str, rule_id: str) -> float:
        return self._limits[self._known(key)].limit(rule_id)

    def _push_limit(self, key: str, rule_id: str) -> None:
        self._evaluator.set_limit(
            self._index[key],
            self.protocol.check_index(rule_id),
            self._limits[key].limit(rule_id),
        )

    def _known(self, key: str) -> str:
        self.session_index(key)
        return key

    # --- samples and time -----------------------------------------------------------------

    def batch(self, rows: Iterable[Sequence[Any]]) -> SampleBatch:
        """A batch from (session key, vital, value, time[, quality]) rows; for small batches
        and tests (the server's hot path builds `SampleBatch.from_arrays` with indices)."""
        return SampleBatch.from_rows((self.session_index(row[0]), *row[1:]) for row in rows)

    def ingest(self, batch: SampleBatch) -> list[AlarmTransition]:
        """Evaluate a batch of samples; returns the alarm transitions it caused."""
        events = self._evaluator.ingest(batch)
        self._batch_values = self._observations(batch, events)
        try:
            return self._conditions(events)
        finally:
            self._batch_values = []

    def tick(self, now: float) -> list[AlarmTransition]:
        """Let time pass: technical no-data alarms, escalation, end of audio pauses."""
        out = self._conditions(self._evaluator.tick(now))
        if self._combination is not None:
            for change in self._combination.due(now):
                key = self.session_key(change.session)
                out += self._lifecycle.apply(self._combination_change(key, change))
        return out + self._lifecycle.tick(now)

    def report_nibp_failure(self, key: str, time: float) -> list[AlarmTransition]:
        """A failed NIBP cuff cycle (the device's own technical alarm, or a cycle that ended
        without a reading); consecutive failures raise the NIBP-failed alarm."""
        return self._conditions(self._evaluator.nibp_failure(self.session_index(key), time))

    # --- people ---------------------------------------------------------------------------

    def link_state(
        self, key: str, device: str, *, connected: bool, time: float
    ) -> list[AlarmTransition]:
        """A device's link to Vigil was lost (a technical alarm on its session) or is back.

        Adapters that hold a connection (MLLP, MQTT, websocket) know this at once, before any
        silence window could; devices that only post are covered by the device-silent check.
        """
        self._known(key)
        change = ConditionChange(
            session_key=key,
            rule_id=LINK_LOST_RULE,
            kind=AlarmKind.TECHNICAL,
            priority=Priority.MEDIUM,
            active=not connected,
            time=time,
            value=None,
            limit=None,
            text=f"{device} disconnected",
        )
        return self._lifecycle.apply(change)

    def device_fault(
        self,
        key: str,
        code: str,
        *,
        priority: Priority,
        text: str,
        active: bool,
        time: float,
    ) -> list[AlarmTransition]:
        """A device reported a fault of its own (`active`) or its end: the technical alarm
        `device_fault_<code>` on its session, with the device's words. Like the link alarm
        it lives in the lifecycle only: no sample can raise or end it."""
        self._known(key)
        if priority is Priority.CRISIS:
            raise ValueError("a device fault is a technical alarm: low, medium or high")
        change = ConditionChange(
            session_key=key,
            rule_id=f"{DEVICE_FAULT_PREFIX}{code}",
            kind=AlarmKind.TECHNICAL,
            priority=priority,
            active=active,
            time=time,
            value=None,
            limit=None,
            text=text,
        )
        return self._lifecycle.apply(change)

    def acknowledge(self, alarm_id: str, *, actor: str, time: float) -> list[AlarmTransition]:
        return self._lifecycle.acknowledge(alarm_id, actor=actor, time=time)

    def acknowledge_session(self, key: str, *, actor: str, time: float) -> list[AlarmTransition]:
        return self._lifecycle.acknowledge_session(key, actor=actor, time=time)

    def pause_audio(
        self, key: str, *, actor: str, time: float, duration_s: float | None = None
    ) -> list[AlarmTransition]:
        return self._lifecycle.pause_audio(key, actor=actor, time=time, duration_s=duration_s)

    def audio_paused_until(self, key: str) -> float | None:
        """When the session's audio pause ends (epoch seconds), or None if it is not paused."""
        return self._lifecycle.audio_paused_until(key)

    def active_alarms(self, key: str | None = None) -> list[AlarmRecord]:
        return self._lifecycle.active(key)

    # --- restart --------------------------------------------------------------------------

    def restore(self, records: Iterable[AlarmRecord]) -> list[AlarmRecord]:
        """Reload stored alarms after a restart. Add the sessions (in their current phase)
        first; records of sessions not being watched are ignored. A restored alarm whose
        condition was active is marked active in the evaluator too, so it clears on the
        first sample past its limit instead of raising a duplicate. Records are taken into
        the running protocol's alarm groups (see `AlarmLifecycle.restore`)."""
        known = [self._regrouped(r) for r in records if r.session_key in self._index]
        restored = self._lifecycle.restore(known)
        for alarm in restored:
            if (
                not alarm.condition_active
                or alarm.rule_id == LINK_LOST_RULE
                or alarm.rule_id.startswith(DEVICE_FAULT_PREFIX)
            ):
                # Link and device-fault alarms live in the lifecycle only; their device
                # reports again (reconnects, or says the fault has ended).
                continue
            index = self._index[alarm.session_key]
            for rule_id in self._lifecycle.tier_rules(alarm.alarm_id):
                if rule_id == self._low_signal_id:
                    self._low_signal.add(index)
                check = self.protocol.check_index(rule_id)
                if check == self.protocol.combination_index:
                    if self._combination is not None:
                        self._combination.restore(index, None, alarm.text)
                    continue
                self._evaluator.restore_condition(index, check)
                if check < self._n_rules and self._combination is not None:
                    self._combination.restore(index, check, alarm.text)
        return restored

    def _regrouped(self, record: AlarmRecord) -> AlarmRecord:
        """A stored record under the running protocol's alarm groups (the protocol may have
        changed since it was stored, or it may predate alarm groups)."""
        rule = self._rule_by_id.get(record.rule_id)
        if rule is not None and record.kind is AlarmKind.PHYSIOLOGICAL:
            return replace(record, group=rule.alarm_group, vital=rule.vital)
        return replace(record, group=record.group or record.rule_id)

    # --- condition events → alarm records -------------------------------------------------

    def _describe(
        self,
        key: str,
        rule_id: str,
        value: float | None,
        limit: float | None,
        worst: float | None,
    ) -> str | None:
        """A rule tier's alarm text at `value`, with the worst value reached; None for
        technical and combination alarms, which keep the text they were raised with."""
        rule = self._rule_by_id.get(rule_id)
        if rule is None or value is None or limit is None:
            return None
        baseline = None
        limits = self._limits.get(key)
        if rule.relative_to_baseline and limits is not None:
            baseline = limit - limits.limit(rule.id)
        return rule_text(rule, value, limit, baseline, worst)

    def _observations(
        self, batch: SampleBatch, events: list[ConditionEvent]
    ) -> list[tuple[float, int, int, float]]:
        """(time, session, vital, value) of the batch's usable samples that may be an alarm's
        new worst value: of vitals with rules, in sessions with an alarm whose condition
        holds or a rule condition that changed in this batch; in time order."""
        sessions = {e.session for e in events if e.check < self._n_rules}
        sessions.update(self._index[key] for key in self._lifecycle.watching_values())
        if not sessions or not len(batch):
            return []
        found: list[tuple[float, int, int, float]] = []
        if len(batch) <= _SMALL_BATCH:  # a post's few samples: plain Python is faster
            of_session = batch.session.tolist()
            if sessions.isdisjoint(of_session):
                return []
            for time, session, vital, value, quality in zip(
                batch.time.tolist(),
                of_session,
                batch.vital.tolist(),
                batch.value.tolist(),
                batch.quality.tolist(),
                strict=True,
            ):
                if (
                    session in sessions
                    and self._watched_vital[vital]
                    and math.isfinite(value)
                    and not quality & int(self._untrusted[vital])
                ):
                    found.append((time, session, vital, value))
        else:
            chosen = self._watched_vital[batch.vital] & np.isin(
                batch.session, np.fromiter(sessions, dtype=np.int64, count=len(sessions))
            )
            rows = np.flatnonzero(chosen)
            usable = sample_usable(
                batch.value[rows], batch.quality[rows], self._untrusted[batch.vital[rows]]
            )
            rows = rows[usable]
            found = list(
                zip(
                    batch.time[rows].tolist(),
                    batch.session[rows].tolist(),
                    batch.vital[rows].tolist(),
                    batch.value[rows].tolist(),
                    strict=True,
                )
            )
        # Time order, the gate's vital first at one instant (as the evaluators apply it);
        # stable, so other ties keep the batch's order.
        gate = self._gate[0] if self._gate is not None else -1
        found.sort(key=lambda row: (row[0], row[1], row[2] != gate))
        return found

    def _conditions(self, events: list[ConditionEvent]) -> list[AlarmTransition]:
        """Alarm records for condition events, instant by instant (one session at one time):
        all rule and technical changes of the instant, then the combination once on the state
        after it. The usable samples of the batch being ingested (`_batch_values`) are seen in
        time order, after the conditions that changed at their instant, for worst values."""
        observations = self._batch_values
        events.sort(key=event_order)  # stable: one check's events keep their order
        out: list[AlarmTransition] = []
        seen = 0
        start = 0
        while start < len(events):
            instant = (events[start].time, events[start].session)
            stop = start + 1
            while stop < len(events) and (events[stop].time, events[stop].session) == instant:
                stop += 1
            while seen < len(observations) and observations[seen][:2] < instant:
                out += self._observe(*observations[seen])
                seen += 1
            out += self._instant(events[start:stop])
            start = stop
        for observation in observations[seen:]:
            out += self._observe(*observation)
        return out

    def _instant(self, events: list[ConditionEvent]) -> list[AlarmTransition]:
        """The condition events of one session at one instant (canonical order)."""
        session, time = events[0].session, events[0].time
        key = self.session_key(session)
        combination = self._combination
        changes: list[ConditionChange] = []
        touched = False  # a rule condition of this instant changed
        for event in events:
            if event.check < self._n_rules:
                change = self._rule_change(key, event)
                changes.append(change)
                if combination is not None:
                    combination.set_condition(session, event.check, event.active, change.text)
                    touched = True
            else:
                changes.append(self._technical_change(key, event))
        if touched:
            assert combination is not None
            combo = combination.evaluate(session, time)
            if combo is not None:
                changes.append(self._combination_change(key, combo))
        return self._lifecycle.apply_instant(changes)

    def _observe(
        self, time: float, session: int, vital: int, value: float
    ) -> list[AlarmTransition]:
        if self._gate is not None and vital == self._gate[0]:
            _, limit, hysteresis = self._gate
            if value <= (limit + hysteresis if session in self._low_signal else limit):
                self._low_signal.add(session)
            else:
                self._low_signal.discard(session)
        if self._gated[vital] and session in self._low_signal:
            return []  # held: the perfusion index says this value is unreliable
        key = self.session_key(session)
        out: list[AlarmTransition] = []
        for group, upper in self._groups_of_vital[vital]:
            out += self._lifecycle.observe(key, group, value, time, upper=upper)
        return out

    def _rule_change(self, key: str, event: ConditionEvent) -> ConditionChange:
        rule = self.protocol.rules[event.check]
        text = ""
        if event.active:
            baseline = None
            if rule.relative_to_baseline:
                baseline = event.limit - self._limits[key].limit(rule.id)
            text = rule_text(rule, event.value, event.limit, baseline)
        return ConditionChange(
            key,
            rule.id,
            AlarmKind.PHYSIOLOGICAL,
            rule.priority,
            event.active,
            event.time,
            _opt(event.value),
            _opt(event.limit),
            text,
            group=rule.alarm_group,
            vital=rule.vital,
            upper=rule.op.is_upper,
            order=event.check,
        )

    def _technical_change(self, key: str, event: ConditionEvent) -> ConditionChange:
        check = self.protocol.technical[event.check - self._n_rules]
        text = technical_text(check, event.value, event.limit) if event.active else ""
        return ConditionChange(
            key,
            check.id,
            AlarmKind.TECHNICAL,
            check.priority,
            event.active,
            event.time,
            _opt(event.value) if math.isfinite(event.value) else None,
            _opt(event.limit) if math.isfinite(event.limit) else None,
            text,
        )

    def _combination_change(self, key: str, change: CombinationChange) -> ConditionChange:
        rule = self.protocol.combination
        assert rule is not None
        return ConditionChange(
            key,
            rule.id,
            AlarmKind.PHYSIOLOGICAL,
            rule.priority,
            change.active,
            change.time,
            float(change.groups),
            None,
            change.text,
        )


__all__ = [
    "VITAL_INDEX",
    "AlarmEngine",
    "AlarmRecord",
    "AlarmTransition",
    "LimitOverride",
    "SampleBatch",
]
