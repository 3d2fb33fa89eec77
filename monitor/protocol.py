"""The alarm protocol: rules, technical alarms and alarm-lifecycle settings from a TOML file.

A clinic edits the protocol file (``default_protocol.toml`` is the brief's default for a
ketamine chair); `load_protocol` reads and validates it. Every validation error is a
`ProtocolError` that names the rule, the key and the line in the file, so a clinician who
mistyped a limit is pointed at the right line. Per-session limit overrides live in
`SessionLimits`, which keeps a record of who changed what, when and why.
"""

from __future__ import annotations

import enum
import math
import operator
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

import numpy as np
from numpy.typing import NDArray

from monitor.vitals import VITALS, SampleQuality, Vital

DEFAULT_PROTOCOL_PATH = Path(__file__).with_name("default_protocol.toml")


class Phase(enum.StrEnum):
    """A session's phase. The server stores and serves this very enum (its `SessionPhase`)."""

    CHECKED_IN = "checked_in"
    BASELINE = "baseline"
    INFUSION = "infusion"
    RECOVERY = "recovery"
    DISCHARGED = "discharged"


PHASES: tuple[Phase, ...] = tuple(Phase)
PHASE_INDEX: dict[Phase, int] = {phase: i for i, phase in enumerate(PHASES)}


class Priority(enum.StrEnum):
    """Alarm priority. CRISIS is shown as IEC 60601-1-8 high priority and is escalated."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRISIS = "crisis"

    @property
    def rank(self) -> int:
        return _PRIORITY_RANK[self]

    def raised(self) -> Priority:
        """The next priority up (escalation); CRISIS stays CRISIS."""
        return PRIORITIES[min(self.rank + 1, len(PRIORITIES) - 1)]


PRIORITIES: tuple[Priority, ...] = tuple(Priority)
_PRIORITY_RANK: dict[Priority, int] = {p: i for i, p in enumerate(PRIORITIES)}


class AlarmKind(enum.StrEnum):
    """IEC 60601-1-8 keeps physiological and technical alarm conditions apart."""

    PHYSIOLOGICAL = "physiological"
    TECHNICAL = "technical"


class Op(enum.StrEnum):
    """The comparison that makes a rule's condition true: ``value <op> limit``."""

    LT = "<"
    LE = "<="
    GT = ">"
    GE = ">="

    @property
    def symbol(self) -> str:
        return _OP_SYMBOL[self]

    @property
    def is_upper(self) -> bool:
        """True for an upper limit (> or >=), False for a lower limit."""
        return self in (Op.GT, Op.GE)

    @property
    def strict(self) -> bool:
        return self in (Op.GT, Op.LT)

    @overload
    def holds(self, value: float, limit: float) -> bool: ...

    @overload
    def holds(
        self, value: NDArray[np.float64], limit: float | NDArray[np.float64]
    ) -> NDArray[np.bool_]: ...

    def holds(self, value: Any, limit: Any) -> Any:
        """Whether ``value <op> limit``, for one value or element-wise over numpy arrays.

        The one definition of the operators: the scalar reference evaluator and session
        review call it; the numpy evaluator is held to the reference by property tests.
        """
        return _OP_COMPARE[self](value, limit)


_OP_SYMBOL = {Op.LT: "<", Op.LE: "≤", Op.GT: ">", Op.GE: "≥"}
_OP_COMPARE: dict[Op, Callable[[Any, Any], Any]] = {
    Op.LT: operator.lt,
    Op.LE: operator.le,
    Op.GT: operator.gt,
    Op.GE: operator.ge,
}


class TechnicalKind(enum.StrEnum):
    DEVICE_SILENT = "device_silent"  # no sample of any vital for window_s
    NO_VALUE = "no_value"  # no usable value of one vital for window_s
    NIBP_STALE = "nibp_stale"  # no valid NIBP reading for the session's interval + grace_s
    PROBE_OFF = "probe_off"  # the latest sample of the vital is flagged PROBE_OFF
    NIBP_FAILED = "nibp_failed"  # `consecutive` failed cuff cycles without a valid reading
    LOW_SIGNAL = "low_signal"  # perfusion index at or below its limit; gates SpO2


# Checks a tick evaluates (they depend on time passing); the others change on samples.
TICK_KINDS = frozenset(
    {TechnicalKind.DEVICE_SILENT, TechnicalKind.NO_VALUE, TechnicalKind.NIBP_STALE}
)

# Short labels for alarm text ("SBP 184 ≥ 180"); vitals.py's labels are for axes.
VITAL_LABEL: dict[Vital, str] = {
    Vital.HR: "HR",
    Vital.PR: "PR",
    Vital.SPO2: "SpO2",
    Vital.PI: "PI",
    Vital.NIBP_SYS: "SBP",
    Vital.NIBP_DIA: "DBP",
    Vital.NIBP_MEAN: "MAP",
}

_DEFAULT_GROUP: dict[Vital, str] = {
    Vital.HR: "heart_rate",
    Vital.PR: "heart_rate",
    Vital.SPO2: "spo2",
    Vital.PI: "perfusion",
    Vital.NIBP_SYS: "blood_pressure",
    Vital.NIBP_DIA: "blood_pressure",
    Vital.NIBP_MEAN: "blood_pressure",
}


def default_alarm_group(vital: Vital, op: Op) -> str:
    """The alarm a rule is a tier of, unless the protocol says otherwise: its vital and the
    direction of its limit ("spo2_low", "sbp_high", "map_low")."""
    return f"{VITAL_LABEL[vital].lower()}_{'high' if op.is_upper else 'low'}"


DEFAULT_RULE_PHASES = frozenset({Phase.CHECKED_IN, Phase.BASELINE, Phase.INFUSION, Phase.RECOVERY})
DEFAULT_TECHNICAL_PHASES = frozenset({Phase.BASELINE, Phase.INFUSION, Phase.RECOVERY})


