"""The combination rule: one high or two medium physiological conditions at once escalate.

It works on condition changes, not samples, so both evaluators share it. "At once" means
active at the same time; changes at the same instant are applied in the canonical event
order (`monitor.conditions.event_order`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from monitor.protocol import CombinationRule, Phase, Priority, Rule

_MEDIUM = Priority.MEDIUM.rank
_HIGH = Priority.HIGH.rank


@dataclass(frozen=True, slots=True)
class CombinationChange:
    session: int
    active: bool
    time: float
    text: str
    groups: int  # groups with an active medium-or-higher condition


@dataclass
class _Session:
    phase: Phase
    active: bool = False
    conditions: dict[int, str] = field(default_factory=dict)  # rule index → text when raised


class CombinationTracker:
    """Tracks each session's active physiological conditions and the combination alarm."""

    def __init__(self, rule: CombinationRule, rules: Sequence[Rule]) -> None:
        self.rule = rule
        self._rules = rules
        self._rank = [r.priority.rank for r in rules]  # enum hashing is slow in a hot loop
        self._group = [r.group for r in rules]
        self._phases = frozenset(p.value for p in rule.phases)
        self._sessions: dict[int, _Session] = {}

    def add_session(self, session: int, phase: Phase) -> None:
        self._sessions[session] = _Session(phase)

    def remove_session(self, session: int) -> None:
        self._sessions.pop(session, None)

    def update(
        self, session: int, rule: int, active: bool, text: str, time: float
    ) -> CombinationChange | None:
        """A rule's condition changed; returns the combination's change, if any."""
        state = self._sessions[session]
        if active:
            state.conditions[rule] = text
        else:
            state.conditions.pop(rule, None)
        return self._evaluate(session, state, time)

    def set_phase(self, session: int, phase: Phase, time: float) -> CombinationChange | None:
        state = self._sessions[session]
        state.phase = phase
        return self._evaluate(session, state, time)

    def restore(self, session: int, rule: int | None, text: str) -> None:
        """After a restart: a rule's condition (or, with rule None, the combination) is active."""
        state = self._sessions[session]
        if rule is None:
            state.active = True
        else:
            state.conditions[rule] = text

    def _evaluate(self, session: int, state: _Session, time: float) -> CombinationChange | None:
        high: set[str] = set()
        medium: set[str] = set()
        for index in state.conditions:
            if self._rank[index] >= _MEDIUM:
                medium.add(self._group[index])
            if self._rank[index] >= _HIGH:
                high.add(self._group[index])
        applies = state.phase.value in self._phases
        active = applies and self.rule.holds(len(high), len(medium))
        if active == state.active:
            return None
        state.active = active
        text = self.rule.text
        if active:
            # The most severe condition of each contributing group, most severe first.
            ranked = sorted(state.conditions, key=lambda i: (-self._rank[i], i))
            shown: dict[str, str] = {}
            for i in ranked:
                if self._rank[i] >= _MEDIUM:
                    shown.setdefault(self._group[i], state.conditions[i])
            text += ": " + "; ".join(shown.values())
        return CombinationChange(session, active, time, text, len(medium))
