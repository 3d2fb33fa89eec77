"""ORU^R40 alerts in the style of their senders, read as the alert Vigil makes of them."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from app.adapters.hl7_messages import decode, parse_message, read_alert
from app.events import DeviceAlertKind
from tests.adapters.conftest import HL7_SAMPLES
from tests.adapters.test_device_alerts import ALERTS

RECEIVED = datetime(2026, 11, 25, 9, 30, tzinfo=UTC)
NIBP, PROBE, FAULT, OTHER = (
    DeviceAlertKind.NIBP_FAILED,
    DeviceAlertKind.PROBE_OFF,
    DeviceAlertKind.EQUIPMENT_FAULT,
    DeviceAlertKind.OTHER,
)


@pytest.mark.parametrize(
    ("name", "kind", "active", "alert_id", "priority", "onset"),
    [
        ("picix_r40_nbp_measure_failed_1.hl7", NIBP, True, "4711", "medium", True),
        ("picix_r40_nbp_measure_failed_1_continue.hl7", NIBP, True, "4711", "medium", False),
        ("picix_r40_nbp_measure_failed_2.hl7", NIBP, True, "4712", "medium", True),
        ("picix_r40_spo2_sensor_off.hl7", PROBE, True, "4713", "medium", True),
        ("picix_r40_spo2_sensor_malf.hl7", FAULT, True, "4714", "high", True),
        ("ihe_pcd04_cuff_leak.hl7", NIBP, True, "AB12345", "medium", True),
        ("ihe_pcd04_equipment_malfunction_start.hl7", FAULT, True, "AB12346", "high", True),
        ("ihe_pcd04_equipment_malfunction_end.hl7", FAULT, False, "AB12346", "high", False),
    ],
)
def test_each_alert_is_read_as_the_alarm_it_means(
    name: str,
    kind: DeviceAlertKind,
    active: bool,
    alert_id: str,
    priority: str,
    onset: bool,
) -> None:
    message = parse_message(decode((ALERTS / name).read_bytes())[0], UTC)
    assert (message.header.message_code, message.header.trigger) == ("ORU", "R40")
    alert = read_alert(message, RECEIVED)
    assert (alert.kind, alert.active, alert.alert_id) == (kind, active, alert_id)
    assert (alert.priority, alert.source) == (priority, "technical")
    assert alert.device_time != RECEIVED  # OBX-14, the device's own time
    starts = alert.active and alert.phase in ("start", "start_only", "tpoint")
    assert starts is onset


def test_a_physiological_alert_of_the_device_is_not_one_vigil_raises() -> None:
    """Mindray's "Low SpO2" (SP): Vigil judges SpO2 itself, by the clinic's protocol."""
    raw = (HL7_SAMPLES / "04_mindray_egateway_oru_r40_spo2_low_alarm.hl7").read_bytes()
    alert = read_alert(parse_message(decode(raw)[0], UTC), RECEIVED)
    assert (alert.kind, alert.active, alert.alert_id) == (OTHER, True, "1")


GENERIC = "196616^MDC_EVT_ALARM^MDC"
SENSOR_DISCONN = "196916^MDC_EVT_SENSOR_DISCONN^MDC"
CUFF_LOOSE = "196848^MDC_EVT_CUFF_LOOSE^MDC"


@pytest.mark.parametrize(
    ("code", "text", "flags", "sub_id", "kind"),
    [
        (GENERIC, "NBP MEASURE FAILED", "ST~PM", "1.2.1.150021.1", NIBP),
        (GENERIC, "NIBP Meas. Failed", "ST", "1.0.0.0.1", NIBP),  # Mindray's words, no metric
        (GENERIC, "Cuff loose", "", "1.2.1.150021.1", NIBP),
        (CUFF_LOOSE, "Check cuff", "ST~PL", "1.0.0.0.1", NIBP),  # the code alone says it
        (GENERIC, "IBP transducer failed", "ST", "1.2.1.150037.1", FAULT),  # arterial
        (GENERIC, "SpO2 NO SENSOR", "ST~PL", "1.3.1.150456.1", PROBE),
        (GENERIC, "SPO2 PROBE OFF", "", "1.0.0.0.1", PROBE),  # GE's words
        (SENSOR_DISCONN, "SpO2 INOP", "ST~PM", "1.3.1.150456.1", PROBE),  # by the code
        (SENSOR_DISCONN, "CO2 INOP", "ST~PM", "1.4.1.151708.1", FAULT),  # not the oximeter
        (GENERIC, "LEADS OFF", "ST~PM", "1.1.1.147842.1", FAULT),
        (GENERIC, "NBP SYS HIGH", "SP~PH", "1.2.1.150021.1", OTHER),  # physiological
        (GENERIC, "Battery low", "", "1.0.0.0.1", FAULT),  # no source given: surfaced
    ],
)
def test_an_alert_is_known_by_its_code_its_metric_and_its_words(
    code: str, text: str, flags: str, sub_id: str, kind: DeviceAlertKind
) -> None:
    raw = "\r".join(
        [
            "MSH|^~\\&|GW||||20261125101500+0000||ORU^R40^ORU_R40|M1|P|2.6",
            "OBR|1|7|7|196616^MDC_EVT_ALARM^MDC|||20261125101500+0000",
            f"OBX|1|ST|{code}|{sub_id}|{text}|||{flags}|||F",
        ]
    )
    assert read_alert(parse_message(raw, UTC), RECEIVED).kind is kind
