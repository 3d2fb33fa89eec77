"""Summary figures of a session and of a site, from plain arrays (numpy only, no web stack).

Times are seconds since the epoch (float64). A sample is *usable* by the alarm engine's own
predicate (`monitor.conditions.sample_usable`: a finite value without the protocol's untrusted
flags for its vital); unusable samples count for nothing. The engine also holds SpO2 and PR
while the perfusion index is low: that is alarm state, which the figures do not replay.
Limits compare as the protocol's operators do (`Op.holds`), and an NIBP baseline is the
protocol's (`Protocol.baseline`).

How long a value stands: a continuous vital's sample (HR, PR, SpO2) holds until the next
usable sample of that vital, but at most `CONTINUOUS_HOLD_S`, since a longer gap is missing
data, which is never counted as normal or abnormal. An NIBP reading stands until the next
reading, at most `NIBP_HOLD_S` (the recovery interval plus the stale allowance). Nothing
holds past the end of the session.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from monitor.protocol import PRIORITIES, Op, Protocol
from monitor.vitals import VITALS, Vital

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]

CONTINUOUS_VITALS = ("hr", "pr", "spo2")  # the perfusion index is no summary figure
NIBP_VITALS = tuple(spec.vital.value for spec in VITALS.values() if spec.episodic)
SUMMARY_VITALS = (*CONTINUOUS_VITALS, *NIBP_VITALS)
CONTINUOUS_HOLD_S = 5.0
NIBP_HOLD_S = 17 * 60.0
SPO2_FLOOR = 90.0  # "seconds below 90 %"
ACK_WITHIN_S = 60.0  # "share acknowledged within a minute"


@dataclass(frozen=True)
class VitalSeries:
    """Every stored sample of one vital in one session, in time order."""

    vital: str
    times: FloatArray
    values: FloatArray
    usable: BoolArray

    @classmethod
    def of(
        cls, vital: str, times: Sequence[float], values: Sequence[float], usable: Sequence[bool]
    ) -> VitalSeries:
        return cls(
            vital,
            np.asarray(times, dtype=np.float64),
            np.asarray(values, dtype=np.float64),
            np.asarray(usable, dtype=np.bool_),
        )


@dataclass(frozen=True)
class LimitSpec:
    """One alarm limit of the clinic's protocol: `value <op> limit` on one vital.

    `changes` are this session's overrides of it: (epoch seconds, the limit in force from
    then on), oldest first; a return to the protocol's limit is a change like any other.
    """

    rule_id: str
    vital: str
    op: Op
    limit: float
    priority: str
    changes: tuple[tuple[float, float], ...] = ()

    def in_force(self, times: FloatArray) -> FloatArray:
        """The limit in force at each of `times`."""
        limits = np.full(times.shape, self.limit, dtype=np.float64)
        for since, limit in self.changes:
            limits[times >= since] = limit
        return limits


@dataclass(frozen=True)
class AlarmFacts:
    """What the figures need of one alarm."""

    rule_id: str
    priority: str
    raised_at: float
    acknowledged_at: float | None
    actionable: bool | None = None  # the latest clinician's mark, if any


@dataclass(frozen=True)
class VitalFigures:
    vital: str
    baseline: float | None
    peak: float | None
    peak_at: float | None
    lowest: float | None
    lowest_at: float | None
    usable_samples: int


@dataclass(frozen=True)
class LimitTime:
    """How long a session's values were beyond one limit, in minutes."""

    limit: LimitSpec
    minutes: float


@dataclass(frozen=True)
class SessionFigures:
    vitals: list[VitalFigures]
    beyond_limits: list[LimitTime]
    lowest_spo2: float | None
    lowest_spo2_at: float | None
    seconds_spo2_below_90: float
    alarm_counts: dict[str, int]
    acknowledged: int
    median_ack_s: float | None


@dataclass(frozen=True)
class RuleFigures:
    rule_id: str
    alarms: int
    marked_actionable: int
    marked_not_actionable: int


@dataclass(frozen=True)
class SiteFigures:
    sessions: int
    chair_hours: float
    alarms: int
    alarms_per_chair_hour: float | None
    alarm_counts: dict[str, int]
    acknowledged_within_60s: int
    share_acknowledged_within_60s: float | None
    median_ack_s: float | None
    rules: list[RuleFigures]


def hold_durations(times: FloatArray, max_hold_s: float, end: float) -> FloatArray:
    """How long each sample's value stands: until the next one, at most `max_hold_s`."""
    if times.size == 0:
        return np.zeros(0)
    following = np.append(times[1:], max(end, float(times[-1])))
    return np.minimum(following - times, max_hold_s)


def _baseline(
    series: VitalSeries,
    window: tuple[float, float] | None,
    stored: float | None,
    protocol: Protocol,
) -> float | None:
    """The engine's stored baseline if it set one; else the baseline phase's own readings.

    NIBP: the protocol's baseline of the phase's usable readings (`Protocol.baseline`).
    Continuous vitals, which the engine takes no baseline of: the median of the phase's
    usable samples.
    """
    if stored is not None:
        return stored
    if window is None:
        return None
    start, end = window
    inside = series.usable & (series.times >= start) & (series.times < end)
    values = series.values[inside]
    if VITALS[Vital(series.vital)].episodic:
        return protocol.baseline(values)
    if values.size == 0:
        return None
    return float(np.median(values))


def _usable(series: VitalSeries) -> tuple[FloatArray, FloatArray]:
    return series.times[series.usable], series.values[series.usable]


def _hold_for(vital: str) -> float:
    return NIBP_HOLD_S if vital in NIBP_VITALS else CONTINUOUS_HOLD_S


