"""Named scenarios: readable TOML files that set up the patient, the monitor and a timeline.

A scenario file (see `simulators/scenarios/*.toml`) has these parts, all optional:

    description = "…"
    duration_min = 100
    include = ["steady", { scenario = "probe-off", at_min = 30 }]   # composed, shifted in time
    [patient]        # pins drawn patient fields (simulators.patient.draw_patient)
    [monitor]        # device settings (NIBP interval, cuff arm, clock, …)
    [[infusion]]     # at_min + action: start | rate | pause | resume | stop
    [[event]]        # at_min + kind: vasovagal | desaturation | probe_off | motion | …

Any number may be written as `[low, high]`: it is drawn uniformly, per run, from the seed.
Scenarios compose: `load_scenario("vasovagal+probe-off")`, or `include` in a file. A file
included twice at the same time (e.g. the `steady` base of both) counts once. Later parts
override earlier ones' `[patient]` and `[monitor]` keys; timelines are merged.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from simulators.scenario_reader import Origin, Path_, Reader, ScenarioError
from simulators.scenario_schema import (
    AT,
    DURATION,
    EVENTS,
    INFUSION,
    MONITOR,
    PATIENT,
    Boolean,
    Draw,
    NibpInterval,
    Number,
    Param,
    Value,
)

__all__ = [
    "SCENARIO_DIR",
    "Scenario",
    "ScenarioError",
    "Timed",
    "available_scenarios",
    "load_scenario",
]

SCENARIO_DIR = Path(__file__).parent / "scenarios"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


# --- parsed files and composed scenarios -----------------------------------------------------


@dataclass(frozen=True)
class Timed:
    """One timeline entry: an infusion action or an event, at a time (seconds, maybe a range)."""

    at_s: Draw
    kind: str
    params: Mapping[str, Value]
    origin: Origin

    def shifted(self, offset_s: float) -> Timed:
        at = self.at_s
        moved: Draw = (
            (at[0] + offset_s, at[1] + offset_s) if isinstance(at, tuple) else (at + offset_s)
        )
        return Timed(moved, self.kind, self.params, self.origin)

    @property
    def earliest_s(self) -> float:
        return self.at_s[0] if isinstance(self.at_s, tuple) else self.at_s

    @property
    def latest_s(self) -> float:
        return self.at_s[1] if isinstance(self.at_s, tuple) else self.at_s


@dataclass(frozen=True)
class _Include:
    name: str
    offset_s: float
    origin: Origin


@dataclass(frozen=True)
class _File:
    name: str
    path: Path
    description: str
    duration_s: float | None
    includes: tuple[_Include, ...]
    patient: Mapping[str, Value]
    monitor: Mapping[str, Value]
    infusion: tuple[Timed, ...]
    events: tuple[Timed, ...]


@dataclass(frozen=True)
class Scenario:
    """A composed scenario, still with ranges: `SimulatedChair` draws them from its seed."""

    name: str
    description: str
    duration_s: float | None
    patient: Mapping[str, Value]  # only the keys some layer pinned
    monitor: Mapping[str, Value]  # every key, defaults filled in
    infusion: tuple[Timed, ...]  # sorted by time
    events: tuple[Timed, ...]  # sorted by (earliest) time
    layers: tuple[tuple[Path, float], ...] = field(repr=False)

    def __add__(self, other: Scenario) -> Scenario:
        return _compose([*self._files(), *other._files()], f"{self.name}+{other.name}")

    def _files(self) -> list[tuple[_File, float]]:
        return [(_parse_file(path), offset) for path, offset in self.layers]


def _parse_file(path: Path) -> _File:
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScenarioError("no such scenario file", source) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"cannot read the file: {exc}", source) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        found = re.search(r"line (\d+)", str(exc))
        raise ScenarioError(
            f"not valid TOML: {exc}", source, int(found.group(1)) if found else None
        ) from None
    reader = Reader(source, text)
    allowed = {"description", "duration_min", "include", "patient", "monitor", "infusion", "event"}
    for key in data:
        if key not in allowed:
            raise reader.fail(
                (key,), f"unknown key {key!r} (allowed at the top: {', '.join(sorted(allowed))})"
            )
    description = data.get("description", "")
    if not isinstance(description, str):
        raise reader.fail(("description",), "must be a string")
    duration: float | None = None
    if "duration_min" in data:
        value = reader.number(data["duration_min"], DURATION, ("duration_min",))
        if isinstance(value, tuple):
            raise reader.fail(("duration_min",), "must be a single number, not a range")
        duration = value * 60.0
    return _File(
        name=path.stem,
        path=path,
        description=description,
        duration_s=duration,
        includes=_read_includes(reader, data.get("include", [])),
        patient=reader.params(
            reader.table(data.get("patient", {}), ("patient",)), PATIENT, ("patient",), set()
        ),
        monitor=reader.params(
            reader.table(data.get("monitor", {}), ("monitor",)),
            {k: _without_default(p) for k, p in MONITOR.items()},
            ("monitor",),
            set(),
        ),
        infusion=_read_timeline(reader, data.get("infusion", []), "infusion", "action", INFUSION),
        events=_read_timeline(reader, data.get("event", []), "event", "kind", EVENTS),
    )


def _without_default(param: Param) -> Param:
    """Monitor defaults are filled in once, after composing, so layers don't override them."""
    if isinstance(param, Number):
        return Number(param.low, param.high, None, False, param.ranged, param.whole)
    if isinstance(param, Boolean):
        return Boolean()
    return NibpInterval()


