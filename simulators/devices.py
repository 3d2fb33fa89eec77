"""Bedside devices: what a monitor reports about the patient's true vitals, and when.

Each module is ticked once per simulated second with the true vitals and the conditions
around it (probe on or off, motion, the cuff on the same arm) and returns the readings the
device would send that second. Numbers follow vendor IFUs as summarised in the brief:
NIBP cycle 25-40 s, abort at 180 s, 3-5 % failures, impossible below 40 or above 240 /min;
oximeter at 1 Hz with 8 s averaging, ~10 s hold after the probe comes off, then no value.
"""

from __future__ import annotations

import math
import random
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from simulators.patient import TrueVitals
from simulators.wire import QualityFlag, VitalCode

AUTO_INTERVALS_MIN = (1, 2, 3, 5, 10, 15, 30, 60, 120)
CYCLE_S = (25, 40)
FAILED_CYCLE_S = (40, 120)  # a failing cycle re-inflates before it gives up
ABORT_S = 180
STAT_S = 300
STAT_GAP_S = 2
NIBP_HR_RANGE = (40.0, 240.0)
NIBP_DEVICE_SD = 2.0  # the cuff's own error, on top of the patient's reading-to-reading spread
MOTION_NIBP_FAILURE = 0.5  # a cycle disturbed by motion for ≥ 3 s fails this often

OCCLUSION_AFTER_S = 8  # cuff pressure passes systolic: the pleth on that arm disappears
REACQUIRE_S = (4, 8)  # the oximeter needs a few pulses before it shows a value again
ARTIFACT_DETECT_S = 3  # the device flags motion only after it has seen some of it
LOW_PERFUSION_PI = 0.4


@dataclass(frozen=True)
class Reading:
    """One value a device reports this second, before it is stamped with the device's clock."""

    vital: VitalCode
    value: float
    quality: tuple[QualityFlag, ...] = ()


@dataclass(frozen=True)
class DeviceClock:
    """A device's own clock: set a little wrong (offset) and running a little fast or slow."""

    start: datetime  # true time at elapsed 0; must carry a UTC offset
    offset_s: float = 0.0
    drift_ppm: float = 0.0

    def at(self, elapsed_s: float) -> datetime:
        return self.start + timedelta(
            seconds=self.offset_s + elapsed_s * (1.0 + self.drift_ppm * 1e-6)
        )


@dataclass(frozen=True)
class MotionBurst:
    """The patient moves the monitored arm: falsely low SpO2, erratic pulse, disturbed NIBP."""

    start_s: int
    end_s: int
    spo2_drop: float
    flagged: bool  # whether the device marks affected values "artifact" once it notices

    def flag(self, now: int) -> tuple[QualityFlag, ...]:
        return ("artifact",) if self.flagged and now - self.start_s >= ARTIFACT_DETECT_S else ()


# --- NIBP ------------------------------------------------------------------------------------


@dataclass
class _Cycle:
    start_s: int
    end_s: int
    fails: bool
    min_hr: float = math.inf
    max_hr: float = -math.inf
    motion_s: int = 0
    extended: bool = False


@dataclass(frozen=True)
class FailureWindow:
    start_s: int
    end_s: int
    rate: float


@dataclass
class NibpResult:
    readings: list[Reading] = field(default_factory=list)
    events: list[str] = field(default_factory=list)


class NibpCuff:
    """Oscillometric cuff: auto interval, STAT series and manual starts; one reading per cycle.

    A failed cycle reports nothing: monitors show "---" and raise a technical alert, which
    Vigil's wire format cannot carry, so it sees a failure as a missing reading.
    """

    def __init__(
        self, rng: random.Random, interval_s: float | None, first_s: float, failure_rate: float
    ) -> None:
        self._rng = rng
        self._interval_s = interval_s
        self._next_auto_s = first_s if interval_s is not None else math.inf
        self._last_auto_s: float | None = None
        self._failure_rate = failure_rate
        self._windows: list[FailureWindow] = []
        self._cycle: _Cycle | None = None
        self._stat_until_s = -math.inf
        self._next_stat_s = math.inf
        self._manual_pending = False

    def add_failure_window(self, window: FailureWindow) -> None:
        self._windows.append(window)

    def set_interval(self, now: int, interval_s: float | None) -> None:
        """A new auto interval counts from the last auto start (or starts now)."""
        self._interval_s = interval_s
        if interval_s is None:
            self._next_auto_s = math.inf
        else:
            anchor = self._last_auto_s if self._last_auto_s is not None else now
            self._next_auto_s = max(float(now), anchor + interval_s)

    def stat(self, now: int) -> None:
        """Back-to-back cycles for five minutes (the current one, if any, counts)."""
        self._stat_until_s = now + STAT_S
        self._next_stat_s = now

    def manual(self) -> None:
        self._manual_pending = True

    def inflating_for(self, now: int) -> int | None:
        """Seconds into the running cycle, or None when the cuff is deflated."""
        return None if self._cycle is None else now - self._cycle.start_s

    def tick(self, now: int, truth: TrueVitals, motion: MotionBurst | None) -> NibpResult:
        result = NibpResult()
        cycle = self._cycle
        if cycle is not None:
            cycle.min_hr = min(cycle.min_hr, truth.hr)
            cycle.max_hr = max(cycle.max_hr, truth.hr)
            cycle.motion_s += motion is not None
            if now >= cycle.end_s:
                self._finish(now, cycle, truth, result)
            return result
        self._maybe_start(now, result)
        return result

    def _finish(self, now: int, cycle: _Cycle, truth: TrueVitals, result: NibpResult) -> None:
        low, high = NIBP_HR_RANGE
        if not (low <= cycle.min_hr and cycle.max_hr <= high):
            # No usable oscillations: the device keeps trying until its safety abort.
            if not cycle.extended:
                cycle.extended = True
                cycle.end_s = cycle.start_s + ABORT_S
                return
            result.events.append("nibp_aborted")
        elif cycle.fails or (cycle.motion_s >= 3 and self._rng.random() < MOTION_NIBP_FAILURE):
            result.events.append("nibp_failed")
        else:
            sbp = round(truth.sbp + self._rng.gauss(0, NIBP_DEVICE_SD))
            dbp = round(truth.dbp + self._rng.gauss(0, NIBP_DEVICE_SD))
            result.readings += [
                Reading("nibp_sys", sbp),
                Reading("nibp_dia", dbp),
                Reading("nibp_mean", round(dbp + (sbp - dbp) / 3)),
            ]
            result.events.append("nibp_reading")
        self._cycle = None
        if now < self._stat_until_s:
            self._next_stat_s = now + STAT_GAP_S

    def _maybe_start(self, now: int, result: NibpResult) -> None:
        due_auto = now >= self._next_auto_s
        if due_auto:
            self._last_auto_s = self._next_auto_s
            assert self._interval_s is not None
            while self._next_auto_s <= now:
                self._next_auto_s += self._interval_s
        due_stat = self._next_stat_s <= now < self._stat_until_s
        if not (due_auto or due_stat or self._manual_pending):
            return
        self._manual_pending = False
        rate = self._failure_rate
        for window in self._windows:
            if window.start_s <= now < window.end_s:
                rate = max(rate, window.rate)
        fails = self._rng.random() < rate
        low, high = FAILED_CYCLE_S if fails else CYCLE_S
        self._cycle = _Cycle(now, now + self._rng.randint(low, high), fails)
        result.events.append("nibp_cycle_start")


