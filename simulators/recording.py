"""A recorded session as replay sees it: timestamped samples, whatever file they came from."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import get_args

from simulators.wire import UNITS, QualityFlag

VITALS: tuple[str, ...] = tuple(UNITS)
QUALITY_FLAGS: tuple[str, ...] = get_args(QualityFlag)


class RecordingError(ValueError):
    """A recording that cannot be replayed, naming the file and, where known, row and column."""

    def __init__(
        self, problem: str, source: Path | str, row: int | None = None, column: str = ""
    ) -> None:
        self.problem = problem
        self.source = str(source)
        self.row = row
        self.column = column
        where = [self.source]
        if row is not None:
            where.append(f"row {row}")
        if column:
            where.append(f"column {column!r}")
        super().__init__(f"{', '.join(where)}: {problem}")


@dataclass(frozen=True)
class RecordedSample:
    """One value as recorded: the device's time, canonical vital code, value and unit."""

    time: datetime  # timezone-aware
    vital: str
    value: float
    unit: str
    device_id: str | None  # None: the file does not say
    quality: tuple[str, ...] = ()
    row: int | None = None  # in the file, to point at it when Vigil refuses the value


@dataclass(frozen=True)
class Recording:
    """A file's samples in time order (ties keep the file's order)."""

    source: str
    samples: tuple[RecordedSample, ...]

    @classmethod
    def of(cls, source: Path | str, samples: Sequence[RecordedSample]) -> Recording:
        if not samples:
            raise RecordingError("holds no samples", source)
        return cls(str(source), tuple(sorted(samples, key=lambda s: s.time)))

    @property
    def start(self) -> datetime:
        return self.samples[0].time

    @property
    def span_s(self) -> float:
        """Seconds from the first sample to the last."""
        return (self.samples[-1].time - self.start).total_seconds()

    @property
    def devices(self) -> list[str]:
        """The device ids the file names, in order of first appearance."""
        return list(dict.fromkeys(s.device_id for s in self.samples if s.device_id))


def parse_time(text: str, source: Path | str, row: int, column: str) -> datetime:
    """An ISO 8601 time that carries its UTC offset (`Z` or `+02:00`)."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise RecordingError(f"{text!r} is not an ISO 8601 time", source, row, column) from None
    if value.tzinfo is None:
        raise RecordingError(
            f"{text!r} has no UTC offset (write it like 2026-11-25T10:15:30Z)", source, row, column
        )
    return value


def parse_value(text: str, source: Path | str, row: int, column: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise RecordingError(f"{text!r} is not a number", source, row, column) from None
    if not math.isfinite(value):
        raise RecordingError(f"{text!r} is not a finite number", source, row, column)
    return value