@dataclass(frozen=True)
class Rule:
    """A physiological alarm condition on one vital: ``value <op> limit``.

    With `relative_to_baseline` the limit is an offset added to the session's baseline, and
    the rule is not evaluated until a baseline exists. `delay_s` (continuous vitals) is how
    long the condition must hold before it raises; `confirm_within_s` (NIBP) asks for a
    second qualifying reading at most that long after the first. `hysteresis` is how far
    back past the limit the value must go before an active condition clears.

    `alarm_group` names the one alarm this rule is a tier of: the rules of a group (SpO2
    ≤ 93, ≤ 90, ≤ 85) are one alarm whose priority and text follow the worst tier that
    holds. `group` is the combination rule's grouping (one quantity measured two ways,
    e.g. HR and PR), a different thing.
    """

    id: str
    vital: Vital
    op: Op
    limit: float
    priority: Priority
    delay_s: float = 0.0
    hysteresis: float = 0.0
    confirm_within_s: float | None = None
    relative_to_baseline: bool = False
    phases: frozenset[Phase] = DEFAULT_RULE_PHASES
    group: str = ""
    alarm_group: str = ""
    advice: str = ""
    overridable: bool = True
    line: int | None = None  # of its id in the protocol file

    def clear_limit(self, limit: float) -> float:
        """The limit the value must get past, the other way, to clear an active condition."""
        return limit - self.hysteresis if self.op.is_upper else limit + self.hysteresis


@dataclass(frozen=True)
class TechnicalCheck:
    """A technical alarm condition; which fields matter depends on `kind`."""

    id: str
    kind: TechnicalKind
    priority: Priority
    phases: frozenset[Phase] = DEFAULT_TECHNICAL_PHASES
    vital: Vital | None = None
    window_s: float = 0.0
    grace_s: float = 0.0
    consecutive: int = 2
    limit: float = 0.0
    hysteresis: float = 0.0
    suppressed_by: tuple[str, ...] = ()
    text: str = ""
    line: int | None = None

    @property
    def tick_driven(self) -> bool:
        return self.kind in TICK_KINDS


@dataclass(frozen=True)
class CombinationRule:
    """Several physiological conditions at once escalate to one combination alarm.

    It is active while at least `high_groups` groups have an active high (or crisis)
    condition, or at least `medium_groups` groups have an active medium-or-higher condition.
    Groups keep one vital measured two ways (HR and PR, SBP and DBP) from counting twice.
    A count of 0 disables that half.
    """

    id: str
    priority: Priority
    high_groups: int
    medium_groups: int
    phases: frozenset[Phase]
    text: str
    line: int | None = None

    def holds(self, high: int, medium: int) -> bool:
        return (self.high_groups > 0 and high >= self.high_groups) or (
            self.medium_groups > 0 and medium >= self.medium_groups
        )


@dataclass(frozen=True)
class LifecycleSettings:
    """Clinic settings for alarm state: latching, audio pause and escalation."""

    latching: frozenset[Priority] = frozenset({Priority.HIGH, Priority.CRISIS})
    audio_pause_s: float = 120.0
    escalate_after_s: Mapping[Priority, float] = field(default_factory=dict)


# --- the session workflow: pre-infusion check, scores, discharge readiness ----------------
# monitor/workflow.py evaluates these; docs/WORKFLOW.md gives each default's source.


@dataclass(frozen=True)
class BloodPressurePair:
    """A systolic/diastolic pair of limits in mmHg, as clinicians write them ("160/100")."""

    sbp: float
    dbp: float

    @property
    def text(self) -> str:
        return f"{self.sbp:g}/{self.dbp:g}"


class ScoreKind(enum.StrEnum):
    """The two scores a nurse records during a session."""

    SEDATION = "sedation"  # MOAA/S by default: lower is deeper
    DISSOCIATION = "dissociation"  # CADSS-6 by default: higher is more dissociated


@dataclass(frozen=True)
class ScoreSchedule:
    """When scores are due: every `interval_s` of the phase while the session is in `phases`;
    overdue `overdue_after_s` after that."""

    scales: frozenset[ScoreKind] = frozenset(ScoreKind)
    phases: frozenset[Phase] = frozenset({Phase.INFUSION, Phase.RECOVERY})
    interval_s: Mapping[Phase, float] = field(
        default_factory=lambda: {Phase.INFUSION: 900.0, Phase.RECOVERY: 900.0}
    )
    overdue_after_s: float = 300.0


@dataclass(frozen=True)
class SedationScale:
    """The sedation scale (lower is deeper), the alarm it raises and the score that confirms
    the nurse's `confirms` tick at discharge."""

    name: str = "MOAA/S"
    minimum: float = 0.0
    maximum: float = 5.0
    alarm_id: str = "sedation_deep"
    alarm_at_or_below: float = 2.0
    alarm_priority: Priority = Priority.HIGH
    alarm_advice: str = "deep sedation"
    ready_at_or_above: float = 5.0
    confirms: str = "alert"


@dataclass(frozen=True)
class DissociationScale:
    """The dissociation scale (higher is more dissociated) and its "resolved" threshold."""

    name: str = "CADSS-6"
    minimum: float = 0.0
    maximum: float = 24.0
    resolved_at_or_below: float = 2.0
    confirms: str = "dissociation_resolved"


# Discharge criteria Vigil measures (monitor/workflow.py); the nurse ticks the others.
MEASURED_CRITERIA = ("time_since_infusion_end", "blood_pressure", "heart_rate", "spo2")
DEFAULT_TICKED_CRITERIA = (
    "alert",
    "oriented",
    "ambulating",
    "dissociation_resolved",
    "escort_present",
)


