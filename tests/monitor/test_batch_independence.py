"""Batch independence: how samples are split into batches never changes the alarms.

Deterministic regressions first (a gateway backlog that used to raise and end the
combination alarm in one instant); the hypothesis property tests follow.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from monitor_testkit import EvaluatorKind, one_alarm_per_rule
from test_equivalence import LEVELS, QUALITIES

from monitor.engine import AlarmEngine
from monitor.lifecycle import AlarmTransition, TransitionEvent
from monitor.protocol import AlarmKind, Phase, Priority, Protocol, default_protocol
from monitor.vitals import Vital

VITALS = list(Vital)
NIBP = (Vital.NIBP_SYS, Vital.NIBP_DIA, Vital.NIBP_MEAN)

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


# --- the property: any split into batches gives the same transitions --------------------------
#
# A stream is a time-ordered list of steps. A sample step is one *instant* of one session (its
# samples of one time: several vitals, same-vital duplicates, republished NIBP readings);
# several sessions share times. Other steps (ticks, phase changes, failed cuff cycles,
# acknowledgements) sit at times of their own. The instants between two other steps are cut
# into batches at random points (one instant per batch up to all in one, a gateway's
# backlog), and each batch is shuffled, keeping only the order of samples that share a
# session, vital and time (of those, the first received counts). Every split must give the
# same transitions as feeding one instant at a time, on both evaluators.

STREAM_SESSIONS = ("s0", "s1", "s2")
Stream = list[tuple[Any, ...]]


def counting_ids() -> Callable[[str, str, float], str]:
    """A deterministic id factory that does not depend on the order sessions are handled in."""
    issued: dict[tuple[str, str], int] = {}

    def make(session: str, rule: str, time: float) -> str:
        n = issued[(session, rule)] = issued.get((session, rule), 0) + 1
        return f"{session}/{rule}/{n}"

    return make


# Normal values half the time, so conditions come and go and the combination sits near its
# threshold (one high group, or two medium groups) often enough to flap if it could.
NORMAL = {
    Vital.HR: 75.0,
    Vital.PR: 76.0,
    Vital.SPO2: 98.0,
    Vital.PI: 1.4,
    Vital.NIBP_SYS: 130.0,
    Vital.NIBP_DIA: 80.0,
    Vital.NIBP_MEAN: 95.0,
}


# Values that start or end conditions of the SpO2 and blood-pressure groups (every tier) in
# handovers; heart rate takes any value.
HANDOVER = {
    Vital.SPO2: [98.0, 92.0, 84.0],
    Vital.PI: [1.4],
    Vital.NIBP_SYS: [130.0, 165.0, 185.0, 205.0, 95.0, 85.0, 75.0],
    Vital.NIBP_DIA: [80.0, 105.0, 115.0, 122.0],
    Vital.NIBP_MEAN: [95.0, 68.0],
}


# More of the extremes that need a value held for the 10 s condition delay.
EXTREMES = {Vital.HR: [155.0, 160.0, 38.0], Vital.PR: [155.0, 38.0, 35.0]}


def values(vital: Vital) -> st.SearchStrategy[float]:
    return st.one_of(
        st.just(NORMAL[vital]), st.sampled_from(LEVELS[vital] + EXTREMES.get(vital, []))
    )


@st.composite
def streams(draw: st.DrawFn) -> tuple[list[Phase], Stream]:
    initial = draw(
        st.lists(
            st.sampled_from([Phase.INFUSION, Phase.INFUSION, Phase.BASELINE, Phase.RECOVERY]),
            min_size=len(STREAM_SESSIONS),
            max_size=len(STREAM_SESSIONS),
        )
    )
    level = {(s, v): NORMAL[v] for s in STREAM_SESSIONS for v in Vital}
    last_nibp: dict[tuple[str, Vital], tuple[float, float]] = {}  # value, measured at
    stream: Stream = []
    clock = 100.0
    for _ in range(draw(st.integers(10, 45))):
        clock += draw(st.sampled_from([1.0, 1.0, 1.0, 2.0, 5.0, 16.0, 61.0]))
        for _ in range(draw(st.integers(0, 3))):  # values move, and stay a while
            session, vital = draw(st.sampled_from(STREAM_SESSIONS)), draw(st.sampled_from(VITALS))
            level[(session, vital)] = draw(values(vital))
        sessions = draw(st.lists(st.sampled_from(STREAM_SESSIONS), max_size=3, unique=True))
        for session in sessions:
            rows: list[Row] = []
            handover = draw(st.integers(0, 3)) == 0
            if handover:
                # A full, clean update in which each group's state may flip: conditions of
                # different groups starting and ending at one instant, where a combination
                # evaluated condition by condition would flap.
                vitals = VITALS
                for vital in VITALS:
                    choices = HANDOVER.get(vital)
                    level[(session, vital)] = draw(
                        values(vital) if choices is None else st.sampled_from(choices)
                    )
            else:
                vitals = draw(st.lists(st.sampled_from(VITALS), min_size=1, max_size=7))
                for vital in draw(st.lists(st.sampled_from(vitals), max_size=1)):
                    level[(session, vital)] = draw(values(vital))
            for vital in vitals:  # a vital twice: a same-time duplicate, maybe conflicting
                quality = 0 if handover else int(draw(st.sampled_from(QUALITIES)))
                value, measured = level[(session, vital)], clock
                if vital in NIBP and (session, vital) in last_nibp and draw(st.booleans()):
                    value, measured = last_nibp[(session, vital)]  # the monitor republishes
                elif any(r[1] is vital for r in rows) and draw(st.booleans()):
                    value = draw(st.sampled_from(LEVELS[vital]))
                if vital in NIBP:
                    last_nibp[(session, vital)] = (value, measured)
                rows.append((session, vital, value, clock, quality, measured))
            stream.append(("instant", rows))
        other = draw(
            st.sampled_from(
                ["", "", "", "tick", "tick", "phase", "failure", "ack", "interval", "baseline"]
            )
        )
        session = draw(st.sampled_from(STREAM_SESSIONS))
        if other == "tick":
            stream.append(("tick", clock + 0.5))
        elif other == "phase":
            stream.append(("phase", session, draw(st.sampled_from(list(Phase))), clock + 0.5))
        elif other == "failure":
            stream.append(("failure", session, clock + 0.5))
        elif other == "ack":
            stream.append(("ack", session, clock + 0.5))
        elif other == "interval":
            stream.append(("interval", session, draw(st.sampled_from([None, 0.0, 30.0, 600.0]))))
        elif other == "baseline":
            stream.append(("baseline", session, draw(st.sampled_from([None, 120.0]))))
    stream.append(("tick", clock + 1200.0))  # let every time-based check and escalation run
    return initial, stream


def shuffled(rows: list[Row], rng: random.Random) -> list[Row]:
    """The rows in a random order, except that rows of one session, vital and time keep their
    order (the first received of those counts)."""
    groups: dict[tuple[Any, ...], list[Row]] = {}
    for row in rows:
        groups.setdefault((row[0], row[1], row[3]), []).append(row)
    keys = [(row[0], row[1], row[3]) for row in rows]
    rng.shuffle(keys)
    taken = {key: iter(group) for key, group in groups.items()}
    return [next(taken[key]) for key in keys]


def run_stream(
    kind: EvaluatorKind,
    initial: list[Phase],
    stream: Stream,
    split: Callable[[list[list[Row]]], list[list[Row]]],
    *,
    check_combination: bool = True,
    protocol: Protocol | None = None,
) -> tuple[list[AlarmTransition], list[Any]]:
    """Play a stream, its instants grouped into batches by `split`; returns the transitions
    and the engine's final state (live alarms, baselines). With `check_combination`, after
    every call the combination must be what its rule says of the conditions then active."""
    engine = AlarmEngine(protocol, evaluator=kind, id_factory=counting_ids(), capacity=2)
    for session, phase in zip(STREAM_SESSIONS, initial, strict=True):
        engine.add_session(session, phase, 0.0)
    out: list[AlarmTransition] = []
    pending: list[list[Row]] = []

    def flush() -> None:
        for batch in split(pending):
            out.extend(engine.ingest(engine.batch(batch)))
            if check_combination:
                assert_combination_follows_its_conditions(engine)
        pending.clear()

    for step in stream:
        if step[0] == "instant":
            pending.append(step[1])
            continue
        flush()
        if step[0] == "tick":
            out += engine.tick(step[1])
        elif step[0] == "phase":
            out += engine.set_phase(step[1], step[2], step[3])
        elif step[0] == "failure":
            out += engine.report_nibp_failure(step[1], step[2])
        elif step[0] == "ack":
            out += engine.acknowledge_session(step[1], actor="rn", time=step[2])
        elif step[0] == "interval":
            engine.set_nibp_interval(step[1], step[2])
        elif step[0] == "baseline":
            engine.set_baseline(step[1], Vital.NIBP_SYS, step[2])
    flush()
    state = [
        sorted(engine.active_alarms(), key=lambda a: a.alarm_id),
        [engine.baseline(s, Vital.NIBP_SYS) for s in STREAM_SESSIONS],
    ]
    return out, state


def assert_combination_follows_its_conditions(engine: AlarmEngine) -> None:
    """The combination is defined on the state after each instant: after a call, its
    condition is active exactly when its rule holds on the session's active conditions."""
    protocol = engine.protocol
    rule = protocol.combination
    assert rule is not None
    for session in engine.sessions():
        alarms = engine.active_alarms(session)
        high: set[str] = set()
        medium: set[str] = set()
        for alarm in alarms:
            if alarm.condition_active and alarm.rule_id != rule.id:
                if alarm.kind is not AlarmKind.PHYSIOLOGICAL:
                    continue
                condition = protocol.rule(alarm.rule_id)
                if condition.priority.rank >= Priority.MEDIUM.rank:
                    medium.add(condition.group)
                if condition.priority.rank >= Priority.HIGH.rank:
                    high.add(condition.group)
        holds = engine.phase(session) in rule.phases and rule.holds(len(high), len(medium))
        combination = [a for a in alarms if a.rule_id == rule.id and a.condition_active]
        assert bool(combination) == holds, (session, [a.rule_id for a in alarms])


