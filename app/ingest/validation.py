"""Turn a structurally valid batch into normalised observations, or say exactly what is wrong."""

from __future__ import annotations

from datetime import datetime, timedelta

from app.errors import FieldProblem, InvalidRequest
from app.events import Observation
from app.ingest.schemas import ObservationBatchIn
from monitor.vitals import (
    ImplausibleValue,
    SampleQuality,
    UnitError,
    Vital,
    normalise,
    resolve_vital,
)

_KNOWN_CODES = ", ".join(v.value for v in Vital)


def normalise_batch(
    batch: ObservationBatchIn, received_time: datetime, max_future_skew_s: float
) -> list[Observation]:
    """Every observation normalised, or InvalidRequest naming each bad field."""
    problems: list[FieldProblem] = []
    accepted: list[tuple[int, Observation]] = []
    latest_allowed = received_time + timedelta(seconds=max_future_skew_s)
    for index, item in enumerate(batch.observations):
        loc: tuple[str | int, ...] = ("body", "observations", index)
        vital = resolve_vital(item.vital)
        if vital is None:
            problems.append(
                FieldProblem(
                    (*loc, "vital"),
                    f"unknown vital code {item.vital!r}; use one of {_KNOWN_CODES} "
                    "or its MDC or LOINC code",
                )
            )
            continue
        try:
            value = normalise(vital, item.value, item.unit)
        except UnitError as exc:
            problems.append(FieldProblem((*loc, "unit"), str(exc)))
            continue
        except ImplausibleValue as exc:
            problems.append(FieldProblem((*loc, "value"), str(exc)))
            continue
        if item.device_time > latest_allowed:
            ahead = (item.device_time - received_time).total_seconds()
            problems.append(
                FieldProblem(
                    (*loc, "device_time"),
                    f"device_time is {ahead:.0f} s ahead of the server clock "
                    f"(at most {max_future_skew_s:.0f} s allowed); check the device's clock",
                )
            )
            continue
        quality = SampleQuality.from_names(list(item.quality))
        accepted.append((index, Observation(vital, value, item.device_time, quality)))
    problems.extend(_blood_pressure_problems(accepted))
    if problems:
        raise InvalidRequest(problems)
    return [observation for _, observation in accepted]


def _blood_pressure_problems(accepted: list[tuple[int, Observation]]) -> list[FieldProblem]:
    """A systolic below the diastolic of the same cuff reading (same device time)."""
    systolic: dict[datetime, tuple[int, float]] = {}
    diastolic: dict[datetime, float] = {}
    for index, observation in accepted:
        if observation.vital is Vital.NIBP_SYS:
            systolic[observation.device_time] = (index, observation.value)
        elif observation.vital is Vital.NIBP_DIA:
            diastolic[observation.device_time] = observation.value
    problems = []
    for moment, (index, sys_value) in systolic.items():
        dia_value = diastolic.get(moment)
        if dia_value is not None and sys_value < dia_value:
            problems.append(
                FieldProblem(
                    ("body", "observations", index, "value"),
                    f"systolic {sys_value:g} mm[Hg] is below the diastolic {dia_value:g} "
                    "mm[Hg] of the same reading",
                )
            )
    return problems
