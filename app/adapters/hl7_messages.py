"""HL7 v2 observation and alert messages from patient monitors, read with python-hl7.

Pure functions, no I/O: `parse_message` turns one decoded message into a
`ParsedMessage`; `map_vitals` picks the OBX rows that carry Vigil vitals;
`read_alert` reads an ORU^R40 alarm; `build_ack` writes the answer.

Vendor quirks handled here (each seen in the shared samples):

- codes: IEEE 11073 MDC numbers or reference ids (`150456^MDC_PULS_OXIM_SAT_O2^MDC`),
  LOINC (`^LN`), Philips MDIL hex (`0002-4182` = partition 2, term 0x4182 = MDC 147842),
  cuff pressures (`MDC_PRESS_CUFF_*`, 150301–3, in any order), and vendor-local codes
  keyed by the sending application (Nihon Kohden `009000 NIBP SYS`);
- units in OBX-6 as MDC codes, UCUM, MDIL hex or plain text; kPa is converted by ingest;
- "no value": an empty OBX-5, HL7 null `""`, `---` and similar, and sentinels such as -999;
- OBX-11 status: D and W (deleted, wrong) and I, N, O (no result) are skipped; X ("cannot be
  obtained") is honoured when OBX-5 is empty, but Philips IntelliBridge marks every row X,
  values included, so a present value is kept;
- several OBR groups, each with its own time; time falls back OBX-14 → OBR-7 → OBR-8 →
  OBR-14 (Philips PIIC) → MSH-7 → Vigil's receipt; a time without offset takes MSH-7's
  offset, else the configured zone;
- the same vital twice at one time (dual SpO2 channels): the first OBX is kept;
- escape sequences (`\\S\\`) are resolved by python-hl7.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timezone, tzinfo
from typing import Any

import hl7  # type: ignore[import-untyped]

from app.errors import VigilError
from app.events import DeviceAlertKind
from app.hl7_text import escape_text
from monitor.vitals import (
    MDC_NUMBERS,
    ImplausibleValue,
    UnitError,
    Vital,
    accepted_units,
    normalise,
    resolve_vital,
)
from monitor.vitals import MDC_REFS as MONITOR_MDC_REFS

# HL7 table 0357, message error condition codes, as used in ACK ERR-3.
ERR_ACCEPTED = "0"
ERR_SEGMENT_SEQUENCE = "100"
ERR_REQUIRED_FIELD = "101"
ERR_DATA_TYPE = "102"
ERR_UNSUPPORTED_MESSAGE_TYPE = "200"
ERR_UNSUPPORTED_EVENT = "201"
ERR_UNKNOWN_KEY = "204"
ERR_INTERNAL = "207"
_ERROR_NAMES = {
    ERR_ACCEPTED: "Message accepted",
    ERR_SEGMENT_SEQUENCE: "Segment sequence error",
    ERR_REQUIRED_FIELD: "Required field missing",
    ERR_DATA_TYPE: "Data type error",
    ERR_UNSUPPORTED_MESSAGE_TYPE: "Unsupported message type",
    ERR_UNSUPPORTED_EVENT: "Unsupported event code",
    ERR_UNKNOWN_KEY: "Unknown key identifier",
    ERR_INTERNAL: "Application internal error",
}


class Hl7Error(VigilError):
    """A message Vigil does not accept; answered with a NACK (AR or AE) saying why."""

    status_code = 422
    code = "hl7_rejected"

    def __init__(self, message: str, ack_code: str = "AR", error_code: str = ERR_DATA_TYPE):
        super().__init__(message)
        self.ack_code = ack_code
        self.error_code = error_code


# --- code tables -------------------------------------------------------------------------

# MDC numeric codes (partition × 65536 + term) and reference ids: monitor's table of Vigil's
# vitals, plus the variants gateways send for the same measurement.
MDC_CODES: dict[int, Vital] = MDC_NUMBERS | {
    149538: Vital.PR,  # Philips NOM_PLETH_PULS_RATE (0x4822), pulse from the pleth
    149514: Vital.PR,  # MDC_PULS_RATE
    149522: Vital.PR,  # labelled MDC_PULS_RATE by Comen
    149546: Vital.PR,  # MDC_PULS_RATE_NON_INV: the cuff's pulse rate
    150301: Vital.NIBP_SYS,  # MDC_PRESS_CUFF_SYS
    150302: Vital.NIBP_DIA,  # MDC_PRESS_CUFF_DIA
    150303: Vital.NIBP_MEAN,  # MDC_PRESS_CUFF_MEAN
}
MDC_REFS: dict[str, Vital] = MONITOR_MDC_REFS | {
    "MDC_PULS_RATE": Vital.PR,
    "MDC_PULS_RATE_NON_INV": Vital.PR,
    "MDC_PRESS_CUFF_SYS": Vital.NIBP_SYS,
    "MDC_PRESS_CUFF_DIA": Vital.NIBP_DIA,
    "MDC_PRESS_CUFF_MEAN": Vital.NIBP_MEAN,
}
# Vendor-local codes, by sending application (MSH-3.1, upper case) then OBX-3.1.
# More can be configured (VIGIL_MLLP_LOCAL_CODES); these are the ones seen in the field.
VENDOR_CODES: dict[str, dict[str, Vital]] = {
    "NIHON KOHDEN": {
        "007000": Vital.SPO2,  # VITAL SpO2
        "007001": Vital.PR,  # VITAL PR(spo2)
        "009000": Vital.NIBP_SYS,  # NIBP SYS
        "009001": Vital.NIBP_DIA,  # NIBP DIAS
        "009002": Vital.NIBP_MEAN,  # NIBP MEAN
    },
}
_DIMENSIONLESS = {"262656", "mdc_dim_dimless"}
# HL7 DTM: YYYY[MM[DD[HH[MM[SS[.S[S[S[S]]]]]]]]][+/-ZZZZ]
_DTM = re.compile(r"\d{4}(?:\d{2}){0,5}(?:\.\d{1,4})?(?:[+-]\d{4})?")
_MDIL = re.compile(r"^([0-9A-Fa-f]{4})-([0-9A-Fa-f]{4})$")
_EVENT_PARTITION = 3  # MDC partition of events and alerts (MDC_EVT_*)

# OBX-5 texts devices send for "no value".
NO_VALUE_TEXTS = frozenset(
    {"", '""', "-", "--", "---", "?", "??", "n/a", "na", "nan", "null", "none", "inv", "invalid"}
)
NO_VALUE_NUMBERS = frozenset({-999.0, -9999.0, -99999.0})
SKIPPED_STATUSES = {
    "D": "deleted",
    "W": "marked wrong",
    "I": "pending",
    "N": "not asked",
    "O": "order only",
}
_PRIORITIES = {"PH": "high", "PM": "medium", "PL": "low", "PN": "none"}
_SOURCES = {"SP": "physiological", "ST": "technical", "SA": "advisory"}


# --- parsed shapes -----------------------------------------------------------------------

# A field as repetitions → components → subcomponents, unescaped.
Shape = list[list[list[str]]]


@dataclass(frozen=True, slots=True)
class Header:
    control_id: str  # MSH-10
    message_code: str  # MSH-9.1, e.g. ORU
    trigger: str  # MSH-9.2, e.g. R01
    version: str  # MSH-12
    processing_id: str  # MSH-11
    sending_application: Shape  # MSH-3
    sending_facility: Shape  # MSH-4
    message_time: datetime | None  # MSH-7, offset-aware if the message gave one
    accept_ack: str  # MSH-15
    application_ack: str  # MSH-16

    @property
    def sender(self) -> str:
        """MSH-3.1, the sending application's name."""
        return _part(self.sending_application)


