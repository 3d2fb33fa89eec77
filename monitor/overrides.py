"""Per-session limit overrides: one session's rule limits, and who changed them, when and why.

A nurse or physician may move a rule's limit for one patient (say, SBP 160 → 170 for a
patient with known hypertension, on the physician's word). The caller supplies who and why;
`SessionLimits` keeps every change as a `LimitOverride` record and hands it back for storage.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from monitor.protocol import Protocol, Rule
from monitor.vitals import VITALS


@dataclass(frozen=True)
class LimitOverride:
    """One change to one rule's limit for one session: who, why, from what, to what, when.

    For a baseline-relative rule the limits are offsets from the baseline. `new` equal to
    the protocol's limit with `reverted` set records a return to the protocol default.
    """

    session_key: str
    rule_id: str
    old: float
    new: float
    who: str
    why: str
    time: float
    protocol_version: str
    reverted: bool = False


class SessionLimits:
    """One session's rule limits: the protocol's, with any overrides and their history."""

    def __init__(self, protocol: Protocol, session_key: str) -> None:
        self._protocol = protocol
        self._session_key = session_key
        self._limits: dict[str, float] = {}
        self.history: list[LimitOverride] = []

    def limit(self, rule_id: str) -> float:
        return self._limits.get(rule_id, self._protocol.rule(rule_id).limit)

    def overridden(self) -> dict[str, float]:
        return dict(self._limits)

    def override(
        self, rule_id: str, new: float, *, who: str, why: str, time: float
    ) -> LimitOverride:
        """Set a rule's limit for this session; the record is kept and returned."""
        rule = self._protocol.rule(rule_id)
        if not rule.overridable:
            raise ValueError(f"rule {rule_id!r} may not be overridden (protocol setting)")
        if not who.strip() or not why.strip():
            raise ValueError("an override needs who made it and why")
        new = float(new)
        spec = VITALS[rule.vital]
        if not math.isfinite(new):
            raise ValueError("the new limit must be a finite number")
        span = spec.plausible_max - spec.plausible_min
        low, high = (
            (-span, span) if rule.relative_to_baseline else (spec.plausible_min, spec.plausible_max)
        )
        if not low <= new <= high:
            raise ValueError(f"{new:g} is outside {spec.label}'s range {low:g} to {high:g}")
        return self._record(rule, new, who=who, why=why, time=time, reverted=False)

    def revert(self, rule_id: str, *, who: str, why: str, time: float) -> LimitOverride:
        """Return a rule to the protocol's limit; recorded like an override."""
        rule = self._protocol.rule(rule_id)
        return self._record(rule, rule.limit, who=who, why=why, time=time, reverted=True)

    def apply(self, record: LimitOverride) -> None:
        """Re-apply a stored override (after a restart) without making a new record."""
        rule = self._protocol.rule(record.rule_id)
        if record.reverted or record.new == rule.limit:
            self._limits.pop(rule.id, None)
        else:
            self._limits[rule.id] = record.new
        self.history.append(record)

    def _record(
        self, rule: Rule, new: float, *, who: str, why: str, time: float, reverted: bool
    ) -> LimitOverride:
        record = LimitOverride(
            session_key=self._session_key,
            rule_id=rule.id,
            old=self.limit(rule.id),
            new=new,
            who=who,
            why=why,
            time=time,
            protocol_version=self._protocol.version,
            reverted=reverted,
        )
        self.apply(record)
        return record
