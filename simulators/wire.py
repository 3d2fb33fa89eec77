"""Vigil's HTTP ingest body, as typed dictionaries: what every simulator ultimately produces."""

from __future__ import annotations

from datetime import datetime
from typing import Literal, NotRequired, TypedDict

VitalCode = Literal["hr", "pr", "spo2", "pi", "nibp_sys", "nibp_dia", "nibp_mean"]
Unit = Literal["/min", "%", "mm[Hg]"]
QualityFlag = Literal["artifact", "low_perfusion", "probe_off", "cuff_inflating", "questionable"]

UNITS: dict[VitalCode, Unit] = {
    "hr": "/min",
    "pr": "/min",
    "spo2": "%",
    "pi": "%",
    "nibp_sys": "mm[Hg]",
    "nibp_dia": "mm[Hg]",
    "nibp_mean": "mm[Hg]",
}


class Observation(TypedDict):
    vital: VitalCode
    value: float
    unit: Unit
    device_time: str
    quality: NotRequired[list[QualityFlag]]


class Batch(TypedDict):
    device_id: str
    observations: list[Observation]


def observation(
    vital: VitalCode, value: float, device_time: datetime, quality: tuple[QualityFlag, ...] = ()
) -> Observation:
    """One observation in wire form; `quality` is left out when there is nothing to flag."""
    if device_time.tzinfo is None:
        raise ValueError("device_time must carry a UTC offset")
    item = Observation(
        vital=vital,
        value=float(value),
        unit=UNITS[vital],
        device_time=device_time.isoformat(timespec="milliseconds"),
    )
    if quality:
        item["quality"] = list(quality)
    return item
