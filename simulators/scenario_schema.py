"""What may appear in a scenario file: the keys of each table and event, their bounds and defaults.

This is the reference for writing scenarios; `simulators.scenarios` loads files against it.
A `Number` may be written `[low, high]` (drawn per run) unless it says `ranged=False`.
"""

from __future__ import annotations

from dataclasses import dataclass

Draw = float | tuple[float, float]
Value = float | tuple[float, float] | bool | str


@dataclass(frozen=True)
class Number:
    low: float
    high: float
    default: Draw | None = None
    required: bool = False
    ranged: bool = True  # may be written [low, high]
    whole: bool = False


@dataclass(frozen=True)
class Boolean:
    default: bool | None = None


@dataclass(frozen=True)
class NibpInterval:
    """Minutes from the device's menu, or "off" (manual and STAT only)."""

    default: float | str | None = None
    required: bool = False


Param = Number | Boolean | NibpInterval

PATIENT: dict[str, Param] = {
    "age_years": Number(18, 100),
    "weight_kg": Number(30, 250),
    "hypertension": Boolean(),
    "baseline_sbp": Number(70, 200),
    "baseline_dbp": Number(40, 130),
    "baseline_hr": Number(35, 150),
    "baseline_spo2": Number(80, 100),
    "baseline_pi": Number(0.05, 20),
    "sensitivity": Number(0, 20),
    "sensitivity_multiplier": Number(0, 10),
    "sbp_variability_sd": Number(0, 20),
    "hr_variability_sd": Number(0, 10),
}

MONITOR: dict[str, Param] = {
    "ecg": Boolean(True),
    "nibp_interval_min": NibpInterval(5.0),
    "nibp_first_min": Number(0, 120, 0.5),
    "nibp_failure_rate": Number(0, 1, (0.03, 0.05)),
    "cuff_on_spo2_arm": Boolean(False),
    "spo2_averaging_s": Number(2, 16, 8, ranged=False, whole=True),
    "probe_off_hold_s": Number(0, 60, 10),
    "clock_offset_s": Number(-3600, 3600, (-3, 3)),
    "clock_drift_ppm": Number(-5000, 5000, (-50, 50)),
}

EVENTS: dict[str, dict[str, Param]] = {
    "vasovagal": {
        "hr_drop": Number(0, 80, (15, 30)),
        "onset_s": Number(1, 300, (10, 30)),
        "plateau_s": Number(0, 600, (15, 45)),
        "map_drop": Number(0, 80, 25),
        "recovery_min": Number(0.1, 30, (2, 5)),
        "perfusion_factor": Number(0.05, 1, 0.5),
    },
    "desaturation": {
        "nadir": Number(50, 99, (86, 92)),
        "descent_s": Number(5, 600, (20, 40)),
        "duration_s": Number(10, 3600, (30, 120)),  # onset to the start of recovery
        "recovery_s": Number(5, 600, (15, 40)),
    },
    "probe_off": {"duration_s": Number(1, 14400, (30, 120))},
    "motion": {
        "duration_s": Number(1, 600, (5, 60)),
        "spo2_drop": Number(0, 50, (3, 15)),
        "flagged": Boolean(True),
    },
    "nibp_failures": {
        "duration_min": Number(0.1, 600, 15),
        "failure_rate": Number(0, 1, 1.0),
    },
    "disconnect": {"duration_s": Number(1, 14400, (20, 120))},
    "nibp_stat": {},
    "nibp_start": {},
    "nibp_interval": {"interval_min": NibpInterval(required=True)},
}

INFUSION: dict[str, dict[str, Param]] = {
    "start": {
        "dose_mg_per_kg": Number(0.01, 5, required=True),
        "over_min": Number(1, 600, required=True),
    },
    "rate": {
        "rate_mg_per_kg_h": Number(0, 10, required=True),
        "total_dose_mg_per_kg": Number(0.01, 5),
    },
    "pause": {},
    "resume": {},
    "stop": {},
}

AT = Number(0, 7 * 24 * 60, required=True)
DURATION = Number(0.1, 7 * 24 * 60)
