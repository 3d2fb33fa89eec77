"""Nuisance alarm load: alarms per chair-hour for every scenario and every real trace.

Issue 14, point 7. An offline replay (no server): each source's samples go through
`monitor.engine.AlarmEngine` (default protocol) second by second, with the session's phases,
and the physiological alarms it raises are counted per chair-hour three ways:

* raw: every rule's limit crossed by a usable sample is an alarm onset, with no delay, no
  confirmation, no hysteresis and no grouping (one onset each time a rule's condition goes
  from not violated to violated). Rules relative to a baseline are left out (they need the
  engine's baseline); a rule counts only in the phases it applies to, as in the engine.
* before: the engine as of commit 6d76720 (before issue 14), run in a subprocess whose
  PYTHONPATH points at a worktree of that commit (`--before-tree`).
* after: the engine of this tree.

Sources: every scenario in simulators/scenarios (one simulated chair per scenario and seed,
phases from its timeline: baseline from the start, infusion from the pump's start, recovery
from its end) and the real traces in ../shared/data/vitals (phase: infusion throughout, the
phase in which the most rules apply). For the scenarios with a true event (desaturation,
vasovagal, hypertensive responder) the bench checks that an alarm of the event's vital was
raised within the rule's disclosed delay (docs/ALARMS.md) of the condition that the samples
showed; exits 1 if one was missed.

    git -C /work/main worktree add /tmp/nuisance-before 6d76720
    python bench/bench_nuisance.py --before-tree /tmp/nuisance-before [--seeds 3]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
VITALS_DIR = REPO.parent / "shared" / "data" / "vitals"
START = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)

# One sample: (seconds from the source's start, vital code, value, quality bits).
Sample = tuple[float, str, float, int]
# A phase change: (seconds from the start, phase value).
PhaseChange = tuple[float, str]
# Slack on a disclosed delay: samples come once a second and the engine is ticked once a
# second, so a raise may be stamped up to one sample period later than onset + delay.
SLACK_S = 2.0


@dataclass
class TrueEvent:
    """A scenario's event: where it happens and which vitals should alarm for it."""

    label: str
    start_s: float
    end_s: float
    vitals: tuple[str, ...]


@dataclass
class Source:
    name: str
    samples: list[Sample]
    phases: list[PhaseChange]
    duration_s: float
    events: list[TrueEvent] = field(default_factory=list)


@dataclass
class Transition:
    time: float
    rule_id: str
    event: str
    kind: str


# --- the replay (runs against this tree's monitor or the before tree's) ----------------------


def replay(source: Source) -> list[Transition]:
    """Feed a source through the engine second by second; every transition it produced.

    Only API that existed at 6d76720 is used (AlarmEngine, SampleBatch.from_rows, Phase), so
    the same code measures the engine before issue 14.
    """
    from monitor.conditions import SampleBatch
    from monitor.engine import AlarmEngine
    from monitor.protocol import Phase

    engine = AlarmEngine()
    phases = sorted(source.phases)
    key = "bench-chair"
    first_phase = phases[0][1] if phases and phases[0][0] <= 0 else "infusion"
    index = engine.add_session(key, Phase(first_phase), time=0.0)
    out: list[Transition] = []

    def take(transitions: Iterable[Any]) -> None:
        out.extend(
            Transition(float(t.time), t.rule_id, str(t.event), str(t.kind)) for t in transitions
        )

    samples = sorted(source.samples, key=lambda s: s[0])
    position = 0
    pending = [p for p in phases if p[0] > 0]
    last = math.ceil(source.duration_s)
    for second in range(last + 1):
        while pending and pending[0][0] <= second:
            at, phase = pending.pop(0)
            take(engine.set_phase(key, Phase(phase), at))
        rows = []
        while position < len(samples) and samples[position][0] <= second:
            at, vital, value, quality = samples[position]
            rows.append((index, vital, value, at, quality))
            position += 1
        if rows:
            take(engine.ingest(SampleBatch.from_rows(rows)))
        take(engine.tick(float(second)))
    return out


def replay_main(path: Path) -> None:
    """`--replay-only`: the transitions of every source in a JSON file, as JSON on stdout."""
    import monitor

    data = json.loads(path.read_text())
    result = {
        "monitor": str(Path(monitor.__file__).resolve().parent),
        "sources": {s["name"]: [t.__dict__ for t in replay(_source_from_json(s))] for s in data},
    }
    json.dump(result, sys.stdout)


