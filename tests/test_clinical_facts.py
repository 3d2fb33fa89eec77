"""Each clinical fact has one definition in monitor/, and the parts that use it agree with it.

The alarm engine (both evaluators), session review (from a real database), the exports and
the HL7 adapter are run on the same inputs, and their answers are compared: which samples are
usable, whether a value is beyond a rule's limit, what a baseline is, which phases exist,
how each vital is coded, and which colour each priority is shown in.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from app.adapters.hl7_messages import MDC_CODES, MDC_REFS, decode, map_vitals, parse_message
from app.exports.codes import PROFILES, fhir_loinc
from app.exports.fhir import session_bundle
from app.exports.hl7v2 import session_oru
from app.exports.repository import ExportSample, SessionRecord
from app.review import repository, service
from app.review.figures import VitalSeries, session_figures
from app.review.report import trace_figure as report_figure
from app.sessions.schemas import SessionOut
from app.sites.demo import seed_demo
from app.storage import migrate
from app.storage.db import Database
from app.storage.models import Device, InfusionSession, Sample, SessionPhase
from contracts.review import AlarmSpan, SessionTrace
from dashboard.review.figure import trace_figure as review_figure
from monitor.conditions import ConditionEvent, Evaluator, SampleBatch
from monitor.display import PRIORITY_COLOURS
from monitor.evaluator import VectorEvaluator
from monitor.protocol import (
    DEFAULT_PROTOCOL_PATH,
    PRIORITIES,
    Phase,
    Protocol,
    Rule,
    default_protocol,
    parse_protocol,
)
from monitor.reference import ReferenceEvaluator
from monitor.vitals import (
    DEVICE_QUALITY_NAMES,
    LOINC_CODES,
    MDC_NUMBERS,
    VITALS,
    SampleQuality,
    Vital,
    normalise,
    resolve_vital,
)
from tests.conftest import REPO

EVALUATORS = {"vector": VectorEvaluator, "reference": ReferenceEvaluator}
DEFAULT = default_protocol()


def evaluator(kind: str, protocol: Protocol) -> Evaluator:
    made: Evaluator = EVALUATORS[kind](protocol)
    return made


def raised(events: list[ConditionEvent], session: int, check: int) -> bool:
    return any(e.session == session and e.check == check and e.active for e in events)


# --- the usable sample ----------------------------------------------------------------------

# One zero-delay rule per vital, so that "the engine used this sample" shows as a raise; the
# low-signal check on the perfusion index is what exempts PI from low_perfusion.
_TRIGGERS = {  # vital: (rule's limit, value beyond it)
    Vital.HR: (40, 30),
    Vital.PR: (40, 30),
    Vital.SPO2: (85, 80),
    Vital.PI: (0.5, 0.2),
    Vital.NIBP_SYS: (80, 70),
    Vital.NIBP_DIA: (45, 40),
    Vital.NIBP_MEAN: (55, 50),
}


def trigger_protocol(untrusted: list[str]) -> Protocol:
    rules = "".join(
        f'[[rule]]\nid = "{vital.value}_low"\nvital = "{vital.value}"\nop = "<="\n'
        f'limit = {limit}\npriority = "high"\n\n'
        for vital, (limit, _) in _TRIGGERS.items()
    )
    return parse_protocol(
        f'version = "facts"\n\n[signal_quality]\nuntrusted = {untrusted!r}\n\n'.replace("'", '"')
        + rules
        + '[[technical]]\nid = "spo2_low_signal"\nkind = "low_signal"\nvital = "pi"\n'
        'limit = 0.4\nhysteresis = 0.1\npriority = "low"\n'
    )


FLAGS = [SampleQuality.NONE, *(SampleQuality[name.upper()] for name in DEVICE_QUALITY_NAMES)]
FLAGS.append(SampleQuality.ARTIFACT | SampleQuality.LOW_PERFUSION)


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Database:
    """A migrated SQLite file (which samples are usable does not depend on the backend)."""
    url = f"sqlite:///{tmp_path / 'facts.sqlite'}"
    migrate.upgrade(url, REPO / "alembic")
    return Database(url)


@pytest.mark.parametrize("kind", EVALUATORS)
@pytest.mark.parametrize(
    "untrusted",
    [
        list(DEVICE_QUALITY_NAMES),  # every device flag, as the default protocol
        ["probe_off", "artifact"],  # a clinic that trusts the rest
    ],
)
def test_review_marks_usable_exactly_the_samples_the_engine_uses(
    sqlite_db: Database, kind: str, untrusted: list[str]
) -> None:
    protocol = trigger_protocol(untrusted)
    engine = evaluator(kind, protocol)
    trials = [(vital, flags) for vital in _TRIGGERS for flags in FLAGS]
    used: dict[Vital, list[bool]] = {vital: [] for vital in _TRIGGERS}
    for index, (vital, flags) in enumerate(trials):
        engine.add_session(index, Phase.INFUSION, 0.0)
        events = engine.ingest(
            SampleBatch.from_rows([(index, vital, _TRIGGERS[vital][1], 1.0, int(flags))])
        )
        used[vital].append(raised(events, index, protocol.check_index(f"{vital.value}_low")))
    # The engine's own rule, not quality == 0: PI keeps a low_perfusion sample.
    assert used[Vital.PI][FLAGS.index(SampleQuality.LOW_PERFUSION)]
    assert not used[Vital.SPO2][FLAGS.index(SampleQuality.PROBE_OFF)]

    try:
        with sqlite_db.session() as session:
            seed_demo(session, chairs=1)
            stored = session.scalars(select(InfusionSession)).one()
            device = session.scalars(select(Device.id)).one()
            start = datetime.now(UTC) - timedelta(minutes=1)
            for index, (vital, flags) in enumerate(trials):
                at = start + timedelta(seconds=index)
                session.add(
                    Sample(
                        session_id=stored.id,
                        device_id=device,
                        chair_id=stored.chair_id,
                        vital=vital.value,
                        value=_TRIGGERS[vital][1],
                        unit=VITALS[vital].unit,
                        device_time=at,
                        received_time=at,
                        quality=int(flags),
                    )
                )
            session.commit()
            series = repository.session_series(session, stored.id, protocol)
            summary = service.summary(session, stored.id, protocol)
    finally:
        sqlite_db.close()

    for vital in _TRIGGERS:
        assert series[vital.value].usable.tolist() == used[vital], vital
    for figures in summary.vitals:
        assert figures.usable_samples == sum(used[Vital(figures.vital)]), figures.vital


# --- operators --------------------------------------------------------------------------------

BASELINE = 120.0  # an explicit NIBP baseline for the baseline-relative rule


def _phase(rule: Rule) -> Phase:
    return Phase.INFUSION if Phase.INFUSION in rule.phases else min(rule.phases)


def engine_raises(kind: str, rule_index: int, value: float) -> bool:
    """Does the default protocol's engine raise this rule on `value` (held long enough)?"""
    rule = DEFAULT.rules[rule_index]
    engine = evaluator(kind, DEFAULT)
    engine.add_session(0, _phase(rule), 0.0)
    engine.set_baseline(0, rule.vital, BASELINE)
    # Long enough for the delay; two readings for a rule that asks for a confirmation.
    times = [1.0, 1.0 + max(rule.delay_s, 1.0)]
    events: list[ConditionEvent] = []
    for t in times:
        events += engine.ingest(SampleBatch.from_rows([(0, rule.vital, value, t)]))
    return raised(events, 0, rule_index)