@dataclass(frozen=True, slots=True)
class Hl7Observation:
    """One OBX row, read but not yet interpreted."""

    index: int  # 1-based position among the message's OBX segments
    group: int  # 1-based OBR group (0 before any OBR)
    value_type: str  # OBX-2
    code: str  # OBX-3.1
    name: str  # OBX-3.2
    coding_system: str  # OBX-3.3
    sub_id: str  # OBX-4
    raw_value: str  # OBX-5, first repetition, unescaped
    value: float | None  # OBX-5 as a number; None when absent, "no value", or not a number
    absent: bool  # OBX-5 says "no value": empty, "", ---, -999, SN with < or >, ...
    unit_code: str  # OBX-6.1
    unit_name: str  # OBX-6.2
    abnormal_flags: tuple[str, ...]  # OBX-8 repetitions
    status: str  # OBX-11
    time: datetime | None  # the device time that applies (see the module doc)
    equipment: tuple[str, ...]  # OBX-18 entity identifiers

    @property
    def label(self) -> str:
        """How an ACK or a log names this row."""
        what = " ".join(part for part in (self.code, self.name) if part)
        return f"OBX {self.index} ({what})" if what else f"OBX {self.index}"


@dataclass(frozen=True, slots=True)
class ParsedMessage:
    header: Header
    observations: list[Hl7Observation]
    bed: str | None  # PV1-3 as `bed:<point of care>/<room>/<bed>`
    device_candidates: list[str]  # most specific first: OBX-18, bed, MSH-3, MSH-4
    # Per OBR group, its filler order number (OBR-3.1, else the placer's, OBR-2.1): in an
    # ORU^R40 the alert's own id, the same in every update of one alert (IHE PCD-04).
    order_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class MappedValue:
    """An OBX row that carries a Vigil vital, ready for ingest (unit not yet converted)."""

    observation: Hl7Observation
    vital: Vital
    value: float
    unit: str
    device_time: datetime