def _source_from_json(raw: dict[str, Any]) -> Source:
    return Source(
        raw["name"],
        [tuple(s) for s in raw["samples"]],
        [tuple(p) for p in raw["phases"]],
        raw["duration_s"],
    )


# --- raw thresholds ------------------------------------------------------------------------


def raw_onsets(source: Source) -> list[tuple[float, str]]:
    """(time, rule id) each time a usable sample puts a rule's condition into violation."""
    from monitor.conditions import sample_usable, untrusted_mask
    from monitor.protocol import Phase, default_protocol

    protocol = default_protocol()
    rules = [r for r in protocol.rules if not r.relative_to_baseline]
    violated = {r.id: False for r in rules}
    phases = sorted(source.phases)
    onsets: list[tuple[float, str]] = []
    for at, vital, value, quality in sorted(source.samples, key=lambda s: s[0]):
        phase = _phase_at(phases, at)
        for rule in rules:
            if rule.vital.value != vital or Phase(phase) not in rule.phases:
                continue
            if not sample_usable(value, quality, untrusted_mask(protocol, rule.vital)):
                continue
            now = _violates(rule.op.value, value, rule.limit)
            if now and not violated[rule.id]:
                onsets.append((at, rule.id))
            violated[rule.id] = now
    return onsets


def _phase_at(phases: Sequence[PhaseChange], at: float) -> str:
    current = "infusion"
    for when, phase in phases:
        if when <= at:
            current = phase
    return current


def _violates(op: str, value: float, limit: float) -> bool:
    return {
        "<": value < limit,
        "<=": value <= limit,
        ">": value > limit,
        ">=": value >= limit,
    }[op]


# --- true events -----------------------------------------------------------------------------


@dataclass
class EventCheck:
    source: str
    event: TrueEvent
    rule_id: str | None  # the first rule whose condition held for its delay, if any
    condition_s: float | None  # when that condition began (first violating usable sample)
    delay_s: float | None  # the rule's disclosed delay
    raised_s: float | None  # first alarm of the event's vital at or after the condition
    alarmed: bool

    @property
    def latency_s(self) -> float | None:
        if self.raised_s is None or self.condition_s is None:
            return None
        return self.raised_s - self.condition_s


def check_events(source: Source, transitions: Sequence[Transition]) -> list[EventCheck]:
    """For each true event: did the samples hold a rule's condition for its delay, and if so
    was an alarm of that vital raised within the delay (plus `SLACK_S`)?"""
    from monitor.conditions import sample_usable, untrusted_mask
    from monitor.protocol import Phase, default_protocol

    protocol = default_protocol()
    vital_of = {r.id: r.vital.value for r in protocol.rules}
    phases = sorted(source.phases)
    checks: list[EventCheck] = []
    for event in source.events:
        found: tuple[float, str, float] | None = None  # (condition start, rule, delay)
        for rule in protocol.rules:
            if (
                rule.vital.value not in event.vitals
                or rule.relative_to_baseline
                or rule.confirm_within_s is not None
            ):
                continue
            mask = untrusted_mask(protocol, rule.vital)
            began: float | None = None
            for at, vital, value, quality in sorted(source.samples, key=lambda s: s[0]):
                if vital != rule.vital.value or not event.start_s <= at <= event.end_s:
                    continue
                if Phase(_phase_at(phases, at)) not in rule.phases:
                    began = None
                    continue
                if not sample_usable(value, quality, mask):
                    continue  # unusable samples neither start nor reset a condition
                if not _violates(rule.op.value, value, rule.limit):
                    began = None
                    continue
                began = at if began is None else began
                if at - began >= rule.delay_s:
                    if found is None or began < found[0]:
                        found = (began, rule.id, rule.delay_s)
                    break
        if found is None:
            checks.append(EventCheck(source.name, event, None, None, None, None, True))
            continue
        began, rule_id, delay = found
        vital = vital_of[rule_id]
        raised = [
            t.time
            for t in transitions
            if t.event in ("raised", "condition_returned")
            and t.kind == "physiological"
            and vital_of.get(t.rule_id, "") == vital
            and t.time >= event.start_s
        ]
        first = min(raised) if raised else None
        alarmed = first is not None and first - began <= delay + SLACK_S
        checks.append(EventCheck(source.name, event, rule_id, began, delay, first, alarmed))
    return checks


