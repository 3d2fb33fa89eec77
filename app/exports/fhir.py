"""A session as a FHIR R4 Bundle (type collection) of vital-signs Observations.

LOINC coded (with the IEEE 11073 MDC code alongside), UCUM units, the device's clock as
`effectiveDateTime` and Vigil's as `issued`. A systolic and a diastolic from one cuff
reading (same device and device time) become one blood-pressure panel (85354-9), as the
R4 vital-signs profile asks; the mean stays its own Observation.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from app.exports.codes import BP_PANEL, BP_PROFILE, PROFILES, fhir_loinc
from app.exports.repository import ExportSample, SessionRecord
from monitor.vitals import VITALS, Vital

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
MDC = "urn:iso:std:iso:11073:10101"
CATEGORY = {
    "coding": [
        {
            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
            "code": "vital-signs",
            "display": "Vital Signs",
        }
    ]
}
PATIENT_SYSTEM = "urn:vigil:patient"
DEVICE_SYSTEM = "urn:vigil:device"
_NAMESPACE = uuid.UUID("9b0c1c55-1f2a-4f53-9a44-7b3c6d0e5a10")  # Vigil's, for stable ids


def _urn(kind: str, key: str) -> str:
    return f"urn:uuid:{uuid.uuid5(_NAMESPACE, f'{kind}/{key}')}"


def _instant(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _code(vital: Vital) -> dict[str, Any]:
    loinc = fhir_loinc(vital)
    mdc = VITALS[vital].mdc
    codings: list[dict[str, str]] = [
        {"system": LOINC, "code": code.code, "display": code.display} for code in loinc
    ]
    codings.append({"system": MDC, "code": str(mdc.number), "display": mdc.ref})
    return {"coding": codings, "text": loinc[0].display}


def _quantity(sample: ExportSample) -> dict[str, Any]:
    ucum = VITALS[sample.vital].unit
    return {"value": sample.value, "unit": ucum, "system": UCUM, "code": ucum}


def _observation(
    samples: list[ExportSample], patient: str, devices: dict[str, str]
) -> dict[str, Any]:
    first = samples[0]
    by_vital = {s.vital: s for s in samples}
    if len(samples) == 1:
        profile = PROFILES[first.vital].url
        body: dict[str, Any] = {"code": _code(first.vital), "valueQuantity": _quantity(first)}
    else:
        profile = BP_PROFILE
        body = {
            "code": {
                "coding": [{"system": LOINC, "code": BP_PANEL[0], "display": BP_PANEL[1]}],
                "text": "Blood pressure",
            },
            "component": [
                {"code": _code(vital), "valueQuantity": _quantity(by_vital[vital])}
                for vital in (Vital.NIBP_SYS, Vital.NIBP_DIA)
            ],
        }
    observation: dict[str, Any] = {
        "resourceType": "Observation",
        "id": "-".join(f"s{s.id}" for s in samples),
        "meta": {"profile": sorted({profile, PROFILES[first.vital].url})},
        "status": "final",
        "category": [CATEGORY],
        **{"code": body.pop("code")},
        "subject": {"reference": patient},
        "effectiveDateTime": _instant(first.device_time),
        "issued": _instant(max(s.received_time for s in samples)),
        "device": {"reference": devices[first.device]},
        **body,
    }
    flags = sorted({flag for s in samples for flag in s.quality})
    if flags:
        observation["note"] = [{"text": f"quality: {', '.join(flags)}"}]
    return observation


def _readings(samples: list[ExportSample]) -> list[list[ExportSample]]:
    """Samples as Observations: systolic + diastolic of one cuff reading together."""
    readings: list[list[ExportSample]] = []
    pending: dict[tuple[str, datetime], dict[Vital, ExportSample]] = {}
    for sample in samples:
        if sample.vital in (Vital.NIBP_SYS, Vital.NIBP_DIA):
            pending.setdefault((sample.device, sample.device_time), {})[sample.vital] = sample
        else:
            readings.append([sample])
    for pair in pending.values():
        if len(pair) == 2:
            readings.append([pair[Vital.NIBP_SYS], pair[Vital.NIBP_DIA]])
        else:
            readings.extend([single] for single in pair.values())
    readings.sort(key=lambda group: (group[0].device_time, group[0].id))
    return readings


def session_bundle(record: SessionRecord, now: datetime) -> dict[str, Any]:
    """The FHIR R4 Bundle (collection): the Patient, the Devices, the Observations."""
    return {**bundle_head(record, now), "entry": list(bundle_entries(record))}


def bundle_head(record: SessionRecord, now: datetime) -> dict[str, Any]:
    """The Bundle without its entries."""
    return {
        "resourceType": "Bundle",
        "id": f"vigil-session-{record.session_id}",
        "type": "collection",
        "timestamp": _instant(now),
    }


def bundle_entries(record: SessionRecord) -> Iterator[dict[str, Any]]:
    """The Bundle's entries one by one, so that a long session can be streamed without
    holding every Observation at once."""
    patient_url = _urn("patient", record.patient_pseudonym)
    devices = {s.device: _urn("device", s.device) for s in record.samples}
    yield {
        "fullUrl": patient_url,
        "resource": {
            "resourceType": "Patient",
            "identifier": [{"system": PATIENT_SYSTEM, "value": record.patient_pseudonym}],
        },
    }
    for identifier, url in devices.items():
        yield {
            "fullUrl": url,
            "resource": {
                "resourceType": "Device",
                "identifier": [{"system": DEVICE_SYSTEM, "value": identifier}],
            },
        }
    for reading in _readings(record.samples):
        observation = _observation(reading, patient_url, devices)
        yield {"fullUrl": _urn("observation", observation["id"]), "resource": observation}