@dataclass(slots=True)
class VitalRows:
    values: list[MappedValue] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # rows skipped, and why


@dataclass(frozen=True, slots=True)
class ParsedAlert:
    code: str
    name: str
    text: str
    priority: str | None
    source: str | None
    phase: str | None
    state: str | None
    vital: Vital | None
    value: float | None  # in the vital's canonical unit
    device_time: datetime
    kind: DeviceAlertKind = DeviceAlertKind.OTHER
    active: bool = True  # False once the phase is end/stop or the alarm state inactive
    alert_id: str | None = None  # the OBR group's order id (see `ParsedMessage.order_ids`)


# --- reading ----------------------------------------------------------------------------


def decode(raw: bytes) -> tuple[str, str, str]:
    """Text, Python encoding and declared MSH-18 of a message (UTF-8 when none is declared)."""
    first = raw.split(b"\r", 1)[0].decode("latin-1")
    charset = ""
    if len(first) > 3:
        fields = first.split(first[3])
        charset = fields[17].split("~")[0].strip() if len(fields) > 17 else ""
    encoding = "utf-8"
    if charset.upper().startswith("8859/15"):
        encoding = "iso8859-15"
    elif charset.upper().startswith("8859/1"):
        encoding = "latin-1"
    try:
        return raw.decode(encoding), encoding, charset
    except UnicodeDecodeError as exc:
        raise Hl7Error(
            f"message is not valid {encoding} (MSH-18 {charset or 'empty'}): {exc.reason} "
            f"at byte {exc.start}"
        ) from None


def sniff_control_id(text: str) -> str:
    """MSH-10 read without parsing, to answer even a message that cannot be parsed."""
    first = text.lstrip().split("\r", 1)[0].split("\n", 1)[0]
    if not first.startswith("MSH") or len(first) < 4:
        return ""
    fields = first.split(first[3])
    return fields[9][:199] if len(fields) > 9 else ""


def parse_message(text: str, zone: tzinfo = UTC) -> ParsedMessage:
    """Read one HL7 v2 message; raise `Hl7Error` if it is not one Vigil can read."""
    # Segments end in CR; some gateways send LF or CRLF.
    text = text.replace("\r\n", "\r").replace("\n", "\r").strip()
    if not text.startswith("MSH") or len(text) < 8:
        raise Hl7Error("not an HL7 v2 message: it must begin with an MSH segment")
    try:
        message = hl7.parse(text)
    except Exception as exc:  # python-hl7 raises several kinds on malformed input
        raise Hl7Error(f"cannot parse the message: {type(exc).__name__}: {exc}") from None
    reader = _Reader(message)
    msh = message[0]
    header_time_text = reader.text(msh, 7)
    message_time = _parse_time(header_time_text, "MSH-7", zone) if header_time_text else None
    message_type = reader.shape(msh, 9)
    header = Header(
        control_id=_part(reader.shape(msh, 10)),  # as sent: the ACK echoes it exactly
        message_code=_part(message_type, 0).upper(),
        trigger=_part(message_type, 1).upper(),
        version=reader.text(msh, 12),
        processing_id=reader.text(msh, 11),
        sending_application=reader.shape(msh, 3),
        sending_facility=reader.shape(msh, 4),
        message_time=message_time,
        accept_ack=reader.text(msh, 15).upper(),
        application_ack=reader.text(msh, 16).upper(),
    )
    # Naive times in the body follow MSH-7's offset (same clock), else the configured zone.
    body_zone: tzinfo = zone
    if message_time is not None and message_time.tzinfo and _has_offset(header_time_text):
        body_zone = message_time.tzinfo

    observations: list[Hl7Observation] = []
    equipment: list[str] = []
    order_ids: list[str] = []
    bed: str | None = None
    group = 0
    group_time: datetime | None = None
    for segment in list(message)[1:]:
        kind = reader.segment_id(segment)
        if kind == "PV1" and bed is None:
            bed = _bed(reader.shape(segment, 3))
        elif kind == "OBR":
            group += 1
            group_time = None
            order_ids.append(
                _part(reader.shape(segment, 3)).strip() or _part(reader.shape(segment, 2)).strip()
            )
            for number in (7, 8, 14):  # observation start, end; PIIC puts its time in 14
                candidate = reader.text(segment, number)
                if candidate:
                    group_time = _parse_time(candidate, f"OBR-{number}", body_zone)
                    break
        elif kind == "OBX":
            observation = _observation(
                reader, segment, len(observations) + 1, group, group_time, message_time, body_zone
            )
            observations.append(observation)
            equipment.extend(observation.equipment)
    senders = [
        _part(shape, index).strip()
        for shape in (header.sending_application, header.sending_facility)
        for index in (1, 0)  # HD.2 universal id (e.g. an EUI-64) before HD.1 name
    ]
    candidates = [*equipment, *([bed] if bed else []), *senders]
    return ParsedMessage(
        header=header,
        observations=observations,
        bed=bed,
        device_candidates=[c for c in dict.fromkeys(candidates) if c],
        order_ids=tuple(order_ids),
    )


