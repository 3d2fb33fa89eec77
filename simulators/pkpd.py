"""Ketamine pharmacokinetics (Domino three-compartment model) and pharmacodynamics.

Amounts are per kilogram of body weight (mg/kg) and the central volume is in L/kg, so
concentrations come out in mg/L (= µg/mL) without needing the patient's weight.

The model is linear with a piecewise-constant infusion rate, so each step uses the exact
discrete-time solution (a matrix exponential computed once per step length) instead of a
numerical integrator: results do not depend on the step size and a 40-minute run can be
advanced in one step as well as in 2,400.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

# Domino model as used by StanPump and stanpumpR (rate constants per minute).
V1_L_PER_KG = 0.063
K10 = 0.4381
K12 = 0.5921
K13 = 0.5900
K21 = 0.2470
K31 = 0.0146
KE0 = 0.2  # effect-site equilibration; 0.11-0.24 /min published
VENOUS_FRACTION = 0.77  # measured venous ≈ 0.77 x the model's arterial prediction

# Pharmacodynamics: ΔX = X_baseline · Emax · S · Ce / (EC50 + Ce).
EC50_UG_PER_ML = 0.43
EMAX_SBP = 0.25
EMAX_DBP = 0.30
EMAX_HR = 0.20

Matrix = list[list[float]]


def _matmul(a: Matrix, b: Matrix) -> Matrix:
    size = len(a)
    return [[sum(a[i][k] * b[k][j] for k in range(size)) for j in range(size)] for i in range(size)]


def _expm(m: Matrix) -> Matrix:
    """Matrix exponential by scaling and squaring of a Taylor series (small, well-behaved M)."""
    size = len(m)
    norm = max(sum(abs(x) for x in row) for row in m)
    squarings = max(0, math.ceil(math.log2(norm / 0.25))) if norm > 0.25 else 0
    scale = 2.0**-squarings
    scaled = [[x * scale for x in row] for row in m]
    result = [[float(i == j) for j in range(size)] for i in range(size)]
    term = [row[:] for row in result]
    for n in range(1, 20):
        term = [[x / n for x in row] for row in _matmul(term, scaled)]
        result = [
            [r + t for r, t in zip(rrow, trow, strict=True)]
            for rrow, trow in zip(result, term, strict=True)
        ]
    for _ in range(squarings):
        result = _matmul(result, result)
    return result


def _system_matrix() -> Matrix:
    """d/dt [A1, A2, A3, Ce, R] with R the (constant) infusion rate into the central compartment."""
    return [
        [-(K10 + K12 + K13), K21, K31, 0.0, 1.0],
        [K12, -K21, 0.0, 0.0, 0.0],
        [K13, 0.0, -K31, 0.0, 0.0],
        [KE0 / V1_L_PER_KG, 0.0, 0.0, -KE0, 0.0],
        [0.0, 0.0, 0.0, 0.0, 0.0],
    ]


_SYSTEM = _system_matrix()
_STEP_CACHE: dict[float, Matrix] = {}


def _step_matrix(dt_min: float) -> Matrix:
    cached = _STEP_CACHE.get(dt_min)
    if cached is None:
        cached = _expm([[x * dt_min for x in row] for row in _SYSTEM])
        if len(_STEP_CACHE) < 64:  # the chair uses one step length; don't grow without bound
            _STEP_CACHE[dt_min] = cached
    return cached


@dataclass
class KetaminePK:
    """State of one patient's ketamine disposition: three compartments and the effect site."""

    amounts_mg_per_kg: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    effect_site_ug_per_ml: float = 0.0

    def advance(self, dt_s: float, rate_mg_per_kg_min: float) -> None:
        """Advance by `dt_s` seconds with a constant infusion rate over that interval."""
        if dt_s <= 0:
            return
        phi = _step_matrix(dt_s / 60.0)
        state = [*self.amounts_mg_per_kg, self.effect_site_ug_per_ml, rate_mg_per_kg_min]
        nxt = [sum(phi[i][j] * state[j] for j in range(5)) for i in range(4)]
        self.amounts_mg_per_kg = nxt[:3]
        self.effect_site_ug_per_ml = nxt[3]

    @property
    def plasma_ug_per_ml(self) -> float:
        """Central (arterial) concentration as predicted by the model."""
        return self.amounts_mg_per_kg[0] / V1_L_PER_KG

    @property
    def venous_ng_per_ml(self) -> float:
        """What a venous blood sample would show, for display beside measured levels."""
        return self.plasma_ug_per_ml * 1000.0 * VENOUS_FRACTION


def drug_effect(effect_site_ug_per_ml: float) -> float:
    """The saturable part of the PD model, Ce / (EC50 + Ce), between 0 and 1."""
    ce = max(0.0, effect_site_ug_per_ml)
    return ce / (EC50_UG_PER_ML + ce)


@dataclass(frozen=True)
class PdChange:
    """Drug-induced change from baseline (absolute units: mmHg, /min)."""

    sbp: float
    dbp: float
    hr: float


def pd_change(
    effect_site_ug_per_ml: float, sensitivity: float, sbp: float, dbp: float, hr: float
) -> PdChange:
    """ΔX = X_baseline · Emax · S · Ce / (EC50 + Ce) for systolic, diastolic and heart rate."""
    effect = sensitivity * drug_effect(effect_site_ug_per_ml)
    return PdChange(sbp * EMAX_SBP * effect, dbp * EMAX_DBP * effect, hr * EMAX_HR * effect)
