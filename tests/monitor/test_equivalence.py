"""Property tests: the numpy evaluator and the scalar reference make the same alarms.

Hypothesis generates random traces (sessions, phase changes, limit overrides, baselines,
batches of samples with quality flags, out-of-order and repeated samples, republished
measurements (a measurement time held over several samples), ticks, failed
NIBP cycles, acknowledgements, audio pauses, sessions ending and starting) and both engines
must return identical condition events and identical alarm transition records.
"""

from __future__ import annotations

import math
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.conditions import ConditionEvent, event_order
from monitor.engine import AlarmEngine
from monitor.lifecycle import AlarmTransition
from monitor.protocol import Phase, default_protocol
from monitor.vitals import SampleQuality, Vital

PROTOCOL = default_protocol()
SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Values around every default limit (and its hysteresis), plus a few ordinary ones.
LEVELS: dict[Vital, list[float]] = {
    Vital.HR: [35, 39.5, 40, 42, 45, 47, 48, 50, 53, 75, 104, 105.5, 110, 111, 125, 130, 131, 145,
               150, 151],
    Vital.PR: [38, 40, 44, 45, 50, 52, 76, 110, 112, 126, 130, 133, 151],
    Vital.SPO2: [80, 84, 85, 86, 87, 89, 90, 91, 92, 93, 94, 95, 98, math.nan],
    Vital.PI: [0.1, 0.3, 0.4, 0.45, 0.5, 0.55, 1.4, 3.0],
    Vital.NIBP_SYS: [70, 80, 84, 90, 94, 99, 100, 105, 130, 150, 155, 160, 161, 170, 175, 180,
                     184, 195, 200, 210],
    Vital.NIBP_DIA: [50, 80, 95, 100, 105, 110, 115, 120, 124],
    Vital.NIBP_MEAN: [55, 60, 65, 68, 70, 75, 95],
}  # fmt: skip
QUALITIES = [
    0, 0, 0, 0, 0, 0,
    SampleQuality.ARTIFACT, SampleQuality.PROBE_OFF, SampleQuality.CUFF_INFLATING,
    SampleQuality.LOW_PERFUSION, SampleQuality.QUESTIONABLE, SampleQuality.UNBOUND,
    SampleQuality.PROBE_OFF | SampleQuality.CUFF_INFLATING,
]  # fmt: skip
OVERRIDABLE = [r.id for r in PROTOCOL.rules if r.overridable]

sessions = st.sampled_from([0, 0, 0, 1, 2])  # session 0 often, so its state builds up
phases = st.sampled_from(list(Phase))


@st.composite
def sample_rows(draw: st.DrawFn, vitals: list[Vital] | None = None) -> tuple[Any, ...]:
    return (
        "emit",
        draw(st.sampled_from([0.0, 0.5, 1.0, 1.0, 1.0, 1.0, 2.0, 5.0, 10.0, 16.0, 61.0])),
        draw(
            st.lists(
                st.tuples(
                    sessions,
                    st.sampled_from(vitals or list(Vital)),
                    st.sampled_from(QUALITIES),
                    st.sampled_from([0.0, 0.0, 0.0, 0.0, 0.5, 1.0, 3.0]),  # how old
                    st.integers(1, 3),  # repeated: seconds of backlog in one batch
                    st.sampled_from([0, 0, 0, 5, 300]),  # republished: measured every n s
                ),
                min_size=1,
                max_size=12,
            )
        ),
    )


def steps_for(vitals: list[Vital] | None = None) -> st.SearchStrategy[tuple[Any, ...]]:
    """Trace steps; with `vitals`, samples and level changes of those vitals only."""
    chosen = st.sampled_from(vitals or list(Vital))
    level = st.tuples(st.just("level"), sessions, chosen, st.integers(0, 40))
    emit = sample_rows(vitals)
    return st.one_of(
        emit,
        emit,
        emit,
        level,
        level,
        st.tuples(st.just("tick"), st.sampled_from([0.0, 1.0, 1.0, 5.0, 10.0, 61.0, 130.0, 500.0])),
        st.tuples(st.just("phase"), sessions, phases),
        st.tuples(
            st.just("override"),
            sessions,
            st.sampled_from(OVERRIDABLE),
            st.sampled_from([-1.0, 0.0, 0.5, 1.0, 5.0]),  # shift from the protocol's limit
        ),
        st.tuples(st.just("baseline"), sessions, st.sampled_from([None, 120.0, 131.0, 150.0])),
        st.tuples(st.just("interval"), sessions, st.sampled_from([None, 0.0, 60.0, 300.0])),
        st.tuples(st.just("failure"), sessions),
        st.tuples(st.just("failure"), sessions),
        st.tuples(st.just("ack"), st.integers(0, 9)),
        st.tuples(st.just("pause"), sessions),
        st.tuples(st.just("restart_session"), sessions, phases),
    )