class _Reader:
    """Tolerant access to python-hl7 containers: a missing part is an empty string."""

    def __init__(self, message: Any) -> None:
        self._message = message

    def segment_id(self, segment: Any) -> str:
        return self._unescape(str(segment[0])) if len(segment) else ""

    def shape(self, segment: Any, number: int) -> Shape:
        if number >= len(segment):
            return []
        shape: Shape = []
        for repetition in segment[number]:
            if isinstance(repetition, str):
                shape.append([[self._unescape(repetition)]])
                continue
            components: list[list[str]] = []
            for component in repetition:
                if isinstance(component, str):
                    components.append([self._unescape(component)])
                else:
                    components.append([self._unescape(str(sub)) for sub in component])
            shape.append(components)
        return shape

    def text(self, segment: Any, number: int) -> str:
        return _part(self.shape(segment, number)).strip()

    def _unescape(self, text: str) -> str:
        try:
            return str(self._message.unescape(text))
        except Exception as exc:  # python-hl7 raises on some malformed escape sequences
            raise Hl7Error(f"bad escape sequence in {text[:40]!r}: {exc}") from None


def _part(shape: Shape, component: int = 0, sub: int = 0, repetition: int = 0) -> str:
    try:
        return shape[repetition][component][sub]
    except IndexError:
        return ""


def _component(shape: Shape, component: int, repetition: int = 0) -> str:
    """A whole component, its non-empty subcomponents joined by `&`."""
    try:
        subs = shape[repetition][component]
    except IndexError:
        return ""
    return "&".join(s.strip() for s in subs if s.strip())


def _bed(shape: Shape) -> str | None:
    parts = [_component(shape, index) for index in range(3)]  # PL.1 point of care, room, bed
    located = "/".join(part for part in parts if part)
    return f"bed:{located}" if located else None


def _has_offset(text: str) -> bool:
    return bool(re.search(r"[+-]\d{4}$", text.strip()))


def _parse_time(text: str, where: str, zone: tzinfo) -> datetime:
    """An HL7 DTM as an aware datetime; naive times are placed in `zone`."""
    if not _DTM.fullmatch(text.strip()):
        raise Hl7Error(f"{where} {text[:40]!r} is not an HL7 date/time (YYYYMMDDHHMMSS[+ZZZZ])")
    try:
        moment = hl7.parse_datetime(text.strip())
        if not isinstance(moment, datetime):
            raise ValueError("empty")
        offset = moment.utcoffset()
        if offset is None:
            return moment.replace(tzinfo=zone)
        return moment.replace(tzinfo=timezone(offset))
    except (ValueError, OverflowError, TypeError) as exc:
        raise Hl7Error(f"{where} {text[:40]!r} is not an HL7 date/time: {exc}") from None


def _is_no_value_text(text: str) -> bool:
    return text.strip().lower() in NO_VALUE_TEXTS


