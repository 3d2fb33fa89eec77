"""A simulated patient: drawn baselines, ketamine from an infusion pump, true vitals over time.

"True" means what the body does; what a device reports (averaging, artefacts, dropouts,
rounding) is `simulators.devices`. Time is seconds since the start of the simulation.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from simulators.pkpd import KetaminePK, PdChange, pd_change

# Log-normal sensitivity with median 1 and coefficient of variation 0.7.
SENSITIVITY_SIGMA = math.sqrt(math.log(1.0 + 0.7**2))
# Older and hypertensive patients respond more (Yale 2024: severe hypertension clusters there).
SENSITIVITY_PER_YEAR_OVER_45 = 0.01
SENSITIVITY_HYPERTENSION = 1.25
SENSITIVITY_CAP = 6.0
# Perfusion index: healthy 1-5 %, median 1.4.
PI_MEDIAN = 1.4
PI_SIGMA = 0.45


@dataclass(frozen=True)
class PatientProfile:
    """Who is in the chair: fixed for the session."""

    age_years: float
    weight_kg: float
    hypertension: bool
    baseline_sbp: float
    baseline_dbp: float
    baseline_hr: float
    baseline_spo2: float
    baseline_pi: float
    sensitivity: float  # S in the PD model, multiplier already applied
    sbp_variability_sd: float  # reading-to-reading SD of systolic pressure, mmHg
    hr_variability_sd: float  # spread of the heart-rate random walk, /min


PATIENT_OVERRIDES = frozenset(
    {
        "age_years",
        "weight_kg",
        "hypertension",
        "baseline_sbp",
        "baseline_dbp",
        "baseline_hr",
        "baseline_spo2",
        "baseline_pi",
        "sensitivity",
        "sensitivity_multiplier",
        "sbp_variability_sd",
        "hr_variability_sd",
    }
)


def _clip(value: float, low: float, high: float) -> float:
    return min(high, max(low, value))


def draw_patient(
    rng: random.Random, overrides: Mapping[str, float | bool] | None = None
) -> PatientProfile:
    """A patient from a ketamine-clinic population; `overrides` pin any field.

    `sensitivity` pins S itself (no draw, no age or hypertension factor);
    `sensitivity_multiplier` scales whatever S results (hypertensive responders: 3-5).
    Every draw happens whether or not it is overridden, so pinning one field leaves the
    others as they were for the same seed.
    """
    fixed = dict(overrides or {})
    unknown = set(fixed) - PATIENT_OVERRIDES
    if unknown:
        raise ValueError(f"unknown patient fields: {', '.join(sorted(unknown))}")

    def pick(name: str, drawn: float) -> float:
        return float(fixed.get(name, drawn))

    age = pick("age_years", rng.uniform(20, 70))
    weight = pick("weight_kg", _clip(rng.gauss(78, 15), 45, 140))
    htn_draw = rng.random() < 0.08 + 0.006 * (age - 20)
    hypertension = bool(fixed.get("hypertension", htn_draw))
    sbp = pick(
        "baseline_sbp",
        _clip(rng.gauss(121, 9) + 0.25 * (age - 45) + (10 if hypertension else 0), 98, 155),
    )
    dbp = pick("baseline_dbp", _clip(0.55 * sbp + 12 + rng.gauss(0, 4), 55, 98))
    hr = pick("baseline_hr", _clip(rng.gauss(74, 9), 52, 100))
    spo2 = pick("baseline_spo2", rng.uniform(95.5, 99))
    pi = pick("baseline_pi", _clip(PI_MEDIAN * math.exp(rng.gauss(0, PI_SIGMA)), 0.5, 6))
    # Capped: the log-normal tail would otherwise give the odd +100 mmHg patient.
    s_drawn = min(SENSITIVITY_CAP, math.exp(rng.gauss(0, SENSITIVITY_SIGMA)))
    s_drawn *= max(0.7, 1 + SENSITIVITY_PER_YEAR_OVER_45 * (age - 45))
    if hypertension:
        s_drawn *= SENSITIVITY_HYPERTENSION
    sensitivity = pick("sensitivity", s_drawn) * float(fixed.get("sensitivity_multiplier", 1.0))
    # With the cuff's own ~2 mmHg error, readings scatter with SD 4-6 (the brief's figure).
    sbp_sd = pick("sbp_variability_sd", rng.uniform(3.5, 5.5))
    hr_sd = pick("hr_variability_sd", rng.uniform(2, 3))
    if dbp >= sbp:
        raise ValueError(f"baseline diastolic {dbp:g} is not below systolic {sbp:g}")
    return PatientProfile(
        age, weight, hypertension, sbp, dbp, hr, spo2, pi, sensitivity, sbp_sd, hr_sd
    )


# --- infusion pump ---------------------------------------------------------------------------


class PumpError(ValueError):
    """A pump command that makes no sense in the pump's current state."""


