"""How each Vigil vital is coded towards the hospital.

The codes themselves (IEEE 11073 MDC, LOINC, UCUM) are monitor's one table
(`monitor.vitals.VITALS`); this module adds only what belongs to the FHIR R4 vital-signs
profiles: which profile a vital fits and which LOINC code that profile asks for first.
"""

from __future__ import annotations

from dataclasses import dataclass

from monitor.vitals import LOINC_CODES, VITALS, LoincCode, Vital


@dataclass(frozen=True, slots=True)
class FhirProfile:
    url: str
    loinc: str | None = None  # the LOINC code the profile requires as the first coding


_VS = "http://hl7.org/fhir/StructureDefinition/"
_HEART_RATE = FhirProfile(_VS + "heartrate", "8867-4")  # a pulse rate is a heart rate to FHIR
_VITAL_SIGNS = FhirProfile(_VS + "vitalsigns")

PROFILES: dict[Vital, FhirProfile] = {
    Vital.HR: _HEART_RATE,
    Vital.PR: _HEART_RATE,
    # The R4 oxygen saturation profile requires 2708-6; 59408-5 says "by pulse oximetry".
    Vital.SPO2: FhirProfile(_VS + "oxygensat", "2708-6"),
    Vital.PI: _VITAL_SIGNS,
    Vital.NIBP_SYS: _VITAL_SIGNS,
    Vital.NIBP_DIA: _VITAL_SIGNS,
    Vital.NIBP_MEAN: _VITAL_SIGNS,
}
BP_PANEL = ("85354-9", "Blood pressure panel with all children optional")
BP_PROFILE = _VS + "bp"


def fhir_loinc(vital: Vital) -> tuple[LoincCode, ...]:
    """The vital's LOINC codings in a FHIR Observation: its profile's code first, then the
    vital's own codes (monitor's table), most specific first."""
    required = PROFILES[vital].loinc
    own = VITALS[vital].loinc
    if required is None:
        return own
    return (LOINC_CODES[required][1], *(code for code in own if code.code != required))