def _number(text: str, value_type: str, components: list[list[str]]) -> tuple[float | None, bool]:
    """OBX-5 as (number, absent): absent means the device said "no value" in some form."""
    if value_type == "SN":  # structured numeric: comparator ^ number [^ separator ^ number]
        comparator = components[0][0].strip() if components else ""
        if comparator not in ("", "="):
            return None, True  # "<5" or ">300" is not a value to plot
        text = components[1][0] if len(components) > 1 else ""
    text = text.strip()
    if _is_no_value_text(text):
        return None, True
    try:
        value = float(text)
    except ValueError:
        return None, False
    if not math.isfinite(value) or value in NO_VALUE_NUMBERS:
        return None, True
    return value, False


def _mdil_to_mdc(code: str) -> int | None:
    match = _MDIL.match(code.strip())
    if match is None:
        return None
    return int(match.group(1), 16) * 65536 + int(match.group(2), 16)


def _observation(
    reader: _Reader,
    segment: Any,
    index: int,
    group: int,
    group_time: datetime | None,
    message_time: datetime | None,
    zone: tzinfo,
) -> Hl7Observation:
    value_type = reader.text(segment, 2).upper()
    code_shape = reader.shape(segment, 3)
    value_shape = reader.shape(segment, 5)
    unit_shape = reader.shape(segment, 6)
    raw_value = _part(value_shape) if value_type != "SN" else _component(value_shape, 1)
    value, absent = _number(raw_value, value_type, value_shape[0] if value_shape else [])
    time_text = reader.text(segment, 14)
    label = f"OBX {index} OBX-14"
    if time_text:
        time: datetime | None = _parse_time(time_text, label, zone)
    else:
        time = group_time or message_time
    equipment = tuple(
        ident
        for repetition in range(len(reader.shape(segment, 18)))
        if (ident := _part(reader.shape(segment, 18), 0, 0, repetition).strip())
    )
    flags = tuple(
        flag
        for repetition in range(len(reader.shape(segment, 8)))
        if (flag := _part(reader.shape(segment, 8), 0, 0, repetition).strip().upper())
    )
    return Hl7Observation(
        index=index,
        group=group,
        value_type=value_type,
        code=_part(code_shape, 0).strip(),
        name=_part(code_shape, 1).strip(),
        coding_system=_part(code_shape, 2).strip().upper(),
        sub_id=reader.text(segment, 4),
        raw_value=raw_value,
        value=value,
        absent=absent,
        unit_code=_part(unit_shape, 0).strip(),
        unit_name=_part(unit_shape, 1).strip(),
        abnormal_flags=flags,
        status=reader.text(segment, 11).upper(),
        time=time,
        equipment=equipment,
    )


# --- mapping to Vigil's vitals -----------------------------------------------------------


def vital_of(
    observation: Hl7Observation,
    sender: str = "",
    local_codes: Mapping[str, Mapping[str, Vital]] | None = None,
) -> Vital | None:
    """The Vigil vital an OBX row carries, or None."""
    code = observation.code
    for table in (local_codes or {}, VENDOR_CODES):
        local = table.get(sender.strip().upper(), {}).get(code)
        if local is not None:
            return local
    if observation.coding_system in ("LN", "LOINC"):
        return resolve_vital(code)
    number = _mdil_to_mdc(code)
    if number is None and code.isdigit() and not code.startswith("0"):
        number = int(code)  # a leading zero marks a vendor-local code, never an MDC one
    if number is not None and number in MDC_CODES:
        return MDC_CODES[number]
    for ref in (observation.name, code):
        if ref.upper() in MDC_REFS:
            return MDC_REFS[ref.upper()]
    if observation.coding_system in ("", "UCUM", "99VIGIL"):
        return resolve_vital(code)  # a canonical code or a LOINC code without its system
    return None


def _unit_candidates(observation: Hl7Observation) -> list[str]:
    units = []
    for unit in (observation.unit_code, observation.unit_name):
        number = _mdil_to_mdc(unit)
        units.append(str(number) if number is not None else unit)
    return [u for u in units if u]


def _unit_for(vital: Vital, observation: Hl7Observation) -> str | None:
    """The first OBX-6 part ingest accepts for `vital`, else the first given (ingest refuses)."""
    candidates = _unit_candidates(observation)
    accepted = {unit.lower() for unit in accepted_units(vital)}
    return next((u for u in candidates if u.lower() in accepted), None) or next(
        iter(candidates), None
    )


