"""A session as one HL7 v2.6 ORU^R01 (IHE PCD-01 style: MDC codes, LOINC alongside)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from app.exports.repository import SessionRecord
from app.hl7_text import escape_text
from monitor.vitals import VITALS, resolve_vital


def _time(moment: datetime) -> str:
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y%m%d%H%M%S") + f".{utc.microsecond // 1000:03d}+0000"


def session_oru(record: SessionRecord, now: datetime, application: str = "VIGIL") -> str:
    """ORU^R01 with one OBX per sample, OBX-14 its device time, OBX-18 its device.

    OBX-11 is R (results entered, not verified): device values no clinician has checked.
    Quality flags follow their OBX as an NTE. The patient is named by pseudonym only.
    """
    esc = escape_text
    segments = [
        "|".join(
            [
                "MSH",
                "^~\\&",
                esc(application),
                esc(record.site_name),
                "",
                "",
                _time(now),
                "",
                "ORU^R01^ORU_R01",
                f"VIGIL-S{record.session_id}-{now.astimezone(UTC):%Y%m%d%H%M%S}",
                "P",
                "2.6",
                "",
                "",
                "NE",
                "NE",
                "",
                "UNICODE UTF-8",
                "",
                "",
                "IHE_PCD_001^IHE PCD^1.3.6.1.4.1.19376.1.6.1.1.1^ISO",
            ]
        ),
        f'PID|||{esc(record.patient_pseudonym)}^^^VIGIL^PI||""',
        f"PV1||O|{esc(record.site_name)}^^{esc(record.chair_name)}",
        "|".join(
            [
                "OBR",
                "1",
                f"VIGIL-S{record.session_id}^VIGIL",
                "",
                "182777000^monitoring of patient^SCT",
                "",
                "",
                _time(record.started_at),
                _time(record.ended_at) if record.ended_at else "",
            ]
        ),
    ]
    for index, sample in enumerate(record.samples, start=1):
        spec = VITALS[sample.vital]
        loinc = spec.loinc[0]  # the most specific LOINC as the alternate
        mdc, unit, ucum = spec.mdc, spec.mdc_unit, esc(spec.unit)
        segments.append(
            "|".join(
                [
                    "OBX",
                    str(index),
                    "NM",
                    f"{mdc.number}^{mdc.ref}^MDC^{loinc.code}^{esc(loinc.display)}^LN",
                    "",
                    f"{sample.value:g}",
                    f"{unit.number}^{unit.ref}^MDC^{ucum}^{ucum}^UCUM",
                    "",
                    "",
                    "",
                    "",
                    "R",
                    "",
                    "",
                    _time(sample.device_time),
                    "",
                    "",
                    "",
                    esc(sample.device),
                ]
            )
        )
        if sample.quality:
            segments.append(f"NTE|1||quality: {esc(', '.join(sample.quality))}")
    return "\r".join(segments) + "\r"


def batch_oru(batch: Mapping[str, Any], control_id: str, now: datetime) -> str:
    """A wire batch (the body of `POST /api/v1/observations`) as a gateway's ORU^R01.

    What a PCD-01 gateway in front of that device would send: MDC-coded OBX rows with the
    unit as given (UCUM), OBX-14 the device time and OBX-18 the device id. Lets anything
    that speaks Vigil's JSON (the simulators, the benchmark) drive the MLLP adapter.
    Quality flags have no PCD-01 field and are left out.
    """
    esc = escape_text
    device = str(batch["device_id"])
    segments = [
        f"MSH|^~\\&|SIM_GW^{esc(device)}|VIGIL|||{_time(now)}||ORU^R01^ORU_R01|{esc(control_id)}"
        "|P|2.6|||AL|NE||UNICODE UTF-8",
        f"OBR|1|||182777000^monitoring of patient^SCT|||{_time(now)}",
    ]
    for index, item in enumerate(batch["observations"], start=1):
        vital = resolve_vital(str(item["vital"]))
        if vital is None:
            code = esc(str(item["vital"]))
        else:
            mdc = VITALS[vital].mdc
            code = f"{mdc.number}^{mdc.ref}^MDC"
        unit = esc(str(item["unit"]))
        moment = datetime.fromisoformat(str(item["device_time"]))
        segments.append(
            f"OBX|{index}|NM|{code}||{float(item['value']):g}|{unit}^{unit}^UCUM|||||R|||"
            f"{_time(moment)}||||{esc(device)}"
        )
    return "\r".join(segments) + "\r"