def _read_includes(reader: Reader, raw: object) -> tuple[_Include, ...]:
    if not isinstance(raw, list):
        raise reader.fail(("include",), "must be a list of scenario names")
    out: list[_Include] = []
    for index, item in enumerate(raw):
        path: Path_ = ("include", index)
        offset = 0.0
        if isinstance(item, dict):
            extra = set(item) - {"scenario", "at_min"}
            if extra:
                raise reader.fail(
                    path, f"unknown key {sorted(extra)[0]!r} (allowed: at_min, scenario)"
                )
            at = reader.number(item.get("at_min", 0), AT, path)
            if isinstance(at, tuple):
                raise reader.fail(path, "at_min of an include must be a single number")
            offset = at * 60.0
            item = item.get("scenario")
        if not isinstance(item, str) or not _NAME.match(item):
            raise reader.fail(path, f"must name a scenario, got {item!r}")
        out.append(_Include(item, offset, reader.origin(path)))
    return tuple(out)


def _read_timeline(
    reader: Reader, raw: object, array: str, selector: str, schema: Mapping[str, dict[str, Param]]
) -> tuple[Timed, ...]:
    if not isinstance(raw, list):
        raise reader.fail((array,), f"must be written as [[{array}]] tables")
    out: list[Timed] = []
    for index, item in enumerate(raw):
        path: Path_ = (array, index)
        entry = reader.table(item, path)
        kind = entry.get(selector)
        if kind is None:
            raise reader.fail(path, f"missing required key {selector!r}")
        if kind not in schema:
            raise reader.fail(
                (*path, selector),
                f"unknown {selector} {kind!r} (known: {', '.join(sorted(schema))})",
            )
        if "at_min" not in entry:
            raise reader.fail(path, "missing required key 'at_min'")
        # Infusion actions are ordered commands: their times must be fixed to check the order.
        at_param = AT if array == "event" else Number(AT.low, AT.high, ranged=False)
        at = reader.number(entry["at_min"], at_param, (*path, "at_min"))
        at_s: Draw = (at[0] * 60, at[1] * 60) if isinstance(at, tuple) else at * 60
        params = reader.params(entry, schema[kind], path, {selector, "at_min"})
        out.append(Timed(at_s, kind, params, reader.origin(path)))
    return tuple(out)


def _layers(
    path: Path, offset_s: float, stack: tuple[Path, ...], origin: Origin | None
) -> list[tuple[_File, float]]:
    """The file and everything it includes, depth first, includes before the file itself."""
    if path in stack:
        chain = " → ".join(p.stem for p in (*stack, path))
        problem = f"scenarios include each other in a loop: {chain}"
        raise origin.error(problem) if origin else ScenarioError(problem, str(path))
    parsed = _parse_file(path)
    out: list[tuple[_File, float]] = []
    for include in parsed.includes:
        target = _find(include.name, path.parent)
        if target is None:
            raise include.origin.error(_unknown(include.name))
        out += _layers(target, offset_s + include.offset_s, (*stack, path), include.origin)
    out.append((parsed, offset_s))
    return out