# --- pulse oximeter --------------------------------------------------------------------------


def _round_pi(pi: float) -> float:
    # Displays show two decimals below 1 %, one above (0.02-20 %).
    return max(0.02, round(pi, 2) if pi < 1 else round(pi, 1))


class PulseOximeter:
    """SpO2, pulse rate and perfusion index at 1 Hz, averaged over `averaging_s` seconds."""

    def __init__(self, rng: random.Random, averaging_s: int = 8, hold_s: float = 10.0) -> None:
        self._rng = rng
        self._hold_s = hold_s
        self._samples: deque[tuple[float, float, float]] = deque(maxlen=averaging_s)
        self._reporting_from: int | None = None  # None: no pulse signal at the moment
        self._last: tuple[float, float, float] | None = None  # values shown last second
        self._held_since: int | None = None

    def tick(
        self,
        now: int,
        truth: TrueVitals,
        probe_on: bool,
        cuff_s: int | None,
        motion: MotionBurst | None,
    ) -> list[Reading]:
        """`cuff_s`: seconds into an NIBP cycle on the oximeter's arm, None if not inflating."""
        if not probe_on:
            return self._hold(now)
        self._held_since = None
        if cuff_s is not None and cuff_s >= OCCLUSION_AFTER_S:
            self._lose_signal()  # occluded: SpO2 and pulse drop out for the rest of the cycle
            return []
        if self._reporting_from is None:
            self._reporting_from = now + self._rng.randint(*REACQUIRE_S)
        spo2 = truth.spo2 + self._rng.gauss(0, 0.3 if truth.pi > 1 else 0.8)
        pr = truth.hr + self._rng.gauss(0, 0.8)
        if motion is not None:
            spo2 -= motion.spo2_drop * self._rng.uniform(0.8, 1.2)
            pr += self._rng.gauss(0, 12)
        self._samples.append((spo2, pr, truth.pi * self._rng.uniform(0.95, 1.05)))
        if now < self._reporting_from:
            return []
        count = len(self._samples)
        shown = (
            min(100.0, max(0.0, round(sum(s[0] for s in self._samples) / count))),
            max(0.0, round(sum(s[1] for s in self._samples) / count)),
            _round_pi(sum(s[2] for s in self._samples) / count),
        )
        self._last = shown
        flags: list[QualityFlag] = []
        if motion is not None:
            flags += motion.flag(now)
        if shown[2] <= LOW_PERFUSION_PI:
            flags.append("low_perfusion")
        if cuff_s is not None:
            flags.append("cuff_inflating")
        return self._readings(shown, tuple(flags))

    def _hold(self, now: int) -> list[Reading]:
        """Probe off: the last values stay up (flagged) for ~10 s, then the device shows "---"."""
        if self._held_since is None:
            self._held_since = now
            held = self._last
            self._lose_signal()
            self._last = held
        if self._last is None or now - self._held_since >= self._hold_s:
            self._last = None
            return []
        return self._readings(self._last, ("probe_off",))

    def _lose_signal(self) -> None:
        self._samples.clear()
        self._reporting_from = None
        self._last = None

    @staticmethod
    def _readings(
        shown: tuple[float, float, float], flags: tuple[QualityFlag, ...]
    ) -> list[Reading]:
        spo2, pr, pi = shown
        return [Reading("spo2", spo2, flags), Reading("pr", pr, flags), Reading("pi", pi, flags)]


# --- ECG -------------------------------------------------------------------------------------


class EcgHeartRate:
    """Heart rate from the ECG leads at 1 Hz; motion makes it noisy (and, once seen, flagged)."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def tick(self, now: int, truth: TrueVitals, motion: MotionBurst | None) -> list[Reading]:
        hr = truth.hr + self._rng.gauss(0, 0.7)
        flags: tuple[QualityFlag, ...] = ()
        if motion is not None:
            hr += self._rng.gauss(0, 8)
            flags = motion.flag(now)
        return [Reading("hr", max(0, round(hr)), flags)]
