"""How each Vigil vital is coded towards the hospital: LOINC, MDC, UCUM, FHIR profile."""

from __future__ import annotations

from dataclasses import dataclass

from monitor.vitals import Vital


@dataclass(frozen=True, slots=True)
class VitalCoding:
    loinc: tuple[tuple[str, str], ...]  # (code, display); the first is the primary one
    mdc: tuple[int, str]  # IEEE 11073 numeric code and reference id
    mdc_unit: tuple[int, str]  # MDC unit code and reference id
    ucum: str
    profile: str  # FHIR R4 vital-signs profile


_VS = "http://hl7.org/fhir/StructureDefinition/"
_RATE = (264864, "MDC_DIM_BEAT_PER_MIN")
_PERCENT = (262688, "MDC_DIM_PERCENT")
_MMHG = (266016, "MDC_DIM_MMHG")

CODINGS: dict[Vital, VitalCoding] = {
    Vital.HR: VitalCoding(
        (("8867-4", "Heart rate"),),
        (147842, "MDC_ECG_HEART_RATE"),
        _RATE,
        "/min",
        _VS + "heartrate",
    ),
    Vital.PR: VitalCoding(
        (("8867-4", "Heart rate"), ("8889-8", "Heart rate by Pulse oximetry")),
        (149530, "MDC_PULS_OXIM_PULS_RATE"),
        _RATE,
        "/min",
        _VS + "heartrate",
    ),
    # The R4 oxygen saturation profile requires 2708-6; 59408-5 says "by pulse oximetry".
    Vital.SPO2: VitalCoding(
        (
            ("2708-6", "Oxygen saturation in Arterial blood"),
            ("59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry"),
        ),
        (150456, "MDC_PULS_OXIM_SAT_O2"),
        _PERCENT,
        "%",
        _VS + "oxygensat",
    ),
    Vital.PI: VitalCoding(
        (("61006-3", "Perfusion index Blood Postductal Pulse oximetry"),),
        (150448, "MDC_PULS_OXIM_PERF_REL"),
        _PERCENT,
        "%",
        _VS + "vitalsigns",
    ),
    Vital.NIBP_SYS: VitalCoding(
        (("8480-6", "Systolic blood pressure"),),
        (150021, "MDC_PRESS_BLD_NONINV_SYS"),
        _MMHG,
        "mm[Hg]",
        _VS + "vitalsigns",
    ),
    Vital.NIBP_DIA: VitalCoding(
        (("8462-4", "Diastolic blood pressure"),),
        (150022, "MDC_PRESS_BLD_NONINV_DIA"),
        _MMHG,
        "mm[Hg]",
        _VS + "vitalsigns",
    ),
    Vital.NIBP_MEAN: VitalCoding(
        (("8478-0", "Mean blood pressure"),),
        (150023, "MDC_PRESS_BLD_NONINV_MEAN"),
        _MMHG,
        "mm[Hg]",
        _VS + "vitalsigns",
    ),
}
BP_PANEL = ("85354-9", "Blood pressure panel with all children optional")
BP_PROFILE = _VS + "bp"
