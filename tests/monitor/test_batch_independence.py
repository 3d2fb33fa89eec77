"""Batch independence: how samples are split into batches never changes the alarms.

Deterministic regressions first (a gateway backlog that used to raise and end the
combination alarm in one instant); the hypothesis property tests follow.
"""

from __future__ import annotations

from typing import Any

import pytest
from monitor_testkit import EvaluatorKind

from monitor.engine import AlarmEngine
from monitor.lifecycle import AlarmTransition
from monitor.protocol import Phase
from monitor.vitals import Vital

KEY = "chair-1"
Row = tuple[Any, ...]


@pytest.fixture(params=["vector", "reference"])
def kind(request: pytest.FixtureRequest) -> EvaluatorKind:
    kind: EvaluatorKind = request.param
    return kind


def engine_for(kind: EvaluatorKind) -> AlarmEngine:
    engine = AlarmEngine(evaluator=kind)
    engine.add_session(KEY, Phase.INFUSION, 0.0)
    return engine


def summary(records: list[AlarmTransition], rule_id: str) -> list[tuple[str, float]]:
    return [(r.event.value, r.time) for r in records if r.rule_id == rule_id]


def feed(engine: AlarmEngine, batches: list[list[Row]]) -> list[AlarmTransition]:
    out: list[AlarmTransition] = []
    for rows in batches:
        out += engine.ingest(engine.batch(rows))
    return out


def by_instant(rows: list[Row]) -> list[list[Row]]:
    """One batch per instant (the rows' time), in time order, rows kept in the given order."""
    times = sorted({row[3] for row in rows})
    return [[row for row in rows if row[3] == t] for t in times]


def backlog_medium_bp_then_spo2() -> list[Row]:
    """SBP 165 at t=0 (SBP ≥ 160, medium); SpO2 92 from t=1 (≤ 93 for 15 s: medium at 16);
    at t=16 the next NIBP reading, 150, ends the SBP condition, listed before the SpO2."""
    rows: list[Row] = [
        (KEY, Vital.NIBP_SYS, 165.0, 0.0),
        (KEY, Vital.NIBP_DIA, 90.0, 0.0),
        (KEY, Vital.SPO2, 97.0, 0.0),
        (KEY, Vital.PI, 1.5, 0.0),
    ]
    for t in range(1, 17):
        if t == 16:
            rows += [(KEY, Vital.NIBP_SYS, 150.0, 16.0), (KEY, Vital.NIBP_DIA, 85.0, 16.0)]
        rows += [(KEY, Vital.SPO2, 92.0, float(t)), (KEY, Vital.PI, 1.5, float(t))]
    return rows


def test_a_backlog_does_not_raise_and_end_the_combination_at_one_instant(
    kind: EvaluatorKind,
) -> None:
    """The gateway case from issue 14: at t=16 one medium condition (SpO2) starts as the other
    (SBP) ends, so no two groups are ever active together after any instant."""
    rows = backlog_medium_bp_then_spo2()
    backlog = feed(engine_for(kind), [rows])
    instants = feed(engine_for(kind), by_instant(rows))
    for log in (backlog, instants):
        assert summary(log, "spo2_low_medium") == [("raised", 16)]
        assert summary(log, "sbp_high_medium") == [("raised", 0), ("cleared", 16)]
        assert summary(log, "infusion_safety") == []


def test_the_combination_does_not_end_and_return_at_one_instant(kind: EvaluatorKind) -> None:
    """HR > 110 and SpO2 ≤ 93 hold the combination; at t=30 HR recovers as SBP ≥ 160 begins:
    two groups hold throughout, so the combination stays raised without a flap."""
    rows: list[Row] = []
    for t in range(30):
        rows += [
            (KEY, Vital.HR, 115.0, float(t)),
            (KEY, Vital.SPO2, 92.0, float(t)),
            (KEY, Vital.PI, 1.5, float(t)),
        ]
    rows += [
        (KEY, Vital.HR, 100.0, 30.0),
        (KEY, Vital.NIBP_SYS, 165.0, 30.0),
        (KEY, Vital.SPO2, 92.0, 30.0),
        (KEY, Vital.PI, 1.5, 30.0),
    ]
    for batches in ([rows], by_instant(rows)):
        log = feed(engine_for(kind), batches)
        assert summary(log, "hr_high_medium") == [("raised", 10), ("cleared", 30)]
        assert summary(log, "sbp_high_medium") == [("raised", 30)]
        assert summary(log, "infusion_safety") == [("raised", 15)]


def test_an_instant_split_across_calls_never_raises_and_ends_at_one_time(
    kind: EvaluatorKind,
) -> None:
    """Against the contract, the SpO2 of t=16 comes in one call and the NIBP reading of the
    same instant in the next: the combination raised by the first call cannot be undone at
    16, so its end waits for the next tick."""
    engine = engine_for(kind)
    rows = backlog_medium_bp_then_spo2()
    late = [row for row in rows if row[3] == 16.0 and row[1] in (Vital.NIBP_SYS, Vital.NIBP_DIA)]
    log = feed(engine, [[row for row in rows if row not in late], late])
    assert summary(log, "infusion_safety") == [("raised", 16)]
    log += engine.tick(16.5)
    assert summary(log, "infusion_safety") == [("raised", 16), ("condition_ended", 16.5)]