def canonical(records: list[AlarmTransition]) -> list[AlarmTransition]:
    """Records by time, session and rule; one alarm's records keep their order (stable).
    Each call returns its records in that order; only calls with several instants differ."""
    return sorted(records, key=lambda r: (r.time, r.session_key, r.rule_id))


def one_instant_per_batch(instants: list[list[Row]]) -> list[list[Row]]:
    return [list(rows) for rows in instants]


def random_batches(seed: int) -> Callable[[list[list[Row]]], list[list[Row]]]:
    rng = random.Random(seed)

    def split(instants: list[list[Row]]) -> list[list[Row]]:
        batches: list[list[Row]] = []
        current: list[Row] = []
        for rows in instants:
            current += rows
            if rng.random() < 0.3:
                batches.append(shuffled(current, rng))
                current = []
        if current:
            batches.append(shuffled(current, rng))
        return batches

    return split


def one_sample_per_batch(seed: int) -> Callable[[list[list[Row]]], list[list[Row]]]:
    """Every sample its own call, instants in order, each in any order: instants split."""
    rng = random.Random(seed)

    def split(instants: list[list[Row]]) -> list[list[Row]]:
        return [[row] for rows in instants for row in rng.sample(rows, len(rows))]

    return split


def assert_no_alarm_changes_twice_at_one_time(records: list[AlarmTransition]) -> None:
    """No alarm is raised and ended (or ended and returned) at the same instant."""
    seen: dict[tuple[str, float], TransitionEvent] = {}
    for r in records:
        if r.event in CONDITION_EVENTS and r.actor is None:
            earlier = seen.setdefault((r.alarm_id, r.time), r.event)
            assert earlier is r.event, (
                f"{r.alarm_id} {earlier.value} and {r.event.value} at {r.time}"
            )