def review_counts_beyond(rule: Rule, value: float) -> bool:
    """Does review count time beyond this rule's limit when the vital stands at `value`?"""
    limits = service.protocol_limits(DEFAULT, {rule.vital.value: BASELINE}, [])
    limit_value = rule.limit + (BASELINE if rule.relative_to_baseline else 0.0)
    spec = next(
        s for s in limits if (s.vital, s.op, s.limit) == (rule.vital.value, rule.op, limit_value)
    )
    series = {rule.vital.value: VitalSeries.of(rule.vital.value, [0, 1], [value] * 2, [True] * 2)}
    figures = session_figures(
        series,
        session_end=2.0,
        baseline_window=None,
        stored_baselines={},
        limits=[spec],
        alarms=[],
        protocol=DEFAULT,
    )
    return figures.beyond_limits[0].minutes > 0


@pytest.mark.parametrize("kind", EVALUATORS)
@pytest.mark.parametrize("rule_index", range(len(DEFAULT.rules)), ids=[r.id for r in DEFAULT.rules])
def test_review_and_engine_agree_on_each_rule_at_and_around_its_limit(
    kind: str, rule_index: int
) -> None:
    rule = DEFAULT.rules[rule_index]
    limit = rule.limit + (BASELINE if rule.relative_to_baseline else 0.0)
    for value in (limit - 0.01, limit, limit + 0.01):
        beyond = rule.op.holds(value, limit)
        assert engine_raises(kind, rule_index, value) == beyond, (value, "engine")
        assert review_counts_beyond(rule, value) == beyond, (value, "review")