def map_vitals(
    message: ParsedMessage,
    received_time: datetime,
    local_codes: Mapping[str, Mapping[str, Vital]] | None = None,
) -> VitalRows:
    """The OBX rows carrying Vigil vitals, one per vital and device time; notes on the rest.

    Raises `Hl7Error` (AE) for a row that names a Vigil vital but whose value is not a
    number and not one of the "no value" forms.
    """
    mapping = VitalRows()
    kept: dict[tuple[Vital, datetime], Hl7Observation] = {}
    sender = message.header.sender
    for observation in message.observations:
        vital = vital_of(observation, sender, local_codes)
        if vital is None:
            continue
        label = observation.label
        skipped = SKIPPED_STATUSES.get(observation.status)
        if skipped is not None:
            mapping.notes.append(
                f"{label}: skipped, result status {observation.status} ({skipped})"
            )
            continue
        if observation.value is None:
            if observation.absent:
                mapping.notes.append(f"{label}: no value")
                continue
            raise Hl7Error(
                f"{label}: value {observation.raw_value[:40]!r} is not a number",
                ack_code="AE",
                error_code=ERR_DATA_TYPE,
            )
        units = _unit_candidates(observation)
        if vital is Vital.PI and any(u.lower() in _DIMENSIONLESS for u in units):
            # Philips' dimensionless "Perf" is a relative index, not a perfusion index in %.
            mapping.notes.append(f"{label}: skipped, dimensionless perfusion is not PI in %")
            continue
        unit = _unit_for(vital, observation)
        if unit is None:
            raise Hl7Error(
                f"{label}: {vital.value} has no unit in OBX-6",
                ack_code="AE",
                error_code=ERR_REQUIRED_FIELD,
            )
        device_time = observation.time or received_time
        earlier = kept.get((vital, device_time))
        if earlier is not None:
            mapping.notes.append(
                f"{label}: second {vital.value} at one time ignored (kept OBX {earlier.index}"
                f"{', channel ' + earlier.sub_id if earlier.sub_id else ''})"
            )
            continue
        kept[(vital, device_time)] = observation
        mapping.values.append(MappedValue(observation, vital, observation.value, unit, device_time))
    return mapping


# --- alerts (ORU^R40, IHE PCD-04) --------------------------------------------------------

# MDC events (partition 3, ISO/IEEE 11073-10101) that mean a cuff cycle ended without a
# reading: the cuff was wrong, leaked, came loose, over-inflated or did not deflate.
NIBP_FAILURE_EVENTS: dict[int, str] = {
    196834: "MDC_EVT_CUFF_INCORRECT",
    196836: "MDC_EVT_CUFF_LEAK",
    196838: "MDC_EVT_CUFF_NOT_DEFLATED",
    196840: "MDC_EVT_CUFF_INFLAT_OVER",
    196848: "MDC_EVT_CUFF_LOOSE",
    197038: "MDC_EVT_CUFF_POSN_ERR",
}
# A sensor disconnected: the SpO2 probe is off when the alert is about SpO2.
SENSOR_OFF_EVENTS: dict[int, str] = {196916: "MDC_EVT_SENSOR_DISCONN"}
_SPO2_CODES = frozenset(code for code, vital in MDC_CODES.items() if vital is Vital.SPO2)
_NIBP_CODES = frozenset(
    code
    for code, vital in MDC_CODES.items()
    if vital in (Vital.NIBP_SYS, Vital.NIBP_DIA, Vital.NIBP_MEAN)
)
# The words monitors use for the same alerts (Philips IntelliVue "NBP MEASURE FAILED",
# "SpO2 SENSOR OFF"; GE "SPO2 PROBE OFF"; Mindray "NIBP Meas. Failed", "SpO2 No Sensor").
_NIBP_WORDS = re.compile(r"\b(nibp|nbp|cuff)\b", re.IGNORECASE)  # not IBP: arterial
_FAILURE_WORDS = re.compile(
    r"fail|abort|interrupt|unable|cannot|can't|time ?out|leak|loose|over ?press|no result|"
    r"not deflated|meas\w*\s+err",
    re.IGNORECASE,
)
_SPO2_WORDS = re.compile(r"\b(spo2|sp02|spo₂|sat|pleth|oximet\w*)\b", re.IGNORECASE)
_PROBE_OFF_WORDS = re.compile(
    r"\b(probe|sensor|finger)\s*(off|disconn\w*|unplugged|not connected)\b|\bno\s+(sensor|probe)\b",
    re.IGNORECASE,
)
# Limit alarms on a value (MDC_EVT_HI, MDC_EVT_LO_LO, ...): physiological by nature.
_LIMIT_EVENT = re.compile(r"^MDC_EVT_(HI|LO)(_|$)")
_LIMIT_EVENT_CODES = frozenset({196648, 196670})  # MDC_EVT_HI, MDC_EVT_LO
_ENDED_PHASES = frozenset({"end", "stop"})
# "latched": the device still shows it, but its condition is over.
_ENDED_STATES = frozenset({"inactive", "latched"})