def session_figures(
    series: Mapping[str, VitalSeries],
    *,
    session_end: float,
    baseline_window: tuple[float, float] | None,
    stored_baselines: Mapping[str, float],
    limits: Sequence[LimitSpec],
    alarms: Sequence[AlarmFacts],
    protocol: Protocol,
) -> SessionFigures:
    """Baseline, peak and time of peak per vital; time beyond each limit; SpO2; alarms.

    `protocol` is the clinic's: it says what an NIBP baseline is.
    """
    vitals: list[VitalFigures] = []
    for vital in SUMMARY_VITALS:
        one = series.get(vital)
        if one is None:
            vitals.append(VitalFigures(vital, None, None, None, None, None, 0))
            continue
        times, values = _usable(one)
        baseline = _baseline(one, baseline_window, stored_baselines.get(vital), protocol)
        if values.size == 0:
            vitals.append(VitalFigures(vital, baseline, None, None, None, None, 0))
            continue
        high, low = int(np.argmax(values)), int(np.argmin(values))  # first occurrence
        vitals.append(
            VitalFigures(
                vital,
                baseline,
                float(values[high]),
                float(times[high]),
                float(values[low]),
                float(times[low]),
                int(values.size),
            )
        )

    beyond: list[LimitTime] = []
    for limit in limits:
        one = series.get(limit.vital)
        seconds = 0.0
        if one is not None:
            times, values = _usable(one)
            held = hold_durations(times, _hold_for(limit.vital), session_end)
            seconds = float(held[limit.op.holds(values, limit.in_force(times))].sum())
        beyond.append(LimitTime(limit, seconds / 60.0))

    spo2 = next((v for v in vitals if v.vital == "spo2"), None)
    below = 0.0
    if "spo2" in series:
        times, values = _usable(series["spo2"])
        held = hold_durations(times, CONTINUOUS_HOLD_S, session_end)
        below = float(held[values < SPO2_FLOOR].sum())

    ack_delays = _ack_delays(alarms)
    return SessionFigures(
        vitals=vitals,
        beyond_limits=beyond,
        lowest_spo2=spo2.lowest if spo2 else None,
        lowest_spo2_at=spo2.lowest_at if spo2 else None,
        seconds_spo2_below_90=below,
        alarm_counts=_counts(alarms),
        acknowledged=int(ack_delays.size),
        median_ack_s=float(np.median(ack_delays)) if ack_delays.size else None,
    )


def _ack_delays(alarms: Sequence[AlarmFacts]) -> FloatArray:
    return np.array(
        [a.acknowledged_at - a.raised_at for a in alarms if a.acknowledged_at is not None],
        dtype=np.float64,
    )


def _counts(alarms: Sequence[AlarmFacts]) -> dict[str, int]:
    counts = {priority.value: 0 for priority in PRIORITIES}
    for alarm in alarms:
        counts[alarm.priority] = counts.get(alarm.priority, 0) + 1
    return counts


def chair_hours(spans: Sequence[tuple[float, float]], start: float, end: float) -> float:
    """Hours of occupied chair time inside [start, end): each session's span, clipped."""
    if not spans:
        return 0.0
    bounds = np.asarray(spans, dtype=np.float64)
    clipped = np.clip(bounds, start, end)
    return float(np.sum(clipped[:, 1] - clipped[:, 0])) / 3600.0


def site_figures(
    alarms: Sequence[AlarmFacts],
    session_spans: Sequence[tuple[float, float]],
    start: float,
    end: float,
) -> SiteFigures:
    """Alarms per chair-hour and the share acknowledged within a minute, with per-rule marks.

    The share's denominator is every alarm raised, acknowledged or not: an alarm nobody
    acknowledged was not acknowledged within a minute.
    """
    hours = chair_hours(session_spans, start, end)
    delays = _ack_delays(alarms)
    quick = int(np.count_nonzero(delays <= ACK_WITHIN_S))
    per_rule: dict[str, list[int]] = {}
    for alarm in alarms:
        tally = per_rule.setdefault(alarm.rule_id, [0, 0, 0])
        tally[0] += 1
        if alarm.actionable is True:
            tally[1] += 1
        elif alarm.actionable is False:
            tally[2] += 1
    rules = [
        RuleFigures(rule_id, *tally)
        for rule_id, tally in sorted(per_rule.items(), key=lambda item: (-item[1][0], item[0]))
    ]
    return SiteFigures(
        sessions=len(session_spans),
        chair_hours=hours,
        alarms=len(alarms),
        alarms_per_chair_hour=len(alarms) / hours if hours > 0 else None,
        alarm_counts=_counts(alarms),
        acknowledged_within_60s=quick,
        share_acknowledged_within_60s=quick / len(alarms) if alarms else None,
        median_ack_s=float(np.median(delays)) if delays.size else None,
        rules=rules,
    )


def downsample_min_max(
    times: FloatArray, values: FloatArray, columns: int
) -> tuple[FloatArray, FloatArray]:
    """At most two points per pixel column, the column's lowest and highest, in time order.

    Every extreme survives: a 20-second desaturation in a 2-hour trace keeps its nadir.
    """
    count = int(times.size)
    if columns < 1 or count <= 2 * columns:
        return times, values
    span = float(times[-1] - times[0])
    if span <= 0:
        low, high = int(np.argmin(values)), int(np.argmax(values))
        keep = np.unique(np.array([low, high]))
        return times[keep], values[keep]
    column = np.minimum(((times - times[0]) / span * columns).astype(np.int64), columns - 1)
    order = np.lexsort((values, column))  # by column, then by value within it
    sorted_columns = column[order]
    first = np.flatnonzero(np.r_[True, sorted_columns[1:] != sorted_columns[:-1]])
    last = np.r_[first[1:], count] - 1
    keep = np.unique(np.concatenate([order[first], order[last]]))  # back in time order
    return times[keep], values[keep]