@dataclass
class InfusionPump:
    """Delivers a programmed dose at a rate; pausing delays completion, it does not skip dose."""

    rate_mg_per_kg_min: float = 0.0
    remaining_mg_per_kg: float = 0.0
    delivered_mg_per_kg: float = 0.0
    state: str = "idle"  # idle | running | paused

    def start(self, dose_mg_per_kg: float, over_min: float) -> None:
        if self.state != "idle":
            raise PumpError(f"cannot start: the infusion is {self.state}")
        self.rate_mg_per_kg_min = dose_mg_per_kg / over_min
        self.remaining_mg_per_kg = dose_mg_per_kg
        self.state = "running"

    def set_rate(self, rate_mg_per_kg_h: float, total_dose_mg_per_kg: float | None = None) -> None:
        """A titration: new rate, and optionally a new total dose for the whole infusion."""
        if self.state == "idle":
            raise PumpError("cannot change the rate: no infusion is running")
        self.rate_mg_per_kg_min = rate_mg_per_kg_h / 60.0
        if total_dose_mg_per_kg is not None:
            self.remaining_mg_per_kg = max(0.0, total_dose_mg_per_kg - self.delivered_mg_per_kg)

    def pause(self) -> None:
        if self.state != "running":
            raise PumpError(f"cannot pause: the infusion is {self.state}")
        self.state = "paused"

    def resume(self) -> None:
        if self.state != "paused":
            raise PumpError(f"cannot resume: the infusion is {self.state}")
        self.state = "running"

    def stop(self) -> None:
        if self.state == "idle":
            raise PumpError("cannot stop: no infusion is running")
        self.state = "idle"
        self.remaining_mg_per_kg = 0.0

    def deliver(self, dt_s: float) -> tuple[float, bool]:
        """Run for `dt_s`: the mean rate over it (mg/kg/min), and whether the dose ran out."""
        if self.state != "running" or dt_s <= 0:
            return 0.0, False
        amount = min(self.remaining_mg_per_kg, self.rate_mg_per_kg_min * dt_s / 60.0)
        self.remaining_mg_per_kg -= amount
        self.delivered_mg_per_kg += amount
        finished = self.remaining_mg_per_kg <= 1e-12
        if finished:
            self.state = "idle"
            self.remaining_mg_per_kg = 0.0
        return amount * 60.0 / dt_s, finished


# --- episodes: scheduled physiological events -----------------------------------------------


def _smoothstep(x: float) -> float:
    x = _clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _envelope(t: float, start: float, rise: float, hold: float, fall: float) -> float:
    """0 → 1 over `rise`, 1 for `hold`, 1 → 0 over `fall` (all seconds), smooth at the corners."""
    if t <= start:
        return 0.0
    t -= start
    if t < rise:
        return _smoothstep(t / rise)
    t -= rise
    if t < hold:
        return 1.0
    return 1.0 - _smoothstep((t - hold) / fall)


@dataclass(frozen=True)
class Effect:
    """What all episodes together do to the true vitals at one moment."""

    hr: float = 0.0
    sbp: float = 0.0
    dbp: float = 0.0
    pi_factor: float = 1.0
    spo2_weight: float = 0.0  # 0: the patient's own SpO2; 1: fully at `spo2_target`
    spo2_target: float = 100.0


class Episode(Protocol):
    def effect(self, t: float) -> Effect: ...


@dataclass(frozen=True)
class Vasovagal:
    """HR falls 15-30 /min over 10-30 s, MAP falls ~25 mmHg, perfusion halves; 2-5 min recovery."""

    start_s: float
    onset_s: float
    plateau_s: float
    recovery_s: float
    hr_drop: float
    map_drop: float
    perfusion_factor: float

    def effect(self, t: float) -> Effect:
        level = _envelope(t, self.start_s, self.onset_s, self.plateau_s, self.recovery_s)
        # Split the MAP fall so that (ΔSBP + 2·ΔDBP) / 3 = -map_drop.
        return Effect(
            hr=-self.hr_drop * level,
            sbp=-1.2 * self.map_drop * level,
            dbp=-0.9 * self.map_drop * level,
            pi_factor=1.0 - (1.0 - self.perfusion_factor) * level,
        )


@dataclass(frozen=True)
class Desaturation:
    """SpO2 falls to a nadir over `descent_s`, stays for `hold_s`, recovers over `recovery_s`."""

    start_s: float
    descent_s: float
    hold_s: float
    recovery_s: float
    nadir: float

    def effect(self, t: float) -> Effect:
        level = _envelope(t, self.start_s, self.descent_s, self.hold_s, self.recovery_s)
        return Effect(spo2_weight=level, spo2_target=self.nadir)


def combined_effect(episodes: Sequence[Episode], t: float) -> Effect:
    hr = sbp = dbp = weight = 0.0
    pi_factor = 1.0
    target = 100.0
    for episode in episodes:
        part = episode.effect(t)
        hr += part.hr
        sbp += part.sbp
        dbp += part.dbp
        pi_factor *= part.pi_factor
        if part.spo2_weight > weight:  # overlapping desaturations: the deeper-in one wins
            weight, target = part.spo2_weight, part.spo2_target
    return Effect(hr, sbp, dbp, pi_factor, weight, target)