def test_the_operator_is_one_definition_for_one_value_and_for_arrays() -> None:
    values = np.array([89.99, 90.0, 90.01])
    for rule in DEFAULT.rules:
        assert rule.op.holds(values, 90.0).tolist() == [rule.op.holds(v, 90.0) for v in values]


# --- baseline -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", EVALUATORS)
@pytest.mark.parametrize("readings", [1, 2, 3])
def test_review_and_engine_take_the_protocol_s_baseline(kind: str, readings: int) -> None:
    text = DEFAULT_PROTOCOL_PATH.read_text(encoding="utf-8")
    protocol = parse_protocol(text.replace("readings = 2", f"readings = {readings}"))
    assert protocol.baseline_readings == readings
    values = [131.0, 118.5, 124.25, 140.0, 127.0]
    for count in range(len(values) + 1):
        taken = values[:count]
        engine = evaluator(kind, protocol)
        engine.add_session(0, Phase.BASELINE, 0.0)
        rows = [(0, Vital.NIBP_SYS, v, 10.0 * (i + 1)) for i, v in enumerate(taken)]
        if rows:
            engine.ingest(SampleBatch.from_rows(rows))
        expected = protocol.baseline(taken)
        if count < readings:
            assert expected is None
        else:
            assert expected == pytest.approx(np.mean(taken[-readings:]))
        assert engine.baseline(0, Vital.NIBP_SYS) == pytest.approx(expected), count

        times = [10.0 * (i + 1) for i in range(count)]
        series = {"nibp_sys": VitalSeries.of("nibp_sys", times, taken, [True] * count)}
        figures = session_figures(
            series,
            session_end=100.0,
            baseline_window=(0.0, 100.0),
            stored_baselines={},
            limits=[],
            alarms=[],
            protocol=protocol,
        )
        by_vital = {v.vital: v for v in figures.vitals}
        assert by_vital["nibp_sys"].baseline == pytest.approx(expected), count


# --- phases -------------------------------------------------------------------------------------


def test_the_server_s_session_phase_is_the_engine_s_phase() -> None:
    assert SessionPhase is Phase
    assert [p.value for p in SessionPhase] == [p.value for p in Phase]
    assert SessionOut.model_fields["phase"].annotation is Phase


# --- codes --------------------------------------------------------------------------------------


def test_every_vital_has_one_code_of_each_kind_and_no_code_names_two_vitals() -> None:
    assert set(VITALS) == set(Vital)
    vitals_of: dict[str, set[Vital]] = defaultdict(set)
    for spec in VITALS.values():
        for code in (spec.mdc, *spec.mdc_aliases):
            vitals_of[str(code.number)].add(spec.vital)
            vitals_of[code.ref].add(spec.vital)
        for loinc in spec.loinc:
            vitals_of[loinc.code].add(spec.vital)
    assert all(len(vitals) == 1 for vitals in vitals_of.values()), vitals_of
    assert len(MDC_NUMBERS) + len(LOINC_CODES) <= len(vitals_of)
    for vital, spec in VITALS.items():
        assert spec.loinc, vital
        for code in (str(spec.mdc.number), spec.mdc.ref, *(c.code for c in spec.loinc)):
            assert resolve_vital(code) is vital, code
        # Its UCUM unit and its MDC unit both go through ingest unchanged.
        for unit in (spec.unit, str(spec.mdc_unit.number), spec.mdc_unit.ref):
            assert normalise(vital, spec.plausible_max, unit) == spec.plausible_max, unit


