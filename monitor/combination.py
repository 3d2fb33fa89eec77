"""The combination rule: one high or two medium physiological conditions at once escalate.

It works on condition changes, not samples, so both evaluators share it. "At once" means
after the same *instant*: the engine records every condition change a session has at one
time (`set_condition`) and then evaluates the combination once for that instant
(`evaluate`), so the order of same-time samples and condition events never matters, and
the combination does not flap inside an instant.

A change is never stamped at or before the combination's previous change: if samples of an
instant already evaluated arrive in a later call (against the engine's contract, see
docs/ALARMS.md), a change that would undo the one made at that instant waits for the next
instant or tick (`due`). So the combination is never raised and ended at the same time.
"""

from __future__ import annotations

import math
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
    changed_at: float = -math.inf  # time of the combination's last change


class CombinationTracker:
    """Tracks each session's active physiological conditions and the combination alarm."""

    def __init__(self, rule: CombinationRule, rules: Sequence[Rule]) -> None:
        self.rule = rule
        self._rules = rules
        self._rank = [r.priority.rank for r in rules]  # enum hashing is slow in a hot loop
        self._group = [r.group for r in rules]
        self._phases = frozenset(p.value for p in rule.phases)
        self._sessions: dict[int, _Session] = {}
        self._due: set[int] = set()  # sessions whose change waits for a later instant

    def add_session(self, session: int, phase: Phase) -> None:
        self._sessions[session] = _Session(phase)

    def remove_session(self, session: int) -> None:
        self._sessions.pop(session, None)
        self._due.discard(session)

    def set_condition(self, session: int, rule: int, active: bool, text: str) -> None:
        """A rule's condition changed; the combination is evaluated after the instant."""
        state = self._sessions[session]
        if active:
            state.conditions[rule] = text
        else:
            state.conditions.pop(rule, None)

    def set_phase(self, session: int, phase: Phase) -> None:
        """The session's phase changed; evaluate the combination at the change's time."""
        self._sessions[session].phase = phase

    def restore(self, session: int, rule: int | None, text: str) -> None:
        """After a restart: a rule's condition (or, with rule None, the combination) is active."""
        state = self._sessions[session]
        if rule is None:
            state.active = True
        else:
            state.conditions[rule] = text

    def due(self, now: float) -> list[CombinationChange]:
        """Changes that waited for a later instant (see the module doc), made at `now`."""
        out: list[CombinationChange] = []
        for session in sorted(self._due):
            change = self.evaluate(session, now)
            if change is not None:
                out.append(change)
        return out

    def evaluate(self, session: int, time: float) -> CombinationChange | None:
        """The combination on the session's conditions after the instant `time`."""
        state = self._sessions[session]
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
            self._due.discard(session)
            return None
        if time <= state.changed_at:
            self._due.add(session)
            return None
        self._due.discard(session)
        state.active, state.changed_at = active, time
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