def _is_event(observation: Hl7Observation) -> bool:
    if observation.name.upper().startswith("MDC_EVT_"):
        return True
    number = _event_number(observation)
    return number is not None and number // 65536 == _EVENT_PARTITION


def _event_number(observation: Hl7Observation) -> int | None:
    number = _mdil_to_mdc(observation.code)
    if number is None and observation.code.isdigit():
        number = int(observation.code)
    return number


def _attribute(message: ParsedMessage, name: str) -> str | None:
    found = next((o for o in message.observations if o.name.upper() == name), None)
    return found.raw_value.strip() or None if found else None


def _sub_id_codes(observation: Hl7Observation) -> set[int]:
    """The MDC codes in a PCD-04 OBX-4 containment id (`1.3.1.150456.1`: the SpO2 metric)."""
    return {int(part) for part in observation.sub_id.split(".") if part.isdigit()}


def classify_alert(
    event: Hl7Observation, source: str | None, vital: Vital | None
) -> DeviceAlertKind:
    """What a device's alert means for Vigil, from its MDC event code, the metric it is
    about (OBX-4, or the value sent with it) and, for codes without a standard meaning,
    the device's own words. Physiological and advisory alerts are `other`: Vigil judges
    the values themselves by the clinic's protocol."""
    number = _event_number(event)
    name = event.name.upper()
    text = event.raw_value
    about = _sub_id_codes(event)
    about_spo2 = vital is Vital.SPO2 or bool(about & _SPO2_CODES) or bool(_SPO2_WORDS.search(text))
    about_nibp = vital in (Vital.NIBP_SYS, Vital.NIBP_DIA, Vital.NIBP_MEAN) or bool(
        about & _NIBP_CODES
    )
    if number in NIBP_FAILURE_EVENTS or name in NIBP_FAILURE_EVENTS.values():
        return DeviceAlertKind.NIBP_FAILED
    if (number in SENSOR_OFF_EVENTS or name in SENSOR_OFF_EVENTS.values()) and about_spo2:
        return DeviceAlertKind.PROBE_OFF
    if source in ("physiological", "advisory"):
        return DeviceAlertKind.OTHER
    if (about_nibp or _NIBP_WORDS.search(text)) and _FAILURE_WORDS.search(text):
        return DeviceAlertKind.NIBP_FAILED
    if about_spo2 and _PROBE_OFF_WORDS.search(text):
        return DeviceAlertKind.PROBE_OFF
    if source is None and (_LIMIT_EVENT.match(name) or number in _LIMIT_EVENT_CODES):
        return DeviceAlertKind.OTHER
    return DeviceAlertKind.EQUIPMENT_FAULT


def read_alert(message: ParsedMessage, received_time: datetime) -> ParsedAlert:
    """The alarm an ORU^R40 reports; `Hl7Error` (AE) if it names no MDC_EVT_ event."""
    event = next((o for o in message.observations if _is_event(o)), None)
    if event is None:
        raise Hl7Error(
            "ORU^R40 without an alert observation (an OBX coded MDC_EVT_...)",
            ack_code="AE",
            error_code=ERR_REQUIRED_FIELD,
        )
    vital: Vital | None = None
    value: float | None = None
    for observation in message.observations:
        candidate = vital_of(observation, message.header.sender)
        if candidate is None or observation.value is None:
            continue
        unit = _unit_for(candidate, observation)
        try:
            value = normalise(candidate, observation.value, unit or "")
        except (UnitError, ImplausibleValue):
            value = None
        vital = candidate
        break
    source = next((_SOURCES[f] for f in event.abnormal_flags if f in _SOURCES), None)
    phase = _attribute(message, "MDC_ATTR_EVENT_PHASE")
    state = _attribute(message, "MDC_ATTR_ALARM_STATE")
    ended = (phase or "").lower() in _ENDED_PHASES or (state or "").lower() in _ENDED_STATES
    groups = message.order_ids
    alert_id = groups[event.group - 1] if 0 < event.group <= len(groups) else ""
    return ParsedAlert(
        code=event.code,
        name=event.name,
        text=event.raw_value.strip(),
        priority=next((_PRIORITIES[f] for f in event.abnormal_flags if f in _PRIORITIES), None),
        source=source,
        phase=phase,
        state=state,
        vital=vital,
        value=value,
        device_time=event.time or received_time,
        kind=classify_alert(event, source, vital),
        active=not ended,
        alert_id=alert_id or None,
    )