@dataclass(frozen=True)
class DischargeCriteria:
    """Discharge readiness: the objective criteria Vigil computes and the ones a nurse ticks."""

    after_infusion_end_s: float = 1800.0
    bp_readings: int = 2
    bp_within_fraction: float = 0.20  # of the baseline, per NIBP vital
    bp_below: BloodPressurePair = BloodPressurePair(160.0, 100.0)
    heart_rate_vitals: tuple[Vital, ...] = (Vital.HR, Vital.PR)
    heart_rate_min: float = 50.0
    heart_rate_max: float = 110.0
    spo2_min: float = 92.0
    vitals_max_age_s: float = 600.0
    ticked: tuple[str, ...] = DEFAULT_TICKED_CRITERIA


@dataclass(frozen=True)
class WorkflowSettings:
    """The clinic's session workflow: the `[workflow]` section of the protocol file."""

    advisory: BloodPressurePair = BloodPressurePair(140.0, 90.0)
    override: BloodPressurePair = BloodPressurePair(160.0, 100.0)
    scores: ScoreSchedule = field(default_factory=ScoreSchedule)
    sedation: SedationScale = field(default_factory=SedationScale)
    dissociation: DissociationScale = field(default_factory=DissociationScale)
    discharge: DischargeCriteria = field(default_factory=DischargeCriteria)


@dataclass(frozen=True)
class Protocol:
    """A validated alarm protocol. Checks are numbered: rules, then technical, then combination."""

    version: str
    name: str
    rules: tuple[Rule, ...]
    technical: tuple[TechnicalCheck, ...]
    combination: CombinationRule | None
    lifecycle: LifecycleSettings
    untrusted: SampleQuality
    gated_vitals: frozenset[Vital]
    cuff_hold_s: float
    baseline_readings: int
    nibp_interval_s: Mapping[Phase, float]
    source: str = "<string>"
    # A confirming NIBP reading may come up to the session's NIBP interval plus this long
    # after the first (see `confirm_window`).
    nibp_confirm_margin_s: float = 120.0
    workflow: WorkflowSettings = field(default_factory=WorkflowSettings)

    @property
    def check_ids(self) -> tuple[str, ...]:
        ids = [r.id for r in self.rules] + [t.id for t in self.technical]
        if self.combination is not None:
            ids.append(self.combination.id)
        return tuple(ids)

    @property
    def combination_index(self) -> int | None:
        if self.combination is None:
            return None
        return len(self.rules) + len(self.technical)

    def check_index(self, check_id: str) -> int:
        try:
            return self.check_ids.index(check_id)
        except ValueError:
            raise KeyError(f"no rule or technical check {check_id!r} in the protocol") from None

    def rule(self, rule_id: str) -> Rule:
        for rule in self.rules:
            if rule.id == rule_id:
                return rule
        raise KeyError(f"no rule {rule_id!r} in protocol {self.version!r}")

    def technical_check(self, kind: TechnicalKind) -> TechnicalCheck | None:
        """The first technical check of a kind (the kinds that may appear once)."""
        for check in self.technical:
            if check.kind is kind:
                return check
        return None

    def nibp_interval(self, phase: Phase) -> float:
        return self.nibp_interval_s.get(phase, 0.0)

    def baseline(self, readings: Sequence[float] | NDArray[np.float64]) -> float | None:
        """An NIBP vital's baseline from its usable readings taken in the baseline phase,
        oldest first: the mean of the last `baseline_readings`; None while there are fewer.

        The evaluators keep the same mean incrementally (tests hold them to this one).
        """
        n = self.baseline_readings
        if len(readings) < n:
            return None
        return float(np.mean(np.asarray(readings[len(readings) - n :], dtype=np.float64)))

    def confirm_window(self, rule: Rule, interval: float) -> float | None:
        """How long after a first qualifying reading a second one still confirms a rule.

        The next scheduled reading (the session's NIBP `interval` plus the margin) or an
        explicit repeat (the rule's `confirm_within_s`), whichever allows longer; with no
        schedule (interval 0) only the explicit window. None: the rule needs no confirmation.
        """
        if rule.confirm_within_s is None:
            return None
        if interval > 0:
            return max(rule.confirm_within_s, interval + self.nibp_confirm_margin_s)
        return rule.confirm_within_s


class ProtocolError(ValueError):
    """A protocol file that cannot be used; names the rule, the key and the line."""

    def __init__(
        self,
        problem: str,
        *,
        source: str = "<string>",
        line: int | None = None,
        rule_id: str | None = None,
        key: str | None = None,
    ) -> None:
        self.problem = problem
        self.source = source
        self.line = line
        self.rule_id = rule_id
        self.key = key
        where = source if line is None else f"{source}:{line}"
        parts = [where]
        if rule_id is not None:
            parts.append(f"{rule_id!r}")
        if key is not None:
            parts.append(f"key {key!r}")
        super().__init__(": ".join([*parts, problem]))


# --- loading -----------------------------------------------------------------------------

_ID = re.compile(r"^[a-z][a-z0-9_]*$")
_HEADER = re.compile(r"^\s*(\[\[|\[)\s*([A-Za-z0-9_.-]+)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_-]+)\s*=")
_TOML_LINE = re.compile(r"at line (\d+)")


class _LineMap:
    """Where each table and key sits in the file; tomllib keeps no positions."""

    def __init__(self, text: str) -> None:
        self.tables: dict[tuple[str, int], int] = {}
        self.keys: dict[tuple[str, int, str], int] = {}
        table, index = "", 0
        counts: dict[str, int] = {}
        for number, line in enumerate(text.splitlines(), start=1):
            header = _HEADER.match(line)
            if header:
                table = header.group(2)
                if header.group(1) == "[[":
                    index = counts.get(table, 0)
                    counts[table] = index + 1
                else:
                    index = 0
                self.tables.setdefault((table, index), number)
                continue
            key = _KEY.match(line)
            if key:
                self.keys.setdefault((table, index, key.group(1)), number)

    def line(self, table: str, index: int, key: str | None = None) -> int | None:
        if key is not None and (table, index, key) in self.keys:
            return self.keys[(table, index, key)]
        return self.tables.get((table, index))