# --- the patient over time -------------------------------------------------------------------


@dataclass
class _OrnsteinUhlenbeck:
    """Mean-reverting noise: stationary SD `sd`, time constant `tau_s`; exact for any step."""

    sd: float
    tau_s: float
    value: float = 0.0

    def advance(self, dt_s: float, rng: random.Random) -> float:
        decay = math.exp(-dt_s / self.tau_s)
        self.value = decay * self.value + self.sd * math.sqrt(1 - decay * decay) * rng.gauss(0, 1)
        return self.value


@dataclass(frozen=True)
class TrueVitals:
    """The body's state at one moment (not what any device shows)."""

    t_s: float
    hr: float
    sbp: float
    dbp: float
    spo2: float
    pi: float
    effect_site_ug_per_ml: float
    venous_ng_per_ml: float
    infusion_rate_mg_per_kg_h: float

    @property
    def map(self) -> float:
        return self.dbp + (self.sbp - self.dbp) / 3.0


@dataclass
class Patient:
    """A profile, a pump, scheduled episodes and the physiological noise, advanced in time."""

    profile: PatientProfile
    rng: random.Random
    episodes: list[Episode] = field(default_factory=list)
    pump: InfusionPump = field(default_factory=InfusionPump)
    pk: KetaminePK = field(default_factory=KetaminePK)
    t_s: float = 0.0
    _rate: float = field(default=0.0, init=False)  # mean rate over the last step, mg/kg/min
    _hr_walk: _OrnsteinUhlenbeck = field(init=False)
    _sbp_var: _OrnsteinUhlenbeck = field(init=False)
    _dbp_var: _OrnsteinUhlenbeck = field(init=False)
    _spo2_walk: _OrnsteinUhlenbeck = field(init=False)
    _pi_walk: _OrnsteinUhlenbeck = field(init=False)

    def __post_init__(self) -> None:
        p = self.profile
        # Time constants are short enough that NIBP readings minutes apart are independent.
        self._hr_walk = _OrnsteinUhlenbeck(p.hr_variability_sd, 20.0)
        self._sbp_var = _OrnsteinUhlenbeck(p.sbp_variability_sd, 45.0)
        self._dbp_var = _OrnsteinUhlenbeck(0.45 * p.sbp_variability_sd, 45.0)
        self._spo2_walk = _OrnsteinUhlenbeck(0.5, 30.0)
        self._pi_walk = _OrnsteinUhlenbeck(0.1, 60.0)
        for walk in (self._hr_walk, self._sbp_var, self._dbp_var, self._spo2_walk, self._pi_walk):
            walk.value = walk.sd * self.rng.gauss(0, 1)

    def advance(self, dt_s: float) -> bool:
        """Move `dt_s` seconds on; True when the pump finished its dose during the step."""
        rate, finished = self.pump.deliver(dt_s)
        self._rate = rate
        self.pk.advance(dt_s, rate)
        for walk in (self._hr_walk, self._sbp_var, self._dbp_var, self._spo2_walk, self._pi_walk):
            walk.advance(dt_s, self.rng)
        self.t_s += dt_s
        return finished

    def drug_change(self) -> PdChange:
        """The drug's effect now: change from baseline, without episodes or variability."""
        p = self.profile
        return pd_change(
            self.pk.effect_site_ug_per_ml,
            p.sensitivity,
            p.baseline_sbp,
            p.baseline_dbp,
            p.baseline_hr,
        )

    def vitals(self) -> TrueVitals:
        p = self.profile
        change = self.drug_change()
        ep = combined_effect(self.episodes, self.t_s)
        sbp = p.baseline_sbp + change.sbp + ep.sbp + self._sbp_var.value
        # Diastolic follows part of the systolic wander (same vessels), plus its own.
        dbp = p.baseline_dbp + change.dbp + ep.dbp + 0.4 * self._sbp_var.value + self._dbp_var.value
        dbp = min(dbp, sbp - 15.0)
        hr = max(20.0, p.baseline_hr + change.hr + ep.hr + self._hr_walk.value)
        own_spo2 = min(100.0, p.baseline_spo2 + self._spo2_walk.value)
        spo2 = (1 - ep.spo2_weight) * own_spo2 + ep.spo2_weight * ep.spo2_target
        pi = p.baseline_pi * math.exp(self._pi_walk.value) * ep.pi_factor
        return TrueVitals(
            t_s=self.t_s,
            hr=hr,
            sbp=sbp,
            dbp=dbp,
            spo2=_clip(spo2, 50.0, 100.0),
            pi=pi,
            effect_site_ug_per_ml=self.pk.effect_site_ug_per_ml,
            venous_ng_per_ml=self.pk.venous_ng_per_ml,
            infusion_rate_mg_per_kg_h=self._rate * 60.0,
        )
