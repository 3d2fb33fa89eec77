"""The scalar reference evaluator: the alarm semantics written plainly, one sample at a time.

It is the specification the numpy evaluator (`monitor.evaluator`) is tested against: the
property tests feed both the same random traces and require the same condition events.
It is too slow for production (see bench/bench_evaluator.py) but easy to read; the rules it
implements are summarised in `monitor.conditions`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from monitor.conditions import (
    VITALS_ORDER,
    ConditionEvent,
    SampleBatch,
    sample_usable,
    untrusted_mask,
)
from monitor.conditions import tick_check_order as _tick_check_order
from monitor.protocol import Phase, Protocol, TechnicalCheck, TechnicalKind
from monitor.vitals import VITALS, SampleQuality, Vital

NAN = math.nan


@dataclass
class _RuleState:
    onset: float = NAN  # when the condition started to hold (or the first qualifying reading)
    active: bool = False


@dataclass
class _Session:
    phase: Phase
    limits: list[float]
    rules: list[_RuleState]
    tech_active: list[bool]
    armed: list[float]  # when each technical check last became applicable
    explicit_baseline: dict[Vital, float] = field(default_factory=dict)
    baseline_slots: dict[Vital, list[float]] = field(default_factory=dict)
    baseline_count: dict[Vital, int] = field(default_factory=dict)
    last_any: float = -math.inf
    last_usable: dict[Vital, float] = field(default_factory=dict)
    last_accounted: dict[Vital, float] = field(default_factory=dict)
    last_sample: dict[Vital, tuple[float, float]] = field(default_factory=dict)  # time, measured
    nibp_interval: float | None = None
    failures: int = 0
    low_signal: bool = False
    probe_off: bool = False


class ReferenceEvaluator:
    """Per-sample Python implementation of `monitor.conditions.Evaluator`."""

    def __init__(self, protocol: Protocol) -> None:
        self.protocol = protocol
        self._sessions: dict[int, _Session] = {}
        self._n_rules = len(protocol.rules)
        self._untrusted = {vital: untrusted_mask(protocol, vital) for vital in VITALS_ORDER}
        self._tick_order = _tick_check_order(protocol)
        self._tech_index = {check.id: j for j, check in enumerate(protocol.technical)}
        self._low_signal = protocol.technical_check(TechnicalKind.LOW_SIGNAL)
        self._probe = protocol.technical_check(TechnicalKind.PROBE_OFF)

    # --- sessions and settings ------------------------------------------------------------

    def add_session(self, index: int, phase: Phase, time: float) -> None:
        n_tech = len(self.protocol.technical)
        self._sessions[index] = _Session(
            phase=phase,
            limits=[rule.limit for rule in self.protocol.rules],
            rules=[_RuleState() for _ in self.protocol.rules],
            tech_active=[False] * n_tech,
            armed=[time] * n_tech,
        )

    def remove_session(self, index: int) -> None:
        self._sessions.pop(index, None)

    def set_limit(self, index: int, rule: int, limit: float) -> None:
        self._sessions[index].limits[rule] = limit

    def set_baseline(self, index: int, vital: Vital, value: float | None) -> None:
        session = self._sessions[index]
        if value is None:
            session.explicit_baseline.pop(vital, None)
        else:
            session.explicit_baseline[vital] = value

    def baseline(self, index: int, vital: Vital) -> float | None:
        session = self._sessions[index]
        if vital in session.explicit_baseline:
            return session.explicit_baseline[vital]
        n = self.protocol.baseline_readings
        if session.baseline_count.get(vital, 0) < n:
            return None
        slots = session.baseline_slots[vital]
        total = slots[0]
        for value in slots[1:]:  # summed in slot order, like the numpy evaluator
            total = total + value
        return total / n

    def set_nibp_interval(self, index: int, seconds: float | None) -> None:
        self._sessions[index].nibp_interval = seconds

    def set_phase(self, index: int, phase: Phase, time: float) -> list[ConditionEvent]:
        session = self._sessions[index]
        old, session.phase = session.phase, phase
        events: list[ConditionEvent] = []
        for i, rule in enumerate(self.protocol.rules):
            if phase not in rule.phases:
                if session.rules[i].active:
                    events.append(ConditionEvent(index, i, False, time, NAN, NAN))
                session.rules[i] = _RuleState()
        for j, check in enumerate(self.protocol.technical):
            applies = phase in check.phases
            if applies and old not in check.phases:
                session.armed[j] = time
            if check.tick_driven:
                if not applies and session.tech_active[j]:
                    session.tech_active[j] = False
                    events.append(ConditionEvent(index, self._n_rules + j, False, time, NAN, NAN))
            else:
                self._set_technical(
                    index, session, j, self._state(session, check), time, NAN, NAN, events
                )
        return events

    def restore_condition(self, index: int, check: int) -> None:
        """Mark a condition active again after a restart (its alarm was restored)."""
        session = self._sessions[index]
        if check < self._n_rules:
            session.rules[check] = _RuleState(active=True)
            return
        j = check - self._n_rules
        tech = self.protocol.technical[j]
        if tech.kind is TechnicalKind.LOW_SIGNAL:
            session.low_signal = True
        elif tech.kind is TechnicalKind.PROBE_OFF:
            session.probe_off = True
        elif tech.kind is TechnicalKind.NIBP_FAILED:
            session.failures = max(session.failures, tech.consecutive)
        else:
            session.armed[j] = -math.inf  # the restart must not restart its clock
        session.tech_active[j] = True

    # --- samples --------------------------------------------------------------------------

    def ingest(self, batch: SampleBatch) -> list[ConditionEvent]:
        gate_vital = self._low_signal.vital if self._low_signal else None

        def order(i: int) -> tuple[float, int]:
            first = VITALS_ORDER[int(batch.vital[i])] is gate_vital
            return (float(batch.time[i]), 0 if first else 1)

        events: list[ConditionEvent] = []
        for i in sorted(range(len(batch)), key=order):
            index = int(batch.session[i])
            session = self._sessions.get(index)
            quality = int(batch.quality[i])
            if session is None or quality & SampleQuality.UNBOUND:
                continue
            vital = VITALS_ORDER[int(batch.vital[i])]
            time, measured = float(batch.time[i]), float(batch.measured[i])
            last_time, last_measured = session.last_sample.get(vital, (NAN, NAN))
            session.last_sample[vital] = (time, measured)
            if time == last_time or measured == last_measured:
                continue  # the same instant or the same measurement again: not a new sample
            self._apply(
                index, session, vital, float(batch.value[i]), float(batch.time[i]), quality, events
            )
        return events

    def nibp_failure(self, index: int, time: float) -> list[ConditionEvent]:
        """A failed NIBP cuff cycle, reported by the server."""
        session = self._sessions[index]
        session.failures += 1
        events: list[ConditionEvent] = []
        for j, check in enumerate(self.protocol.technical):
            if check.kind is TechnicalKind.NIBP_FAILED:
                self._set_technical(
                    index,
                    session,
                    j,
                    session.failures >= check.consecutive,
                    time,
                    float(session.failures),
                    float(check.consecutive),
                    events,
                )
        return events

    def _apply(
        self,
        index: int,
        session: _Session,
        vital: Vital,
        value: float,
        time: float,
        quality: int,
        events: list[ConditionEvent],
    ) -> None:
        session.last_any = max(session.last_any, time)
        usable = bool(sample_usable(value, quality, self._untrusted[vital]))
        if vital in self.protocol.gated_vitals and session.low_signal:
            usable = False
        if usable:
            session.last_usable[vital] = max(session.last_usable.get(vital, -math.inf), time)
            session.last_accounted[vital] = max(session.last_accounted.get(vital, -math.inf), time)
        elif quality & SampleQuality.CUFF_INFLATING:
            # The cuff on this arm explains the vital's absence for a while.
            session.last_accounted[vital] = max(
                session.last_accounted.get(vital, -math.inf), time + self.protocol.cuff_hold_s
            )

        for j, check in enumerate(self.protocol.technical):
            if check.kind is TechnicalKind.LOW_SIGNAL and vital is check.vital and usable:
                limit = check.limit + check.hysteresis if session.low_signal else check.limit
                session.low_signal = value <= limit
                self._set_technical(
                    index, session, j, session.low_signal, time, value, check.limit, events
                )
            elif check.kind is TechnicalKind.PROBE_OFF and vital is check.vital:
                session.probe_off = bool(quality & SampleQuality.PROBE_OFF)
                self._set_technical(index, session, j, session.probe_off, time, NAN, NAN, events)
            elif check.kind is TechnicalKind.NIBP_FAILED and vital is Vital.NIBP_SYS and usable:
                session.failures = 0
                self._set_technical(
                    index, session, j, False, time, 0.0, float(check.consecutive), events
                )

        if not usable:
            return
        for i, rule in enumerate(self.protocol.rules):
            if rule.vital is vital and session.phase in rule.phases:
                self._evaluate_rule(index, session, i, value, time, events)

        if VITALS[vital].episodic and session.phase is Phase.BASELINE:
            n = self.protocol.baseline_readings
            count = session.baseline_count.get(vital, 0)
            slots = session.baseline_slots.setdefault(vital, [NAN] * n)
            slots[count % n] = value
            session.baseline_count[vital] = count + 1

    def _evaluate_rule(
        self,
        index: int,
        session: _Session,
        i: int,
        value: float,
        time: float,
        events: list[ConditionEvent],
    ) -> None:
        rule = self.protocol.rules[i]
        limit = session.limits[i]
        if rule.relative_to_baseline:
            baseline = self.baseline(index, rule.vital)
            if baseline is None:
                return  # no baseline yet: the rule cannot be evaluated, which is not "normal"
            limit = baseline + limit
        state = session.rules[i]
        if state.active:
            if not rule.op.holds(value, rule.clear_limit(limit)):
                session.rules[i] = _RuleState()
                events.append(ConditionEvent(index, i, False, time, value, limit))
            return
        if not rule.op.holds(value, limit):
            state.onset = NAN
            return
        window = self.protocol.confirm_window(rule, self._nibp_interval(session))
        if window is not None:
            confirmed = not math.isnan(state.onset) and time - state.onset <= window
            if not confirmed:
                state.onset = time
                return
        else:
            if math.isnan(state.onset):
                state.onset = time
            if time - state.onset < rule.delay_s:
                return
        session.rules[i] = _RuleState(active=True)
        events.append(ConditionEvent(index, i, True, time, value, limit))

    # --- time -----------------------------------------------------------------------------

    def tick(self, now: float) -> list[ConditionEvent]:
        events: list[ConditionEvent] = []
        for index in sorted(self._sessions):
            session = self._sessions[index]
            for j in self._tick_order:
                check = self.protocol.technical[j]
                last, window, enabled = self._staleness(session, check)
                age = now - max(last, session.armed[j])
                active = (
                    enabled
                    and session.phase in check.phases
                    and age >= window
                    and not any(
                        session.tech_active[self._tech_index[other]]
                        for other in check.suppressed_by
                    )
                )
                if active != session.tech_active[j]:
                    session.tech_active[j] = active
                    events.append(
                        ConditionEvent(index, self._n_rules + j, active, now, age, window)
                    )
        return events

    def _staleness(self, session: _Session, check: TechnicalCheck) -> tuple[float, float, bool]:
        """(time of the last thing that counts, the window, whether the check can fire)."""
        if check.kind is TechnicalKind.DEVICE_SILENT:
            return session.last_any, check.window_s, True
        if check.kind is TechnicalKind.NO_VALUE:
            assert check.vital is not None
            return session.last_accounted.get(check.vital, -math.inf), check.window_s, True
        interval = self._nibp_interval(session)
        last = session.last_usable.get(Vital.NIBP_SYS, -math.inf)
        return last, interval + check.grace_s, interval > 0

    def _nibp_interval(self, session: _Session) -> float:
        """The session's NIBP interval: its own setting, else the phase's default."""
        if session.nibp_interval is not None:
            return session.nibp_interval
        return self.protocol.nibp_interval(session.phase)

    # --- technical states -----------------------------------------------------------------

    def _state(self, session: _Session, check: TechnicalCheck) -> bool:
        if check.kind is TechnicalKind.LOW_SIGNAL:
            return session.low_signal
        if check.kind is TechnicalKind.PROBE_OFF:
            return session.probe_off
        return session.failures >= check.consecutive

    def _set_technical(
        self,
        index: int,
        session: _Session,
        j: int,
        state: bool,
        time: float,
        value: float,
        limit: float,
        events: list[ConditionEvent],
    ) -> None:
        """A sample-driven technical alarm is its state while its check applies."""
        active = state and session.phase in self.protocol.technical[j].phases
        if active != session.tech_active[j]:
            session.tech_active[j] = active
            events.append(ConditionEvent(index, self._n_rules + j, active, time, value, limit))