class _Table:
    """One TOML table being read: typed getters that raise a located ProtocolError."""

    def __init__(
        self,
        data: Mapping[str, Any],
        *,
        table: str,
        index: int,
        lines: _LineMap,
        source: str,
        label: str | None,
    ) -> None:
        self.data = data
        self.table = table
        self.index = index
        self.lines = lines
        self.source = source
        self.label = label

    def error(self, problem: str, key: str | None = None) -> ProtocolError:
        return ProtocolError(
            problem,
            source=self.source,
            line=self.lines.line(self.table, self.index, key),
            rule_id=self.label,
            key=key,
        )

    def check_keys(self, allowed: Iterable[str]) -> None:
        allowed = set(allowed)
        for key in self.data:
            if key not in allowed:
                raise self.error(f"unknown key (allowed: {', '.join(sorted(allowed))})", key)

    def has(self, key: str) -> bool:
        return key in self.data

    def str_(self, key: str, default: str | None = None) -> str:
        if key not in self.data:
            if default is None:
                raise self.error("is required", key)
            return default
        value = self.data[key]
        if not isinstance(value, str):
            raise self.error(f"must be a string, not {value!r}", key)
        return value

    def number(
        self,
        key: str,
        default: float | None = None,
        *,
        minimum: float | None = None,
        positive: bool = False,
    ) -> float:
        if key not in self.data:
            if default is None:
                raise self.error("is required", key)
            return default
        value = self.data[key]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(f"must be a number, not {value!r}", key)
        number = float(value)
        if not math.isfinite(number):
            raise self.error("must be finite", key)
        if positive and number <= 0:
            raise self.error(f"must be greater than 0, not {value!r}", key)
        if minimum is not None and number < minimum:
            raise self.error(f"must be at least {minimum:g}, not {value!r}", key)
        return number

    def integer(self, key: str, default: int, *, minimum: int = 0) -> int:
        value = self.data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(f"must be a whole number, not {value!r}", key)
        if value < minimum:
            raise self.error(f"must be at least {minimum}, not {value!r}", key)
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.data.get(key, default)
        if not isinstance(value, bool):
            raise self.error(f"must be true or false, not {value!r}", key)
        return value

    def enum_(self, key: str, cls: type[enum.StrEnum], default: str | None = None) -> Any:
        raw = self.str_(key, default)
        try:
            return cls(raw)
        except ValueError:
            choices = ", ".join(m.value for m in cls)
            raise self.error(f"{raw!r} is not one of {choices}", key) from None

    def str_list(self, key: str, default: Iterable[str]) -> list[str]:
        if key not in self.data:
            return list(default)
        value = self.data[key]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.error(f"must be a list of strings, not {value!r}", key)
        return list(value)

    def enum_list(self, key: str, cls: type[enum.StrEnum], default: Iterable[str]) -> list[Any]:
        out = []
        for raw in self.str_list(key, default):
            try:
                out.append(cls(raw))
            except ValueError:
                choices = ", ".join(m.value for m in cls)
                raise self.error(f"{raw!r} is not one of {choices}", key) from None
        return out

    def sub(self, key: str) -> _Table | None:
        if key not in self.data:
            return None
        value = self.data[key]
        if not isinstance(value, dict):
            raise self.error("must be a table", key)
        name = key if not self.table else f"{self.table}.{key}"
        return _Table(
            value, table=name, index=0, lines=self.lines, source=self.source, label=self.label
        )

    def inline(self, key: str) -> dict[str, Any]:
        value = self.data.get(key, {})
        if not isinstance(value, dict):
            raise self.error("must be a table, e.g. { medium = 300 }", key)
        return value


_RULE_KEYS = {
    "id", "vital", "op", "limit", "priority", "delay_s", "hysteresis", "confirm_within_s",
    "relative_to", "phases", "group", "alarm_group", "advice", "overridable",
}  # fmt: skip
_TECH_COMMON = {"id", "kind", "priority", "phases", "text"}
_TECH_KEYS: dict[TechnicalKind, set[str]] = {
    TechnicalKind.DEVICE_SILENT: {"window_s", "suppressed_by"},
    TechnicalKind.NO_VALUE: {"vital", "window_s", "suppressed_by"},
    TechnicalKind.NIBP_STALE: {"grace_s", "suppressed_by"},
    TechnicalKind.PROBE_OFF: {"vital"},
    TechnicalKind.NIBP_FAILED: {"consecutive"},
    TechnicalKind.LOW_SIGNAL: {"vital", "limit", "hysteresis"},
}
_TECH_DEFAULT_VITAL = {
    TechnicalKind.PROBE_OFF: Vital.SPO2,
    TechnicalKind.LOW_SIGNAL: Vital.PI,
}
_TOP_KEYS = {
    "version", "name", "lifecycle", "signal_quality", "baseline", "nibp", "combination",
    "rule", "technical", "workflow",
}  # fmt: skip
_DEFAULT_UNTRUSTED = ("artifact", "low_perfusion", "probe_off", "cuff_inflating", "questionable")


def load_protocol(path: str | Path) -> Protocol:
    """Read and validate a protocol file; raises ProtocolError (with the line) if unusable."""
    path = Path(path)
    return parse_protocol(path.read_text(encoding="utf-8"), source=path.name)


def default_protocol() -> Protocol:
    """The brief's default ketamine-chair protocol."""
    return load_protocol(DEFAULT_PROTOCOL_PATH)