# --- acknowledgements --------------------------------------------------------------------


def _render(shape: Shape) -> str:
    """A field re-written with the standard separators (first repetition only)."""
    if not shape:
        return ""
    return "^".join("&".join(escape_text(sub) for sub in component) for component in shape[0])


def build_ack(
    ack_code: str,
    control_id: str,
    text: str = "",
    header: Header | None = None,
    error_code: str | None = None,
    now: datetime | None = None,
    application: str = "VIGIL",
    facility: str = "",
    ack_control_id: str | None = None,
    warning: bool = False,
    charset: str = "",
) -> str:
    """An original-mode ACK: MSH, MSA (code, the message's MSH-10, text), ERR on a NACK.

    `warning` adds an ERR of severity W to an AA: accepted, with rows skipped. `charset`
    is the message's MSH-18, repeated in the ACK's (the ACK is written in it).
    """
    now = now or datetime.now(UTC)
    trigger = header.trigger if header else ""
    version = header.version if header and re.fullmatch(r"2\.\d+(\.\d+)?", header.version) else ""
    processing = header.processing_id if header and header.processing_id in "PDT" else ""
    msh = [
        "MSH",
        "^~\\&",
        escape_text(application),
        escape_text(facility),
        _render(header.sending_application) if header else "",
        _render(header.sending_facility) if header else "",
        now.astimezone(UTC).strftime("%Y%m%d%H%M%S+0000"),
        "",
        f"ACK^{escape_text(trigger)}^ACK" if trigger else "ACK",
        escape_text(ack_control_id or hl7.generate_message_control_id()),
        processing or "P",
        version or "2.6",
    ]
    if charset:
        msh += ["", "", "", "", "", escape_text(charset)]  # MSH-13..18: the same charset back
    text = " ".join(text.split())  # reasons on one line, however they were worded
    segments = [
        "|".join(msh[:1]) + "|" + "|".join(msh[1:]),
        f"MSA|{ack_code}|{escape_text(control_id)}|{escape_text(text[:200])}",
    ]
    if ack_code != "AA" or warning:
        # ERR-8 carries the whole text (MSA-3 is short); on an AA it lists the rows skipped.
        code = error_code or (ERR_ACCEPTED if ack_code == "AA" else ERR_INTERNAL)
        severity = "W" if ack_code == "AA" else "E"
        segments.append(
            f"ERR|||{code}^{_ERROR_NAMES.get(code, '')}^HL70357|{severity}||||"
            f"{escape_text(text[:2000])}"
        )
    return "\r".join(segments) + "\r"


def offset_zone(name: str | None) -> tzinfo:
    """The zone for times without an offset: an IANA name, `UTC`, or None for the local zone."""
    if name is None:
        local = datetime.now().astimezone().tzinfo
        return local or UTC
    if name.upper() in ("UTC", "Z"):
        return UTC
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r}: {exc}") from None


def local_code_table(raw: Mapping[str, Mapping[str, str]]) -> dict[str, dict[str, Vital]]:
    """Configured vendor codes ({"SENDER": {"code": "spo2"}}) as a lookup table."""
    table: dict[str, dict[str, Vital]] = {}
    for sender, codes in raw.items():
        for code, vital_code in codes.items():
            vital = resolve_vital(vital_code)
            if vital is None:
                raise ValueError(f"local code {sender}/{code}: unknown vital {vital_code!r}")
            table.setdefault(sender.strip().upper(), {})[code.strip()] = vital
    return table


def sequence_of(values: Sequence[MappedValue]) -> list[dict[str, object]]:
    """Mapped values as ingest observations (wire form, canonical vital codes)."""
    return [
        {
            "vital": mapped.vital.value,
            "value": mapped.value,
            "unit": mapped.unit,
            "device_time": mapped.device_time,
        }
        for mapped in values
    ]