def test_the_adapter_reads_monitor_s_codes_and_adds_only_gateway_variants() -> None:
    for number, vital in MDC_NUMBERS.items():
        assert MDC_CODES[number] is vital
    for spec in VITALS.values():
        for code in (spec.mdc, *spec.mdc_aliases):
            assert MDC_REFS[code.ref] is spec.vital


def _record() -> SessionRecord:
    start = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    samples = [
        ExportSample(
            index,
            vital,
            VITALS[vital].plausible_min + 1,
            VITALS[vital].unit,
            start + timedelta(seconds=index * 2),  # no two samples make one BP panel
            start + timedelta(seconds=index * 2),
            [],
            "facts-monitor",
        )
        for index, vital in enumerate(Vital, start=1)
    ]
    return SessionRecord(1, "Site", "Chair 1", "P-1", start, None, samples)


def test_both_exports_code_each_vital_from_monitor_s_table_and_the_adapter_maps_it_back() -> None:
    record = _record()
    now = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
    oru = session_oru(record, now)
    obx = [segment.split("|") for segment in oru.split("\r") if segment.startswith("OBX|")]
    for vital, fields in zip(Vital, obx, strict=True):
        spec = VITALS[vital]
        loinc, mdc, unit = spec.loinc[0], spec.mdc, spec.mdc_unit
        assert fields[3] == f"{mdc.number}^{mdc.ref}^MDC^{loinc.code}^{loinc.display}^LN"
        assert fields[6] == f"{unit.number}^{unit.ref}^MDC^{spec.unit}^{spec.unit}^UCUM"
    # The adapter's door reads every exported row back as the vital it came from.
    mapped = map_vitals(parse_message(decode(oru.encode())[0], UTC), now)
    assert [value.vital for value in mapped.values] == list(Vital)
    for value in mapped.values:
        assert normalise(value.vital, value.value, value.unit) == value.value

    bundle = session_bundle(record, now)
    observations = [
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation"
    ]
    assert len(observations) == len(Vital)
    for vital, observation in zip(Vital, observations, strict=True):
        spec = VITALS[vital]
        codings = observation["code"]["coding"]
        mdc = [c for c in codings if c["system"] == "urn:iso:std:iso:11073:10101"]
        assert [(c["code"], c["display"]) for c in mdc] == [(str(spec.mdc.number), spec.mdc.ref)]
        loinc = [(c["code"], c["display"]) for c in codings if c["system"] == "http://loinc.org"]
        assert loinc == [(c.code, c.display) for c in fhir_loinc(vital)]
        # The vital's own LOINC codes are all there, each resolving back to it.
        own = [(c.code, c.display) for c in spec.loinc]
        assert set(own) <= set(loinc)
        assert all(resolve_vital(code) is vital for code, _ in own)
        required = PROFILES[vital].loinc
        assert required is None or loinc[0][0] == required
        assert observation["valueQuantity"]["code"] == spec.unit


# --- priority colours ---------------------------------------------------------------------------


def _trace() -> SessionTrace:
    start = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    alarms = [
        AlarmSpan(f"a{i}", "rule", p.value, p.value, start, start + timedelta(minutes=1), None)
        for i, p in enumerate(PRIORITIES)
    ]
    return SessionTrace(1, 1, start, start + timedelta(minutes=5), [], [], [], alarms, [])


def test_the_review_figure_and_the_report_colour_priorities_as_monitor_does() -> None:
    trace = _trace()
    shapes = review_figure(trace)["layout"]["shapes"]
    shown = {
        s["name"].split(":")[1]: s["fillcolor"] for s in shapes if s["name"].startswith("alarm:")
    }
    assert shown == {p.value: PRIORITY_COLOURS[p] for p in PRIORITIES}

    alarm_row = report_figure(trace, 10.0, 4.6).axes[3]
    printed = [line.get_color() for line in alarm_row.get_lines()]
    assert printed == [PRIORITY_COLOURS[p] for p in PRIORITIES]
