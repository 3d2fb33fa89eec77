"""Every shared HL7 sample parses to the values it carries, and is stored over real MLLP."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from app.adapters.events import ConnectionState
from app.adapters.hl7_messages import (
    decode,
    local_code_table,
    map_vitals,
    parse_message,
    read_alert,
    vital_of,
)
from app.adapters.hl7_mllp import MllpSettings
from app.storage.db import Database
from app.storage.models import Device, Sample
from tests.adapters.conftest import HL7_SAMPLES, AdapterServer, MllpClient, ack_fields

RECEIVED = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Expected:
    """What a sample carries, per its vendor: Vigil vitals, their device times, the rest."""

    trigger: str
    vitals: dict[str, float]
    times: dict[str, str] = field(default_factory=dict)  # vital → ISO device time
    others: dict[str, float] = field(default_factory=dict)  # OBX-3.2 → value, not Vigil vitals
    notes: tuple[str, ...] = ()  # fragments of the skip notes
    register: str = ""  # the identifier the MLLP test registers, and the message resolves to
    bound: bool = True


SAMPLES: dict[str, Expected] = {
    "01_philips_intellibridge_pcd01_nibp_hr_spo2.hl7": Expected(
        "R01",
        {"nibp_sys": 117, "nibp_dia": 82, "nibp_mean": 90, "hr": 80, "spo2": 99},
        {"nibp_sys": "2015-01-22T11:50:00+00:00", "hr": "2015-01-22T18:26:56+00:00"},
        {"MDC_RESP_RATE": 30, "MDC_ECG_TIME_PD_QT_GL": 360},
        ("dimensionless perfusion",),
        register="bed:HO Surgery/OR/1",
    ),
    "02_ihe_pcd01_gateway_nibp_ucum_units.hl7": Expected(
        "R01",
        {"nibp_sys": 111, "nibp_dia": 60, "nibp_mean": 80, "pr": 63},
        {"nibp_sys": "2011-06-02T04:58:42+00:00"},
        register="080019FFFE3ED02D",
    ),
    "04_mindray_egateway_oru_r40_spo2_low_alarm.hl7": Expected(
        "R40", {}, register="bed:HO Surgery/OR/1"
    ),
    "07_ge_b40_vsp_pcd01_hr_spo2_pr_co2.hl7": Expected(
        "R01",
        {"hr": 68, "spo2": 97, "pr": 67},
        {"hr": "2023-03-09T14:39:00+00:00"},
        {"MDC_CONC_AWAY_CO2_EXP": 1, "MDC_CONC_AWAY_CO2_INSP": 1},
        register="080019FFFE1443EC",
    ),
    "08_mindray_vs900_2019_spo2_pr_cuff_nibp_temp.hl7": Expected(
        "R01",
        {"spo2": 99, "pr": 94, "pi": 0.94, "nibp_sys": 147, "nibp_mean": 109, "nibp_dia": 90},
        {"spo2": "2019-12-06T11:34:52+00:00", "nibp_sys": "2019-12-06T11:10:16+00:00"},
        {"MDC_TEMP_AXIL": 35.1},
        register="00A0370098007A80",
    ),
    "11_comen_nc_periodic_mon_param_dual_spo2.hl7": Expected(
        "R01",
        {"spo2": 97, "pr": 59, "nibp_sys": 120, "nibp_dia": 80, "nibp_mean": 90},
        {"spo2": "2025-06-10T01:51:27+08:00"},
        {"MDC_RESP_RATE": 20, "MDC_TEMP": 37.0, "MDC_PULS_OXIM_SAT_O2_DIFF": 0},
        ("second spo2",),
        register="KC261551373G",
    ),
    "13_nihonkohden_vital_plus_nibp_two_obr.hl7": Expected(
        "R01",
        {"spo2": 99, "pr": 77, "nibp_sys": 133, "nibp_dia": 77, "nibp_mean": 95},
        {"spo2": "2026-04-22T18:44:00+00:00", "nibp_sys": "2026-04-22T18:43:37+00:00"},
        {"VITAL rPR(spo2)": 77},
        register="bed:BED-001",
    ),
    "15_philips_piic_mdil_escape_seq_hr_spo2_pulse.hl7": Expected(
        "R01",
        {"spo2": 98, "hr": 87, "pr": 87},
        {"hr": "2011-11-14T21:49:31+00:00"},
        {"pNN50": 0, "SD NN": 3.0, "PVC": 0},
        register="bed:8-3600/8-3604&4&1",
        bound=False,
    ),
}


def test_the_table_covers_every_shared_sample() -> None:
    assert set(SAMPLES) == {path.name for path in HL7_SAMPLES.glob("*.hl7")}


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_sample_parses_to_the_values_it_carries(name: str) -> None:
    expected = SAMPLES[name]
    message = parse_message(decode((HL7_SAMPLES / name).read_bytes())[0], UTC)
    assert (message.header.message_code, message.header.trigger) == ("ORU", expected.trigger)
    assert message.header.control_id
    assert expected.register in message.device_candidates

    others = {
        o.name: o.value
        for o in message.observations
        if o.value is not None and vital_of(o, message.header.sender) is None
    }
    for label, value in expected.others.items():
        assert others.get(label) == pytest.approx(value), (label, others)
    if expected.trigger == "R40":
        return

    mapping = map_vitals(message, RECEIVED)
    vitals = {m.vital.value: m.value for m in mapping.values}
    assert vitals == pytest.approx(expected.vitals)
    assert len(mapping.values) == len(expected.vitals)  # one value per vital, no duplicates
    times = {m.vital.value: m.device_time for m in mapping.values}
    for vital, moment in expected.times.items():
        assert times[vital] == datetime.fromisoformat(moment), vital
    for fragment in expected.notes:
        assert any(fragment in note for note in mapping.notes), mapping.notes


def test_escape_sequences_are_resolved() -> None:
    """Philips PIIC writes 2.73x10^-7 as 2.73x10\\S\\-7: read as text, never as a number."""
    name = "15_philips_piic_mdil_escape_seq_hr_spo2_pulse.hl7"
    message = parse_message(decode((HL7_SAMPLES / name).read_bytes())[0], UTC)
    sml = next(o for o in message.observations if o.name == "SML")
    assert sml.raw_value == "2.73x10^-7"
    assert sml.value is None
    # PV1-3 subcomponents are kept: that bed is 8-3604&4&1 in point of care 8-3600.
    assert message.bed == "bed:8-3600/8-3604&4&1"


def test_mdil_hex_codes_are_mdc_codes() -> None:
    name = "15_philips_piic_mdil_escape_seq_hr_spo2_pulse.hl7"
    message = parse_message(decode((HL7_SAMPLES / name).read_bytes())[0], UTC)
    hr = next(m for m in map_vitals(message, RECEIVED).values if m.vital.value == "hr")
    assert hr.observation.code == "0002-4182"  # 2 × 65536 + 0x4182 = 147842
    assert hr.unit == "264864"  # 0004-0aa0: MDC_DIM_BEAT_PER_MIN


def test_r40_alert_carries_the_alarm() -> None:
    name = "04_mindray_egateway_oru_r40_spo2_low_alarm.hl7"
    message = parse_message(decode((HL7_SAMPLES / name).read_bytes())[0], UTC)
    alert = read_alert(message, RECEIVED)
    assert (alert.name, alert.text) == ("MDC_EVT_LO", "Low SpO2")
    assert (alert.vital and alert.vital.value, alert.value) == ("spo2", 88)
    assert (alert.priority, alert.source) == ("medium", "physiological")
    assert (alert.phase, alert.state) == ("start", "active")
    assert alert.device_time == datetime.fromisoformat("2012-01-11T15:04:57-06:00")


def test_every_sample_is_stored_over_mllp(mllp_server: AdapterServer) -> None:
    """All eight samples over one real MLLP connection: each gets AA and its values stored."""
    chairs = mllp_server.chair_ids()
    registered: set[str] = set()
    for index, expected in enumerate(SAMPLES.values()):
        if expected.register not in registered:
            chair = chairs[index % len(chairs)] if expected.bound else None
            mllp_server.register(expected.register, chair)
            registered.add(expected.register)

    port = mllp_server.adapter_port("mllp")
    with MllpClient(port) as client:
        for name, expected in SAMPLES.items():
            raw = (HL7_SAMPLES / name).read_bytes()
            code, acked_id, text = ack_fields(client.send(raw))
            message = parse_message(decode(raw)[0], UTC)
            assert (code, acked_id) == ("AA", message.header.control_id), (name, text)
            if not expected.bound:
                assert "unbound" in text

    db = Database(mllp_server.clinic.url)
    try:
        with db.session() as session:
            for name, expected in SAMPLES.items():
                if expected.trigger == "R40":
                    continue
                rows = session.execute(
                    select(Sample.vital, Sample.value, Sample.quality)
                    .join(Device, Sample.device_id == Device.id)
                    .where(Device.identifier == expected.register)
                ).all()
                stored = {vital: value for vital, value, _ in rows}
                for vital, value in expected.vitals.items():
                    assert stored.get(vital) == pytest.approx(value), (name, vital, stored)
                if not expected.bound:
                    assert all(quality & 32 for _, _, quality in rows)  # flagged unbound
    finally:
        db.close()

    [alert] = mllp_server.recorder.alerts()
    assert (alert.device_identifier, alert.text, alert.value) == (
        "bed:HO Surgery/OR/1",
        "Low SpO2",
        88,
    )
    assert alert.chair_id == chairs[0]
    connected = mllp_server.recorder.wait_for_link("080019FFFE1443EC", ConnectionState.CONNECTED)
    assert connected.adapter == "mllp"
    assert connected.chair_id is not None


def test_configured_local_codes_map_vendor_codes(monkeypatch: pytest.MonkeyPatch) -> None:
    """A site's own vendor codes, from VIGIL_MLLP_LOCAL_CODES, keyed by MSH-3."""
    monkeypatch.setenv("VIGIL_MLLP_LOCAL_CODES", '{"ACME MON": {"0815": "spo2", "0816": "hr"}}')
    table = local_code_table(MllpSettings().local_codes)
    text = (
        "MSH|^~\\&|ACME MON|W3|||20261125101500+0100||ORU^R01|a-1|P|2.5\r"
        "OBX|1|NM|0815^SAT|1|95|%|||||F\r"
        "OBX|2|NM|0816^PULSE|1|64|bpm|||||F\r"
        "OBX|3|NM|0817^TEMP|1|36.6|Cel|||||F\r"
    )
    mapping = map_vitals(parse_message(text, UTC), RECEIVED, table)
    assert {m.vital.value: m.value for m in mapping.values} == {"spo2": 95, "hr": 64}
    assert mapping.values[0].device_time == datetime.fromisoformat("2026-11-25T10:15:00+01:00")
