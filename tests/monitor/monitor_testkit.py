"""Helpers for the alarm-engine tests: a chair fed one second at a time, and log queries."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from functools import cache
from typing import Literal

from monitor.engine import AlarmEngine
from monitor.lifecycle import AlarmTransition, TransitionEvent
from monitor.protocol import Phase, Protocol, default_protocol
from monitor.vitals import SampleQuality, Vital

KEY = "chair-1"

EvaluatorKind = Literal["vector", "reference"]


@cache
def one_alarm_per_rule() -> Protocol:
    """The default protocol with every rule an alarm of its own (its own alarm group).

    The scenario tests pin each rule's condition (when it is raised, when it ends); with one
    alarm per rule, every condition shows in the transition log under its rule id. The
    default protocol's grouping (tiers of one alarm per parameter) has tests of its own.
    """
    protocol = default_protocol()
    return replace(
        protocol, rules=tuple(replace(rule, alarm_group=rule.id) for rule in protocol.rules)
    )


class Chair:
    """One session on one engine; records every transition the engine returns.

    Without a `protocol`, each rule is an alarm of its own (`one_alarm_per_rule`); pass
    `default_protocol()` for the alarms a clinic sees, one per parameter.
    """

    def __init__(
        self,
        evaluator: EvaluatorKind = "vector",
        *,
        phase: Phase = Phase.INFUSION,
        protocol: Protocol | None = None,
        start: float = 0.0,
    ) -> None:
        protocol = one_alarm_per_rule() if protocol is None else protocol
        self.engine = AlarmEngine(protocol, evaluator=evaluator)
        self.engine.add_session(KEY, phase, start)
        self.log: list[AlarmTransition] = []

    def take(self, records: Iterable[AlarmTransition]) -> list[AlarmTransition]:
        records = list(records)
        self.log += records
        return records

    def send(
        self, t: float, *, quality: SampleQuality | int = 0, **values: float
    ) -> list[AlarmTransition]:
        """One batch of samples at time t, e.g. send(5, spo2=97, hr=80)."""
        rows = [(KEY, Vital(name), value, t, int(quality)) for name, value in values.items()]
        return self.take(self.engine.ingest(self.engine.batch(rows)))

    def tick(self, t: float) -> list[AlarmTransition]:
        return self.take(self.engine.tick(t))

    def second(
        self, t: float, *, quality: SampleQuality | int = 0, **values: float
    ) -> list[AlarmTransition]:
        """A second of a 1 Hz monitor: the samples, then the engine's tick."""
        return self.send(t, quality=quality, **values) + self.tick(t)

    def run(
        self, start: int, stop: int, *, quality: SampleQuality | int = 0, **values: float
    ) -> None:
        """Seconds start..stop-1 with the same values."""
        for t in range(start, stop):
            self.second(t, quality=quality, **values)

    def nibp(self, t: float, sys: float, dia: float, mean: float | None = None) -> None:
        mean = (sys + 2 * dia) / 3 if mean is None else mean
        self.send(t, nibp_sys=sys, nibp_dia=dia, nibp_mean=mean)

    def set_phase(self, phase: Phase, t: float) -> list[AlarmTransition]:
        return self.take(self.engine.set_phase(KEY, phase, t))

    def times(self, rule_id: str, event: TransitionEvent = TransitionEvent.RAISED) -> list[float]:
        return [r.time for r in self.log if r.rule_id == rule_id and r.event is event]

    def events(self, rule_id: str) -> list[tuple[str, float]]:
        return [(r.event.value, r.time) for r in self.log if r.rule_id == rule_id]

    def raised_rules(self) -> set[str]:
        return {r.rule_id for r in self.log if r.event is TransitionEvent.RAISED}

    def record(self, rule_id: str, event: TransitionEvent) -> AlarmTransition:
        matches = [r for r in self.log if r.rule_id == rule_id and r.event is event]
        assert matches, f"no {event.value} record for {rule_id}: {self.events(rule_id)}"
        return matches[0]