# --- sources ---------------------------------------------------------------------------------


def scenario_source(name: str, seed: int, duration_s: int | None = None) -> Source:
    """A scenario's samples (Vigil's own times, i.e. true time: the clock-drift scenario's
    device clock is what adapters correct, not what this bench measures)."""
    from monitor.vitals import SampleQuality
    from simulators.chair import SimulatedChair

    chair = SimulatedChair(name, seed=seed, start=START, duration_s=duration_s)
    samples: list[Sample] = []
    phases: list[PhaseChange] = [(0.0, "baseline")]
    for tick in chair:
        if "infusion_start" in tick.annotations:
            phases.append((float(tick.elapsed_s), "infusion"))
        if {"infusion_complete", "infusion_stop"} & set(tick.annotations):
            phases.append((float(tick.elapsed_s), "recovery"))
        body = tick.body
        if body is None:
            continue
        for item in body["observations"]:
            quality = int(SampleQuality.from_names(list(item.get("quality", []))))
            samples.append((float(tick.elapsed_s), item["vital"], item["value"], quality))
    events: list[TrueEvent] = []
    end = float(chair.duration_s or 0)
    for planned in chair.timeline:
        p = planned.params
        if planned.kind == "desaturation":
            length = float(p["descent_s"]) + max(float(p["duration_s"]) - float(p["descent_s"]), 10)
            events.append(
                TrueEvent("desaturation", planned.start_s, planned.start_s + length, ("spo2",))
            )
        elif planned.kind == "vasovagal":
            length = float(p["onset_s"]) + float(p["plateau_s"]) + 60 * float(p["recovery_min"])
            events.append(
                TrueEvent(
                    "vasovagal",
                    planned.start_s,
                    planned.start_s + length,
                    ("hr", "pr", "nibp_sys", "nibp_mean", "spo2"),
                )
            )
    if "sensitivity_multiplier" in chair.scenario.patient:
        infusion = next((at for at, phase in phases if phase == "infusion"), 0.0)
        events.append(TrueEvent("hypertensive", infusion, end, ("nibp_sys", "nibp_dia")))
    return Source(f"{name} (seed {seed})", samples, phases, end, events)


def _trace(name: str, rows: Iterable[tuple[float, dict[str, float]]]) -> Source:
    """A trace's per-moment values as samples; NIBP counts as a reading only when it changes
    (monitors repeat the last reading on every row)."""
    samples: list[Sample] = []
    last_nibp: tuple[float, ...] | None = None
    first: float | None = None
    end = 0.0
    for at, values in rows:
        first = at if first is None else first
        offset = at - first
        end = offset
        nibp = tuple(values.get(v, math.nan) for v in ("nibp_sys", "nibp_dia", "nibp_mean"))
        new_nibp = nibp != last_nibp and not all(math.isnan(x) for x in nibp)
        last_nibp = nibp
        for vital, value in values.items():
            if math.isnan(value) or (vital.startswith("nibp") and not new_nibp):
                continue
            samples.append((offset, vital, value, 0))
    return Source(name, samples, [(0.0, "infusion")], end)