def parse_protocol(text: str, source: str = "<string>") -> Protocol:
    """Validate protocol TOML text; `source` names the file in error messages."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = _TOML_LINE.search(str(exc))
        raise ProtocolError(
            f"not valid TOML: {exc}",
            source=source,
            line=int(match.group(1)) if match else None,
        ) from None
    lines = _LineMap(text)
    top = _Table(data, table="", index=0, lines=lines, source=source, label=None)
    top.check_keys(_TOP_KEYS)
    version = top.str_("version").strip()
    if not version:
        raise top.error("must not be empty", "version")
    name = top.str_("name", "")

    rules = tuple(_read_rules(data.get("rule", []), lines, source))
    technical = tuple(_read_technical(data.get("technical", []), lines, source))
    combination = _read_combination(top.sub("combination"))
    ids: dict[str, int | None] = {}
    items: list[Rule | TechnicalCheck | CombinationRule] = [*rules, *technical]
    if combination is not None:
        items.append(combination)
    for item in items:
        if item.id in ids:
            raise ProtocolError(
                f"duplicate id (first used on line {ids[item.id]})",
                source=source,
                line=item.line,
                rule_id=item.id,
                key="id",
            )
        ids[item.id] = item.line
    _check_technical_set(technical, lines, source)
    _check_alarm_groups(rules, ids, lines, source)

    lifecycle = _read_lifecycle(top.sub("lifecycle"))
    quality = top.sub("signal_quality")
    untrusted = SampleQuality.NONE
    gated: list[Vital] = [Vital.SPO2, Vital.PR]
    cuff_hold_s = 60.0
    if quality is not None:
        quality.check_keys({"untrusted", "gated_vitals", "cuff_hold_s"})
        names = quality.str_list("untrusted", _DEFAULT_UNTRUSTED)
        for flag_name in names:
            if flag_name.upper() not in SampleQuality.__members__ or flag_name == "none":
                raise quality.error(f"{flag_name!r} is not a sample quality flag", "untrusted")
            untrusted |= SampleQuality[flag_name.upper()]
        gated = quality.enum_list("gated_vitals", Vital, [v.value for v in gated])
        cuff_hold_s = quality.number("cuff_hold_s", cuff_hold_s, minimum=0)
    else:
        untrusted = SampleQuality.from_names(list(_DEFAULT_UNTRUSTED))

    low_signal = next((c for c in technical if c.kind is TechnicalKind.LOW_SIGNAL), None)
    if low_signal is not None and low_signal.vital in gated:
        raise ProtocolError(
            f"{low_signal.vital.value} decides the gate and cannot be gated itself",
            source=source,
            line=lines.line("signal_quality", 0, "gated_vitals"),
            key="gated_vitals",
        )

    baseline = top.sub("baseline")
    readings = 2
    if baseline is not None:
        baseline.check_keys({"readings"})
        readings = baseline.integer("readings", 2, minimum=1)

    nibp = top.sub("nibp")
    intervals: dict[Phase, float] = {}
    confirm_margin = 120.0
    if nibp is not None:
        nibp.check_keys({"interval_s", "confirm_margin_s"})
        confirm_margin = nibp.number("confirm_margin_s", confirm_margin, minimum=0)
        for raw_phase, seconds in nibp.inline("interval_s").items():
            try:
                phase = Phase(raw_phase)
            except ValueError:
                raise nibp.error(f"{raw_phase!r} is not a session phase", "interval_s") from None
            if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
                raise nibp.error(f"{raw_phase} must be a number ≥ 0", "interval_s")
            intervals[phase] = float(seconds)

    return Protocol(
        version=version,
        name=name,
        rules=rules,
        technical=technical,
        combination=combination,
        lifecycle=lifecycle,
        untrusted=untrusted,
        gated_vitals=frozenset(gated),
        cuff_hold_s=cuff_hold_s,
        baseline_readings=readings,
        nibp_interval_s=intervals,
        source=source,
        workflow=_read_workflow(top, ids),
        nibp_confirm_margin_s=confirm_margin,
    )


def _array_tables(raw: Any, name: str, lines: _LineMap, source: str) -> list[_Table]:
    if not isinstance(raw, list):
        raise ProtocolError(
            f"must be an array of tables: write [[{name}]]", source=source, key=name
        )
    tables = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise ProtocolError(f"[[{name}]] #{i + 1} must be a table", source=source, key=name)
        label = item.get("id") if isinstance(item.get("id"), str) else f"{name} #{i + 1}"
        tables.append(
            _Table(item, table=name, index=i, lines=lines, source=source, label=str(label))
        )
    return tables


def _read_id(t: _Table) -> str:
    ident = t.str_("id")
    if not _ID.match(ident):
        raise t.error("must be lower case letters, digits and _ (starting with a letter)", "id")
    return ident


def _read_phases(t: _Table, default: frozenset[Phase]) -> frozenset[Phase]:
    phases = frozenset(t.enum_list("phases", Phase, [p.value for p in default]))
    if not phases:
        raise t.error("must list at least one phase", "phases")
    return phases


def _read_rules(raw: Any, lines: _LineMap, source: str) -> list[Rule]:
    rules = []
    for t in _array_tables(raw, "rule", lines, source):
        t.check_keys(_RULE_KEYS)
        ident = _read_id(t)
        vital: Vital = t.enum_("vital", Vital)
        spec = VITALS[vital]
        op: Op = t.enum_("op", Op)
        relative = False
        if t.has("relative_to"):
            if t.str_("relative_to") != "baseline":
                raise t.error("the only reference is 'baseline'", "relative_to")
            if not spec.episodic:
                raise t.error("baselines are taken for NIBP vitals only", "relative_to")
            relative = True
        limit = t.number("limit")
        if not relative and not spec.plausible_min <= limit <= spec.plausible_max:
            raise t.error(
                f"{limit:g} is outside {spec.label}'s range "
                f"{spec.plausible_min:g} to {spec.plausible_max:g} {spec.unit}",
                "limit",
            )
        delay = t.number("delay_s", 0.0, minimum=0)
        if delay and spec.episodic:
            raise t.error(
                "NIBP rules evaluate each completed reading; use confirm_within_s", "delay_s"
            )
        confirm: float | None = None
        if t.has("confirm_within_s"):
            if not spec.episodic:
                raise t.error("only NIBP rules confirm with a repeat reading", "confirm_within_s")
            confirm = t.number("confirm_within_s", positive=True)
        rules.append(
            Rule(
                id=ident,
                vital=vital,
                op=op,
                limit=limit,
                priority=t.enum_("priority", Priority),
                delay_s=delay,
                hysteresis=t.number("hysteresis", 0.0, minimum=0),
                confirm_within_s=confirm,
                relative_to_baseline=relative,
                phases=_read_phases(t, DEFAULT_RULE_PHASES),
                group=t.str_("group", _DEFAULT_GROUP[vital]),
                alarm_group=_read_alarm_group(t, vital, op),
                advice=t.str_("advice", ""),
                overridable=t.boolean("overridable", True),
                line=lines.line("rule", t.index, "id"),
            )
        )
    return rules


def _read_alarm_group(t: _Table, vital: Vital, op: Op) -> str:
    name = t.str_("alarm_group", default_alarm_group(vital, op))
    if not _ID.match(name):
        raise t.error(
            "must be lower case letters, digits and _ (starting with a letter)", "alarm_group"
        )
    return name


def _check_alarm_groups(
    rules: Sequence[Rule], ids: Mapping[str, int | None], lines: _LineMap, source: str
) -> None:
    """The tiers of one alarm are limits on one vital in one direction (its text shows that
    vital's value and its worst value), and an alarm group's name is not another check's id
    (alarm ids and the alarm log name alarms by their group)."""
    first: dict[str, Rule] = {}
    for index, rule in enumerate(rules):
        name = rule.alarm_group

        def error(problem: str, rule: Rule = rule, index: int = index) -> ProtocolError:
            line = lines.line("rule", index, "alarm_group")  # or the rule's table
            return ProtocolError(
                problem, source=source, line=line, rule_id=rule.id, key="alarm_group"
            )

        if name in ids and name not in {r.id for r in rules if r.alarm_group == name}:
            raise error(f"{name!r} is the id of another rule or check, not an alarm group")
        other = first.setdefault(name, rule)
        if other.vital is not rule.vital:
            raise error(
                f"alarm group {name!r} is on {other.vital.value} ({other.id!r}), not "
                f"{rule.vital.value}: the tiers of one alarm are limits on one vital"
            )
        if other.op.is_upper is not rule.op.is_upper:
            way = "upper" if other.op.is_upper else "lower"
            raise error(
                f"alarm group {name!r} holds {way} limits ({other.id!r}): the tiers of one "
                "alarm go one way"
            )


def _read_technical(raw: Any, lines: _LineMap, source: str) -> list[TechnicalCheck]:
    checks = []
    for t in _array_tables(raw, "technical", lines, source):
        kind: TechnicalKind = t.enum_("kind", TechnicalKind)
        t.check_keys(_TECH_COMMON | _TECH_KEYS[kind])
        ident = _read_id(t)
        vital: Vital | None = None
        if "vital" in _TECH_KEYS[kind]:
            default = _TECH_DEFAULT_VITAL.get(kind)
            vital = t.enum_("vital", Vital, default.value if default else None)
        window = 0.0
        if "window_s" in _TECH_KEYS[kind]:
            window = t.number("window_s", positive=True)
        checks.append(
            TechnicalCheck(
                id=ident,
                kind=kind,
                priority=t.enum_("priority", Priority),
                phases=_read_phases(t, DEFAULT_TECHNICAL_PHASES),
                vital=vital,
                window_s=window,
                grace_s=t.number("grace_s", 0.0, minimum=0),
                consecutive=t.integer("consecutive", 2, minimum=1),
                limit=t.number("limit", 0.0 if kind is not TechnicalKind.LOW_SIGNAL else None),
                hysteresis=t.number("hysteresis", 0.0, minimum=0),
                suppressed_by=tuple(t.str_list("suppressed_by", ())),
                text=t.str_("text", ""),
                line=lines.line("technical", t.index, "id"),
            )
        )
    return checks


def _check_technical_set(checks: tuple[TechnicalCheck, ...], lines: _LineMap, source: str) -> None:
    """At most one check per kind (per vital for no_value); suppression must form no cycle."""
    seen: dict[tuple[TechnicalKind, Vital | None], str] = {}
    by_id = {c.id: c for c in checks}
    for check in checks:
        slot = (check.kind, check.vital if check.kind is TechnicalKind.NO_VALUE else None)
        if slot in seen:
            raise ProtocolError(
                f"a second {check.kind.value} check (the first is {seen[slot]!r})",
                source=source,
                line=check.line,
                rule_id=check.id,
                key="kind",
            )
        seen[slot] = check.id
        for other in check.suppressed_by:
            if other not in by_id or other == check.id:
                raise ProtocolError(
                    f"{other!r} is not another technical check",
                    source=source,
                    line=lines.line("technical", checks.index(check), "suppressed_by"),
                    rule_id=check.id,
                    key="suppressed_by",
                )
    for check in checks:  # a suppression cycle would leave neither alarm able to raise
        path, todo = {check.id}, list(check.suppressed_by)
        while todo:
            current = todo.pop()
            if current == check.id:
                raise ProtocolError(
                    "suppressed_by forms a cycle",
                    source=source,
                    line=lines.line("technical", checks.index(check), "suppressed_by"),
                    rule_id=check.id,
                    key="suppressed_by",
                )
            if current not in path:
                path.add(current)
                todo.extend(by_id[current].suppressed_by)


def _read_combination(t: _Table | None) -> CombinationRule | None:
    if t is None:
        return None
    t.check_keys({"id", "priority", "high_groups", "medium_groups", "phases", "text"})
    t.label = t.data.get("id") if isinstance(t.data.get("id"), str) else "combination"
    return CombinationRule(
        id=_read_id(t),
        priority=t.enum_("priority", Priority),
        high_groups=t.integer("high_groups", 1),
        medium_groups=t.integer("medium_groups", 2),
        phases=_read_phases(t, frozenset({Phase.INFUSION})),
        text=t.str_("text", "Several vital signs out of range"),
        line=t.lines.line("combination", 0, "id"),
    )


def _read_lifecycle(t: _Table | None) -> LifecycleSettings:
    if t is None:
        return LifecycleSettings()
    t.check_keys({"latching", "audio_pause_s", "escalate_after_s"})
    escalate: dict[Priority, float] = {}
    for raw, seconds in t.inline("escalate_after_s").items():
        try:
            priority = Priority(raw)
        except ValueError:
            raise t.error(f"{raw!r} is not a priority", "escalate_after_s") from None
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds <= 0:
            raise t.error(f"{raw} must be a number of seconds > 0", "escalate_after_s")
        escalate[priority] = float(seconds)
    return LifecycleSettings(
        latching=frozenset(t.enum_list("latching", Priority, ["high", "crisis"])),
        audio_pause_s=t.number("audio_pause_s", 120.0, positive=True),
        escalate_after_s=escalate,
    )


def _read_workflow(top: _Table, check_ids: Iterable[str]) -> WorkflowSettings:
    """The `[workflow]` section; a missing section or key takes the brief's default."""
    default = WorkflowSettings()
    t = top.sub("workflow")
    if t is None:
        if default.sedation.alarm_id in check_ids:
            raise top.error(
                f"the deep-sedation alarm's default id {default.sedation.alarm_id!r} is taken "
                "by a rule: set [workflow.sedation] alarm_id",
                "workflow",
            )
        return default
    t.check_keys({"pre_infusion", "scores", "sedation", "dissociation", "discharge"})
    advisory, override = default.advisory, default.override
    pre = _workflow_table(t, "pre_infusion")
    if pre is not None:
        pre.check_keys({"advisory", "override"})
        advisory = _bp_pair(pre, "advisory", advisory)
        override = _bp_pair(pre, "override", override)
        if override.sbp < advisory.sbp or override.dbp < advisory.dbp:
            raise pre.error(
                f"{override.text} is below the advisory {advisory.text}: the override level "
                "must be at or above the advisory level",
                "override",
            )
    discharge = _read_discharge(_workflow_table(t, "discharge"), default.discharge)
    return WorkflowSettings(
        advisory=advisory,
        override=override,
        scores=_read_score_schedule(_workflow_table(t, "scores"), default.scores),
        sedation=_read_sedation(_workflow_table(t, "sedation"), discharge, set(check_ids)),
        dissociation=_read_dissociation(_workflow_table(t, "dissociation"), discharge),
        discharge=discharge,
    )


def _workflow_table(t: _Table, key: str) -> _Table | None:
    sub = t.sub(key)
    if sub is not None:
        sub.label = sub.table  # errors name the section: 'workflow.discharge': key ...
    return sub


def _bp_pair(t: _Table, key: str, default: BloodPressurePair) -> BloodPressurePair:
    if not t.has(key):
        return default
    raw = t.inline(key)
    if set(raw) != {"sbp", "dbp"}:
        raise t.error("must be a table of sbp and dbp, e.g. { sbp = 160, dbp = 100 }", key)
    values = []
    for name, vital in (("sbp", Vital.NIBP_SYS), ("dbp", Vital.NIBP_DIA)):
        value, spec = raw[name], VITALS[vital]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise t.error(f"{name} must be a number, not {value!r}", key)
        if not spec.plausible_min <= value <= spec.plausible_max:
            raise t.error(
                f"{name} {value:g} is outside {spec.label}'s range "
                f"{spec.plausible_min:g} to {spec.plausible_max:g} {spec.unit}",
                key,
            )
        values.append(float(value))
    return BloodPressurePair(values[0], values[1])


def _score_range(t: _Table, minimum: float, maximum: float) -> tuple[float, float]:
    low = t.number("min", minimum)
    high = t.number("max", maximum)
    if high <= low:
        raise t.error(f"must be greater than min ({low:g}), not {high:g}", "max")
    return low, high


def _on_scale(t: _Table, key: str, default: float, low: float, high: float) -> float:
    value = t.number(key, default)
    if not low <= value <= high:
        raise t.error(f"{value:g} is outside the scale's range {low:g} to {high:g}", key)
    return value


def _confirms(t: _Table, default: str, discharge: DischargeCriteria) -> str:
    """The ticked criterion a scale's latest score must agree with ("" for none)."""
    name = t.str_("confirms", default)
    if name and name not in discharge.ticked:
        raise t.error(
            f"{name!r} is not one of the ticked criteria ({', '.join(discharge.ticked)}); "
            'write "" to confirm none',
            "confirms",
        )
    return name


def _read_score_schedule(t: _Table | None, default: ScoreSchedule) -> ScoreSchedule:
    if t is None:
        return default
    t.check_keys({"scales", "phases", "interval_s", "overdue_after_s"})
    scales = frozenset(t.enum_list("scales", ScoreKind, [s.value for s in default.scales]))
    phases = _read_phases(t, default.phases)
    intervals: dict[Phase, float] = {}
    if not t.has("interval_s"):  # the default interval of each phase that is still scored
        intervals = {p: sec for p, sec in default.interval_s.items() if p in phases}
    for raw_phase, seconds in t.inline("interval_s").items():
        try:
            phase = Phase(raw_phase)
        except ValueError:
            raise t.error(f"{raw_phase!r} is not a session phase", "interval_s") from None
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds <= 0:
            raise t.error(f"{raw_phase} must be a number of seconds > 0", "interval_s")
        intervals[phase] = float(seconds)
    for phase in PHASES:
        if phase in phases and phase not in intervals:
            raise t.error(f"no interval for {phase.value}, a phase scores are due in", "interval_s")
        if phase in intervals and phase not in phases:
            raise t.error(f"{phase.value} is not in phases: scores are not due then", "interval_s")
    return ScoreSchedule(
        scales=scales,
        phases=phases,
        interval_s={p: intervals[p] for p in PHASES if p in intervals},
        overdue_after_s=t.number("overdue_after_s", default.overdue_after_s, minimum=0),
    )


def _read_sedation(
    t: _Table | None, discharge: DischargeCriteria, check_ids: set[str]
) -> SedationScale:
    default = SedationScale()
    if t is None:
        return default
    t.check_keys({
        "name", "min", "max", "alarm_id", "alarm_at_or_below", "alarm_priority", "alarm_advice",
        "ready_at_or_above", "confirms",
    })  # fmt: skip
    name = t.str_("name", default.name).strip()
    if not name:
        raise t.error("must not be empty", "name")
    low, high = _score_range(t, default.minimum, default.maximum)
    alarm_id = t.str_("alarm_id", default.alarm_id)
    if not _ID.match(alarm_id):
        raise t.error(
            "must be lower case letters, digits and _ (starting with a letter)", "alarm_id"
        )
    if alarm_id in check_ids:
        raise t.error(f"{alarm_id!r} is already the id of a rule or technical check", "alarm_id")
    return SedationScale(
        name=name,
        minimum=low,
        maximum=high,
        alarm_id=alarm_id,
        alarm_at_or_below=_on_scale(t, "alarm_at_or_below", default.alarm_at_or_below, low, high),
        alarm_priority=t.enum_("alarm_priority", Priority, default.alarm_priority.value),
        alarm_advice=t.str_("alarm_advice", default.alarm_advice),
        ready_at_or_above=_on_scale(t, "ready_at_or_above", default.ready_at_or_above, low, high),
        confirms=_confirms(t, default.confirms, discharge),
    )


def _read_dissociation(t: _Table | None, discharge: DischargeCriteria) -> DissociationScale:
    default = DissociationScale()
    if t is None:
        return default
    t.check_keys({"name", "min", "max", "resolved_at_or_below", "confirms"})
    name = t.str_("name", default.name).strip()
    if not name:
        raise t.error("must not be empty", "name")
    low, high = _score_range(t, default.minimum, default.maximum)
    return DissociationScale(
        name=name,
        minimum=low,
        maximum=high,
        resolved_at_or_below=_on_scale(
            t, "resolved_at_or_below", default.resolved_at_or_below, low, high
        ),
        confirms=_confirms(t, default.confirms, discharge),
    )


def _read_discharge(t: _Table | None, default: DischargeCriteria) -> DischargeCriteria:
    if t is None:
        return default
    t.check_keys({
        "after_infusion_end_s", "bp_readings", "bp_within_fraction", "bp_below",
        "heart_rate_vitals", "heart_rate_min", "heart_rate_max", "spo2_min", "vitals_max_age_s",
        "ticked",
    })  # fmt: skip
    fraction = t.number("bp_within_fraction", default.bp_within_fraction, positive=True)
    if fraction >= 1:
        raise t.error(
            f"is a fraction of the baseline, below 1 (0.2 = 20 %), not {fraction:g}",
            "bp_within_fraction",
        )
    rate_vitals = tuple(
        t.enum_list("heart_rate_vitals", Vital, [v.value for v in default.heart_rate_vitals])
    )
    if not rate_vitals or not set(rate_vitals) <= {Vital.HR, Vital.PR}:
        raise t.error('must list "hr", "pr" or both', "heart_rate_vitals")
    rate_spec = VITALS[Vital.HR]
    rate_low = t.number("heart_rate_min", default.heart_rate_min, minimum=rate_spec.plausible_min)
    rate_high = t.number("heart_rate_max", default.heart_rate_max)
    if not rate_low < rate_high <= rate_spec.plausible_max:
        raise t.error(
            f"must be above heart_rate_min ({rate_low:g}) and at most "
            f"{rate_spec.plausible_max:g}, not {rate_high:g}",
            "heart_rate_max",
        )
    spo2_min = t.number("spo2_min", default.spo2_min)
    if not 0 < spo2_min <= 100:
        raise t.error(
            f"must be a saturation above 0 and at most 100 %, not {spo2_min:g}", "spo2_min"
        )
    ticked = tuple(t.str_list("ticked", default.ticked))
    for name in ticked:
        if not _ID.match(name):
            raise t.error(
                f"{name!r}: a criterion is lower case letters, digits and _ (e.g. escort_present)",
                "ticked",
            )
    if len(set(ticked)) != len(ticked):
        raise t.error("lists a criterion twice", "ticked")
    measured = sorted(set(ticked) & set(MEASURED_CRITERIA))
    if measured:
        raise t.error(f"{measured[0]!r} is measured by Vigil, not ticked", "ticked")
    return DischargeCriteria(
        after_infusion_end_s=t.number(
            "after_infusion_end_s", default.after_infusion_end_s, minimum=0
        ),
        bp_readings=t.integer("bp_readings", default.bp_readings, minimum=1),
        bp_within_fraction=fraction,
        bp_below=_bp_pair(t, "bp_below", default.bp_below),
        heart_rate_vitals=rate_vitals,
        heart_rate_min=rate_low,
        heart_rate_max=rate_high,
        spo2_min=spo2_min,
        vitals_max_age_s=t.number("vitals_max_age_s", default.vitals_max_age_s, positive=True),
        ticked=ticked,
    )