steps = steps_for()


class Recorder(AlarmEngine):
    """An engine that also keeps the condition events its evaluator produced."""

    def __init__(self, kind: Any) -> None:
        super().__init__(PROTOCOL, evaluator=kind, capacity=2)  # capacity 2: arrays must grow
        self.conditions: list[tuple[Any, ...]] = []

    def _conditions(self, events: list[ConditionEvent]) -> list[AlarmTransition]:
        events.sort(key=event_order)
        self.conditions += [
            (
                e.session,
                e.check,
                e.active,
                e.time,
                None if math.isnan(e.value) else e.value,
                None if math.isnan(e.limit) else e.limit,
            )
            for e in events
        ]
        return super()._conditions(events)


def measured(t: float, hold: int) -> float:
    """The device's measurement time: t itself, or with `hold`, the last multiple of hold
    seconds (the device republishes that measurement until the next one)."""
    return t if not hold else t - t % hold


def play(engine: Recorder, trace: list[tuple[Any, ...]], initial: list[Phase]) -> list[Any]:
    """Run a trace; returns everything the engine said, in order."""
    out: list[Any] = []
    clock = 1000.0
    keys = [f"s{i}" for i in range(3)]
    for key, phase in zip(keys, initial, strict=True):
        engine.add_session(key, phase, clock)
    level = {(i, v): LEVELS[v][len(LEVELS[v]) // 2] for i in range(3) for v in Vital}
    for step in trace:
        kind = step[0]
        if kind == "emit":
            clock += step[1]
            rows = []
            for session, vital, quality, age, repeat, hold in step[2]:
                for back in range(repeat):
                    t = clock - age - (repeat - 1 - back)
                    value = level[(session, vital)]
                    rows.append((keys[session], vital, value, t, int(quality), measured(t, hold)))
            out += engine.ingest(engine.batch(rows))
        elif kind == "level":
            _, session, vital, pick = step
            level[(session, vital)] = LEVELS[vital][pick % len(LEVELS[vital])]
        elif kind == "tick":
            clock += step[1]
            out += engine.tick(clock)
        elif kind == "phase":
            out += engine.set_phase(keys[step[1]], step[2], clock)
        elif kind == "override":
            _, session, rule_id, shift = step
            new = PROTOCOL.rule(rule_id).limit + shift
            out.append(
                engine.override_limit(keys[session], rule_id, new, who="t", why="t", time=clock)
            )
        elif kind == "baseline":
            engine.set_baseline(keys[step[1]], Vital.NIBP_SYS, step[2])
        elif kind == "interval":
            engine.set_nibp_interval(keys[step[1]], step[2])
        elif kind == "failure":
            out += engine.report_nibp_failure(keys[step[1]], clock)
        elif kind == "ack":
            active = engine.active_alarms()
            if active:
                alarm = active[step[1] % len(active)]
                out += engine.acknowledge(alarm.alarm_id, actor="rn", time=clock)
        elif kind == "pause":
            out += engine.pause_audio(keys[step[1]], actor="rn", time=clock)
        elif kind == "restart_session":
            out += engine.remove_session(keys[step[1]], clock)
            engine.add_session(keys[step[1]], step[2], clock)
    out.append(engine.active_alarms())
    out.append([engine.baseline(k, Vital.NIBP_SYS) for k in keys])
    return out


def check_agreement(trace: list[tuple[Any, ...]], initial: list[Phase]) -> None:
    vector, reference = Recorder("vector"), Recorder("reference")
    said_by_vector = play(vector, trace, initial)
    said_by_reference = play(reference, trace, initial)
    assert vector.conditions == reference.conditions
    assert said_by_vector == said_by_reference


initials = st.lists(phases, min_size=3, max_size=3)


@SETTINGS
@given(trace=st.lists(steps, min_size=20, max_size=60), initial=initials)
def test_vector_and_reference_agree(trace: list[tuple[Any, ...]], initial: list[Phase]) -> None:
    check_agreement(trace, initial)


@settings(SETTINGS, max_examples=150)
@given(
    trace=st.lists(steps_for([Vital.SPO2, Vital.PI, Vital.NIBP_SYS]), min_size=20, max_size=50),
    initial=initials,
)
def test_technical_alarms_agree(trace: list[tuple[Any, ...]], initial: list[Phase]) -> None:
    """Probe off, low signal and its gate, cuff hold, no value, NIBP failed and stale."""
    check_agreement(trace, initial)


@settings(SETTINGS, max_examples=150)
@given(
    trace=st.lists(
        steps_for([Vital.NIBP_SYS, Vital.NIBP_DIA, Vital.NIBP_MEAN]), min_size=20, max_size=50
    ),
    initial=initials,
)
def test_blood_pressure_alarms_agree(trace: list[tuple[Any, ...]], initial: list[Phase]) -> None:
    """Baselines (taken and set), baseline-relative limits, confirmation, overrides."""
    check_agreement(trace, initial)


def test_the_generator_reaches_the_interesting_paths() -> None:
    """A fixed long trace must raise physiological, technical and combination alarms, so the
    property test above is not comparing two silent engines."""
    trace: list[tuple[Any, ...]] = [("phase", 0, Phase.INFUSION)]
    trace += [("level", 0, Vital.SPO2, LEVELS[Vital.SPO2].index(87))]
    trace += [("emit", 1.0, [(0, Vital.SPO2, 0, 0.0, 1, 0), (0, Vital.HR, 0, 0.0, 1, 0)])] * 20
    trace += [("level", 0, Vital.NIBP_SYS, LEVELS[Vital.NIBP_SYS].index(210))]
    trace += [("emit", 1.0, [(0, Vital.NIBP_SYS, 0, 0.0, 2, 0)]), ("tick", 500.0)]
    vector, reference = Recorder("vector"), Recorder("reference")
    initial = [Phase.INFUSION] * 3
    assert play(vector, trace, initial) == play(reference, trace, initial)
    raised = {r.rule_id for r in vector._lifecycle.active()}
    assert {"spo2_low_high", "sbp_high_crisis", "infusion_safety", "device_silent"} <= raised


@SETTINGS
@given(trace=st.lists(sample_rows(), min_size=1, max_size=30))
def test_batching_does_not_change_the_outcome(trace: list[tuple[Any, ...]]) -> None:
    """One batch per instant (a session's samples of one time) or one batch per step: the
    same condition events and the same alarms, the combination's text included."""
    whole, split = Recorder("vector"), Recorder("vector")
    for engine in (whole, split):
        engine.add_session("s0", Phase.INFUSION, 0.0)
        engine.add_session("s1", Phase.BASELINE, 0.0)
    clock = 0.0
    for _, advance, rows in trace:
        clock += advance
        batch = []
        for session, vital, quality, age, repeat, _ in rows:
            for back in range(repeat):
                value = LEVELS[vital][(int(clock) + back + session) % len(LEVELS[vital])]
                t = clock - age - (repeat - 1 - back)
                batch.append((f"s{session % 2}", vital, value, t, int(quality)))
        whole.ingest(whole.batch(batch))
        # Instants in time order (the engine's contract: an instant arrives in one batch).
        for instant in sorted({(r[3], r[0]) for r in batch}):
            split.ingest(split.batch([r for r in batch if (r[3], r[0]) == instant]))
        whole.tick(clock)
        split.tick(clock)

    # Events of different checks at the same instant come in canonical order per batch, so
    # compare in that order; one check's own events keep their order (stable sort).
    def canonical(log: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        return sorted(log, key=lambda e: (e[3], e[0], e[1]))

    assert canonical(whole.conditions) == canonical(split.conditions)

    def alarms(engine: AlarmEngine) -> list[tuple[Any, ...]]:
        return [
            (a.alarm_id, a.state, a.priority, a.condition_active, a.text)
            for a in engine.active_alarms()
        ]

    assert alarms(whole) == alarms(split)