def _number(text: str, zero_is_missing: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        return math.nan
    return math.nan if (zero_is_missing and value == 0) or not math.isfinite(value) else value


def trace_sources(directory: Path) -> tuple[list[Source], list[str]]:
    """The traces this bench can read, and what it skipped (with why)."""
    sources: list[Source] = []
    skipped: list[str] = []
    for path in sorted(directory.iterdir()):
        name = path.name
        if name.endswith(".hea"):
            skipped.append(f"{name}: WFDB header; its numerics are read from the _1min.csv")
        elif name.startswith("ge_") and name.endswith("_original.csv"):
            skipped.append(f"{name}: same rows as _selected.csv, 400 columns, names repeated")
        elif name.startswith("ge_"):
            sources.append(_ge(path))
        elif name.startswith("mimic"):
            sources.append(_mimic(path))
        elif name.startswith("philips"):
            sources.append(_philips(path))
        else:
            skipped.append(f"{name}: unknown format")
    return sources, skipped


def _ge(path: Path) -> Source:
    columns = {
        "ECG_HR": "hr",
        "SpO2_POS": "spo2",
        "SpO2_PR": "pr",
        "NIBP_Systolic": "nibp_sys",
        "NIBP_Diastolic": "nibp_dia",
        "NIBP_Mean": "nibp_mean",
    }
    rows = []
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            at = datetime.strptime(row["Time"], "%Y-%m-%d %I:%M:%S %p").timestamp()
            values = {v: _number(row.get(c, "-"), False) for c, v in columns.items()}
            rows.append((at, values))
    return _trace(path.stem, rows)


def _mimic(path: Path) -> Source:
    # MIMIC-II numerics write 0 for "no signal": a value of 0 is missing, not a reading.
    columns = {
        "HR [bpm]": "hr",
        "PULSE [bpm]": "pr",
        "SpO2 [%]": "spo2",
        "NBPSys [mmHg]": "nibp_sys",
        "NBPDias [mmHg]": "nibp_dia",
        "NBPMean [mmHg]": "nibp_mean",
    }
    rows = []
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            values = {v: _number(row.get(c) or "", True) for c, v in columns.items()}
            rows.append((float(row["elapsed_s"]), values))
    return _trace(path.stem.removesuffix("_numerics_1min"), rows)


def _philips(path: Path) -> Source:
    from simulators.replay import read_recording

    recording = read_recording(path)  # Vital Recorder export; repeated NIBP already dropped
    origin = recording.start
    samples: list[Sample] = [
        ((s.time - origin).total_seconds(), s.vital, s.value, 0) for s in recording.samples
    ]
    return Source(path.stem, samples, [(0.0, "infusion")], recording.span_s)


# --- counting and the report -----------------------------------------------------------------


@dataclass
class Row:
    name: str
    hours: float
    raw: int
    before: int | None
    after: int
    after_per_parameter: int
    after_technical: int


def count_raised(transitions: Sequence[Transition], kind: str = "physiological") -> int:
    return sum(1 for t in transitions if t.event == "raised" and t.kind == kind)


def count_per_parameter(transitions: Sequence[Transition]) -> int:
    """Physiological alarms as a one-alarm-per-parameter screen would count them (issue 14
    point 1): a raise counts only when no other alarm of the same vital has its condition
    active (a lower tier going up to a higher one is the same alarm). Rules without a vital
    (the combination) count on their own."""
    from monitor.protocol import default_protocol

    vital_of = {r.id: r.vital.value for r in default_protocol().rules}
    active: dict[str, set[str]] = {}
    count = 0
    for t in sorted(transitions, key=lambda t: t.time):  # stable: the engine's order
        if t.kind != "physiological":
            continue
        rules = active.setdefault(vital_of.get(t.rule_id, t.rule_id), set())
        if t.event in ("raised", "condition_returned"):
            count += t.event == "raised" and not rules
            rules.add(t.rule_id)
        elif t.event in ("condition_ended", "cleared"):
            rules.discard(t.rule_id)
    return count


def run_before(sources: Sequence[Source], tree: Path) -> dict[str, list[Transition]]:
    """The same replay against the engine of another tree (the one before issue 14)."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump([s.__dict__ | {"events": []} for s in sources], handle)
    try:
        env = {**os.environ, "PYTHONPATH": str(tree)}
        done = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--replay-only", handle.name],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            cwd=tree,
        )
    finally:
        os.unlink(handle.name)
    result = json.loads(done.stdout)
    if Path(result["monitor"]) != (tree / "monitor").resolve():
        raise RuntimeError(f"the before replay imported {result['monitor']}, not {tree}")
    return {name: [Transition(**t) for t in items] for name, items in result["sources"].items()}


def _per_hour(count: int | None, hours: float) -> str:
    return "-" if count is None else f"{count / hours:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="simulated chairs per scenario")
    parser.add_argument("--duration-min", type=float, default=None, help="default: each file's")
    parser.add_argument("--before-tree", type=Path, default=None, help="a worktree at 6d76720")
    parser.add_argument("--vitals", type=Path, default=VITALS_DIR)
    parser.add_argument("--replay-only", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.replay_only is not None:
        replay_main(args.replay_only)
        return

    from simulators.scenarios import available_scenarios

    duration = None if args.duration_min is None else round(args.duration_min * 60)
    scenarios = [
        scenario_source(name, seed, duration)
        for name in available_scenarios()
        for seed in range(1, args.seeds + 1)
    ]
    traces, skipped = trace_sources(args.vitals)
    sources = scenarios + traces
    before = run_before(sources, args.before_tree) if args.before_tree else {}

    rows: list[Row] = []
    checks: list[EventCheck] = []
    for source in sources:
        after = replay(source)
        hours = max(source.duration_s, 1.0) / 3600
        old = before.get(source.name)
        rows.append(
            Row(
                source.name,
                hours,
                len(raw_onsets(source)),
                None if old is None else count_raised(old),
                count_raised(after),
                count_per_parameter(after),
                count_raised(after, "technical"),
            )
        )
        checks += check_events(source, after)

    print_report(rows, checks, skipped, args)
    if any(not c.alarmed for c in checks):
        sys.exit(1)


def print_report(
    rows: Sequence[Row], checks: Sequence[EventCheck], skipped: Sequence[str], args: Any
) -> None:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    print(f"date:    {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    print(f"machine: nproc {os.cpu_count()}, {cpu}")
    print(f"seeds per scenario: {args.seeds}; duration: {args.duration_min or 'each file'}")
    print("physiological alarms raised per chair-hour; 'param': after, one alarm per vital;")
    print("'cut': after vs raw; 'tech': technical alarms raised per chair-hour, after")
    print(
        f"{'source':<52}{'h':>6}{'raw':>7}{'before':>7}{'after':>7}{'cut':>6}"
        f"{'param':>7}{'cut':>6}{'tech':>7}"
    )

    def cut(new: int, raw: int) -> str:
        return f"{100 * (1 - new / raw):.0f}%" if raw else "-"

    def line(name: str, hours: float, counts: tuple[int, int | None, int, int, int]) -> None:
        raw, old, new, param, tech = counts
        print(
            f"{name:<52}{hours:>6.2f}{_per_hour(raw, hours):>7}{_per_hour(old, hours):>7}"
            f"{_per_hour(new, hours):>7}{cut(new, raw):>6}{_per_hour(param, hours):>7}"
            f"{cut(param, raw):>6}{_per_hour(tech, hours):>7}"
        )

    def counts(rows: Sequence[Row]) -> tuple[int, int | None, int, int, int]:
        before = None if any(r.before is None for r in rows) else sum(r.before or 0 for r in rows)
        return (
            sum(r.raw for r in rows),
            before,
            sum(r.after for r in rows),
            sum(r.after_per_parameter for r in rows),
            sum(r.after_technical for r in rows),
        )

    for row in rows:
        line(row.name, row.hours, counts([row]))
    groups = {
        "scenarios": [r for r in rows if "(seed" in r.name],
        "real traces": [r for r in rows if "(seed" not in r.name],
        "total": list(rows),
    }
    for label, group in groups.items():
        line(f"== {label}", sum(r.hours for r in group), counts(group))
    for text in skipped:
        print(f"skipped: {text}")
    print("true events (condition: first rule whose condition held for its delay):")
    for check in checks:
        if check.rule_id is None:
            print(f"  {check.source}: {check.event.label}: no rule's condition held (no alarm due)")
            continue
        if check.raised_s is None:
            raised = "not raised"
        else:
            after_onset = check.raised_s - check.event.start_s
            raised = f"raised after {check.latency_s:.0f} s ({after_onset:.0f} s after event onset)"
        print(
            f"  {check.source}: {check.event.label}: {check.rule_id} from "
            f"{check.condition_s:.0f} s, {raised}; disclosed delay {check.delay_s:.0f} s: "
            f"{'OK' if check.alarmed else 'MISSED'}"
        )
    raw = sum(r.raw for r in rows)
    after = sum(r.after for r in rows)
    param = sum(r.after_per_parameter for r in rows)
    reduction = 100 * (1 - after / raw) if raw else 0.0
    grouped = 100 * (1 - param / raw) if raw else 0.0
    missed = sum(1 for c in checks if not c.alarmed)
    goal = "met" if reduction >= 80 and not missed else "NOT met"
    print(
        f"verdict: after is {reduction:.1f}% below raw thresholds (goal ≥ 80%; counted one per "
        f"vital: {grouped:.1f}%); {missed} true event(s) missed of "
        f"{sum(1 for c in checks if c.rule_id)} due: goal {goal}"
    )


if __name__ == "__main__":
    main()
