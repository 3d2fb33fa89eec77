"""The vital-sign vocabulary: canonical codes, their aliases, units and plausible ranges.

Every part of Vigil speaks these canonical codes. Devices may send the IEEE 11073
MDC code (numeric or reference id) or the LOINC code instead; `resolve_vital`
maps any of them to the canonical `Vital`. Units are normalised to UCUM:
pressures to ``mm[Hg]``, saturations to ``%`` and rates to ``/min``.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass


class Vital(enum.StrEnum):
    """Canonical vital-sign codes, as used on the wire and in storage."""

    HR = "hr"  # heart rate from ECG
    PR = "pr"  # pulse rate from the oximeter
    SPO2 = "spo2"
    PI = "pi"  # perfusion index
    NIBP_SYS = "nibp_sys"
    NIBP_DIA = "nibp_dia"
    NIBP_MEAN = "nibp_mean"


class SampleQuality(enum.IntFlag):
    """Quality flags a sample may carry; stored as a bit mask."""

    NONE = 0
    ARTIFACT = 1  # motion or other artefact suspected by the device
    LOW_PERFUSION = 2  # perfusion too low for a reliable SpO2
    PROBE_OFF = 4
    CUFF_INFLATING = 8  # NIBP cuff inflating on the oximeter's arm
    QUESTIONABLE = 16  # the device marked the value as not validated
    UNBOUND = 32  # set by Vigil: the device was bound to no chair when it sent this

    @classmethod
    def from_names(cls, names: list[str]) -> SampleQuality:
        flags = cls.NONE
        for name in names:
            flags |= cls[name.upper()]
        return flags

    def names(self) -> list[str]:
        # Iterating a Flag yields its single-bit members only (never NONE).
        return [str(flag.name).lower() for flag in type(self) if flag in self]


# Flags a device may send; UNBOUND is Vigil's own.
DEVICE_QUALITY_NAMES: tuple[str, ...] = tuple((~SampleQuality.UNBOUND).names())


@dataclass(frozen=True, slots=True)
class MdcCode:
    """An IEEE 11073-10101 term: its number (partition × 65536 + term) and reference id."""

    number: int
    ref: str


@dataclass(frozen=True, slots=True)
class LoincCode:
    code: str
    display: str


@dataclass(frozen=True)
class VitalSpec:
    """One vital's vocabulary: Vigil's one table of its codes, units and plausible range.

    Ingest resolves codes with it, exports and the HL7 adapter code with it; nothing else in
    Vigil keeps a copy.
    """

    vital: Vital
    label: str
    unit: str  # canonical UCUM unit
    mdc: MdcCode  # the term Vigil sends
    mdc_unit: MdcCode  # the MDC term of `unit`
    loinc: tuple[LoincCode, ...]  # the most specific first
    plausible_min: float
    plausible_max: float
    episodic: bool  # one reading per measurement cycle (NIBP) rather than a continuous stream
    mdc_aliases: tuple[MdcCode, ...] = ()  # other terms devices send for this vital


_PER_MIN = MdcCode(264864, "MDC_DIM_BEAT_PER_MIN")
_PERCENT = MdcCode(262688, "MDC_DIM_PERCENT")
_MMHG = MdcCode(266016, "MDC_DIM_MMHG")

VITALS: dict[Vital, VitalSpec] = {
    spec.vital: spec
    for spec in (
        VitalSpec(
            Vital.HR,
            "HR",
            "/min",
            MdcCode(147842, "MDC_ECG_HEART_RATE"),
            _PER_MIN,
            (LoincCode("8867-4", "Heart rate"),),
            0,
            350,
            False,
            # MDC's older reference id for the same term, used by several gateways.
            mdc_aliases=(MdcCode(147842, "MDC_ECG_CARD_BEAT_RATE"),),
        ),
        VitalSpec(
            Vital.PR,
            "PR",
            "/min",
            MdcCode(149530, "MDC_PULS_OXIM_PULS_RATE"),
            _PER_MIN,
            (LoincCode("8889-8", "Heart rate by Pulse oximetry"),),
            0,
            350,
            False,
        ),
        VitalSpec(
            Vital.SPO2,
            "SpO2",
            "%",
            MdcCode(150456, "MDC_PULS_OXIM_SAT_O2"),
            _PERCENT,
            (
                LoincCode("59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry"),
                LoincCode("2708-6", "Oxygen saturation in Arterial blood"),
            ),
            0,
            100,
            False,
        ),
        VitalSpec(
            Vital.PI,
            "PI",
            "%",
            # IEEE 11073 numbers MDC_PULS_OXIM_PERF_REL 150448. The brief's table gives
            # 150488, which Mindray sends as MDC_BLD_PERF_INDEX: accepted, never sent.
            MdcCode(150448, "MDC_PULS_OXIM_PERF_REL"),
            _PERCENT,
            (LoincCode("61006-3", "Perfusion index Blood Postductal Pulse oximetry"),),
            0,
            100,
            False,
            mdc_aliases=(MdcCode(150488, "MDC_BLD_PERF_INDEX"),),
        ),
        VitalSpec(
            Vital.NIBP_SYS,
            "NIBP sys",
            "mm[Hg]",
            MdcCode(150021, "MDC_PRESS_BLD_NONINV_SYS"),
            _MMHG,
            (LoincCode("8480-6", "Systolic blood pressure"),),
            20,
            300,
            True,
        ),
        VitalSpec(
            Vital.NIBP_DIA,
            "NIBP dia",
            "mm[Hg]",
            MdcCode(150022, "MDC_PRESS_BLD_NONINV_DIA"),
            _MMHG,
            (LoincCode("8462-4", "Diastolic blood pressure"),),
            10,
            250,
            True,
        ),
        VitalSpec(
            Vital.NIBP_MEAN,
            "NIBP mean",
            "mm[Hg]",
            MdcCode(150023, "MDC_PRESS_BLD_NONINV_MEAN"),
            _MMHG,
            (LoincCode("8478-0", "Mean blood pressure"),),
            15,
            280,
            True,
        ),
    )
}

# Every MDC term of the table, by number and by reference id (upper case, as MDC spells them).
MDC_NUMBERS: dict[int, Vital] = {
    code.number: spec.vital for spec in VITALS.values() for code in (spec.mdc, *spec.mdc_aliases)
}
MDC_REFS: dict[str, Vital] = {
    code.ref: spec.vital for spec in VITALS.values() for code in (spec.mdc, *spec.mdc_aliases)
}
# Every LOINC code of the table, with the vital it belongs to.
LOINC_CODES: dict[str, tuple[Vital, LoincCode]] = {
    loinc.code: (spec.vital, loinc) for spec in VITALS.values() for loinc in spec.loinc
}

_ALIASES: dict[str, Vital] = {vital.value: vital for vital in Vital}
_ALIASES |= {str(number): vital for number, vital in MDC_NUMBERS.items()}
_ALIASES |= {ref.lower(): vital for ref, vital in MDC_REFS.items()}
_ALIASES |= {code: vital for code, (vital, _) in LOINC_CODES.items()}


def resolve_vital(code: str) -> Vital | None:
    """The canonical vital for a canonical, MDC or LOINC code; None when unknown."""
    return _ALIASES.get(code.strip().lower())


MMHG_PER_KPA = 7.50062

# unit as sent (lower-cased) → (canonical unit, factor to multiply by)
_PRESSURE_UNITS = {
    "mm[hg]": 1.0,
    "mmhg": 1.0,
    "mdc_dim_mmhg": 1.0,
    "266016": 1.0,
    "kpa": MMHG_PER_KPA,
    "mdc_dim_kilo_pascal": MMHG_PER_KPA,
    "268098": MMHG_PER_KPA,
}
_RATE_UNITS = {
    "/min": 1.0,
    "1/min": 1.0,
    "bpm": 1.0,
    "{beat}/min": 1.0,
    "{beats}/min": 1.0,
    "mdc_dim_beat_per_min": 1.0,
    "264864": 1.0,
}
_PERCENT_UNITS = {"%": 1.0, "percent": 1.0, "mdc_dim_percent": 1.0, "262688": 1.0}
_FRACTION_UNITS = {"1": 100.0, "{ratio}": 100.0, "fraction": 100.0}

_UNITS_BY_VITAL: dict[Vital, dict[str, float]] = {
    Vital.HR: _RATE_UNITS,
    Vital.PR: _RATE_UNITS,
    Vital.SPO2: _PERCENT_UNITS | _FRACTION_UNITS,
    Vital.PI: _PERCENT_UNITS,
    Vital.NIBP_SYS: _PRESSURE_UNITS,
    Vital.NIBP_DIA: _PRESSURE_UNITS,
    Vital.NIBP_MEAN: _PRESSURE_UNITS,
}


class UnitError(ValueError):
    """A unit that does not fit the vital it came with."""


class ImplausibleValue(ValueError):
    """A value no patient or device could produce for that vital."""


def accepted_units(vital: Vital) -> list[str]:
    return sorted(_UNITS_BY_VITAL[vital])


def normalise(vital: Vital, value: float, unit: str) -> float:
    """The value converted to the vital's canonical unit, checked for plausibility."""
    factor = _UNITS_BY_VITAL[vital].get(unit.strip().lower())
    if factor is None:
        raise UnitError(
            f"unit {unit!r} does not fit {vital.value}; "
            f"accepted: {', '.join(accepted_units(vital))}"
        )
    if not math.isfinite(value):
        raise ImplausibleValue(f"{vital.value} value must be a finite number")
    converted = value * factor
    spec = VITALS[vital]
    if not spec.plausible_min <= converted <= spec.plausible_max:
        raise ImplausibleValue(
            f"{spec.label} {converted:g} {spec.unit} is outside the plausible range "
            f"{spec.plausible_min:g}–{spec.plausible_max:g} {spec.unit}"
        )
    return converted