def _find(name: str, near: Path | None = None) -> Path | None:
    for folder in (near, SCENARIO_DIR):
        if folder is not None and (folder / f"{name}.toml").is_file():
            return (folder / f"{name}.toml").resolve()
    return None


def _unknown(name: str) -> str:
    return f"unknown scenario {name!r} (known: {', '.join(available_scenarios())})"


def available_scenarios() -> list[str]:
    """Names of the scenarios shipped in `simulators/scenarios/`."""
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.toml"))


def load_scenario(spec: str | Path) -> Scenario:
    """A scenario by name ("steady"), composition ("steady+probe-off") or file path."""
    if isinstance(spec, Path) or spec.endswith(".toml") or "/" in spec:
        path = Path(spec).resolve()
        return _compose(_layers(path, 0.0, (), None), path.stem)
    parts: list[tuple[_File, float]] = []
    for name in spec.split("+"):
        name = name.strip()
        found = _find(name) if _NAME.match(name) else None
        if found is None:
            raise ScenarioError(_unknown(name))
        parts += _layers(found, 0.0, (), None)
    return _compose(parts, spec)


def _compose(parts: Sequence[tuple[_File, float]], name: str) -> Scenario:
    seen: set[tuple[Path, float]] = set()
    layers: list[tuple[_File, float]] = []
    for parsed, offset in parts:
        if (parsed.path, offset) not in seen:
            seen.add((parsed.path, offset))
            layers.append((parsed, offset))
    patient: dict[str, Value] = {}
    monitor: dict[str, Value] = {}
    infusion: list[Timed] = []
    events: list[Timed] = []
    durations: list[float] = []
    for parsed, offset in layers:
        patient.update(parsed.patient)
        monitor.update(parsed.monitor)
        infusion += (t.shifted(offset) for t in parsed.infusion)
        events += (t.shifted(offset) for t in parsed.events)
        if parsed.duration_s is not None:
            durations.append(parsed.duration_s + offset)
    for key, param in MONITOR.items():
        if key not in monitor and param.default is not None:
            monitor[key] = param.default
    infusion.sort(key=lambda t: t.earliest_s)
    events.sort(key=lambda t: t.earliest_s)
    scenario = Scenario(
        name=name,
        description=layers[-1][0].description if layers else "",
        duration_s=max(durations) if durations else None,
        patient=patient,
        monitor=monitor,
        infusion=tuple(infusion),
        events=tuple(events),
        layers=tuple((parsed.path, offset) for parsed, offset in layers),
    )
    _check(scenario)
    return scenario


def _check(scenario: Scenario) -> None:
    """Problems only visible once the parts are put together."""
    state = "idle"
    for entry in scenario.infusion:
        allowed = {
            "start": ("idle",),
            "rate": ("running", "paused"),
            "pause": ("running",),
            "resume": ("paused",),
            "stop": ("running", "paused"),
        }[entry.kind]
        if state not in allowed:
            article = "no infusion is running" if state == "idle" else f"the infusion is {state}"
            raise entry.origin.error(f"cannot {entry.kind} at this point: {article}")
        state = {"start": "running", "pause": "paused", "resume": "running", "stop": "idle"}.get(
            entry.kind, state
        )
    duration = scenario.duration_s
    if duration is not None:
        for entry in (*scenario.infusion, *scenario.events):
            if entry.latest_s >= duration:
                raise entry.origin.error(
                    f"at {entry.latest_s / 60:g} min, after the scenario ends "
                    f"({duration / 60:g} min)"
                )
    patient = scenario.patient
    sbp, dbp = patient.get("baseline_sbp"), patient.get("baseline_dbp")
    if sbp is not None and dbp is not None and _high(dbp) >= _low(sbp):
        raise ScenarioError(
            f"[patient] baseline_dbp {dbp} can reach baseline_sbp {sbp}", scenario.name
        )


def _low(value: Value) -> float:
    return value[0] if isinstance(value, tuple) else float(value)


def _high(value: Value) -> float:
    return value[1] if isinstance(value, tuple) else float(value)