CONDITION_EVENTS = {
    TransitionEvent.RAISED,
    TransitionEvent.CONDITION_ENDED,
    TransitionEvent.CONDITION_RETURNED,
    TransitionEvent.CLEARED,
}
PROPERTY = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@PROPERTY
@given(case=streams(), seed=st.integers(0, 2**32 - 1))
def test_any_split_into_batches_gives_the_same_transitions(
    case: tuple[list[Phase], Stream], seed: int
) -> None:
    initial, stream = case
    expected = run_stream("reference", initial, stream, one_instant_per_batch)
    assert_no_alarm_changes_twice_at_one_time(expected[0])
    for kind in ("vector", "reference"):
        for split in (one_instant_per_batch, random_batches(seed), random_batches(seed + 1)):
            records, state = run_stream(kind, initial, stream, split)
            assert_no_alarm_changes_twice_at_one_time(records)
            assert canonical(records) == canonical(expected[0]), (kind, split)
            assert state == expected[1]


@PROPERTY
@given(case=streams(), seed=st.integers(0, 2**32 - 1))
def test_no_alarm_is_raised_and_ended_at_one_instant_whatever_the_calls(
    case: tuple[list[Phase], Stream], seed: int
) -> None:
    """Even when an instant's samples come one per call in any order (against the contract,
    so the transitions may differ), no alarm changes twice at one time."""
    initial, stream = case
    for kind in ("vector", "reference"):
        split = one_sample_per_batch(seed)
        records, _ = run_stream(kind, initial, stream, split, check_combination=False)
        assert_no_alarm_changes_twice_at_one_time(records)


def test_the_streams_reach_every_rule() -> None:
    """The properties above are only as good as their streams: across 200 of them every
    rule, technical check and the combination is reached, and same-time samples (of several
    vitals, and same-vital duplicates) and republished readings occur."""
    raised: set[str] = set()
    counts = {"several vitals": 0, "same-vital duplicates": 0, "republished": 0}

    @settings(
        max_examples=200,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(case=streams())
    def collect(case: tuple[list[Phase], Stream]) -> None:
        # Every rule its own alarm, so that each condition shows under its rule id (with one
        # alarm per parameter a lower tier hides under a worse one that holds with it).
        records, _ = run_stream(
            "vector", *case, one_instant_per_batch, protocol=one_alarm_per_rule()
        )
        raised.update(r.rule_id for r in records if r.event is TransitionEvent.RAISED)
        for step in case[1]:
            if step[0] == "instant":
                vitals = [row[1] for row in step[1]]
                counts["several vitals"] += len(set(vitals)) > 1
                counts["same-vital duplicates"] += len(set(vitals)) < len(vitals)
                counts["republished"] += any(row[5] != row[3] for row in step[1])

    collect()
    assert set(default_protocol().check_ids) - raised == set()
    assert min(counts.values()) > 0, counts
