"""Replay: a recorded session sent back through Vigil's ingest, its times shifted to now.

The file is Vigil's session CSV (documented in docs/SIMULATION.md), one row per sample:

    time,vital,value,unit,device_id,quality
    2026-11-25T10:15:30.000Z,hr,72,/min,demo-monitor-01,
    2026-11-25T10:15:30.000Z,spo2,97,%,demo-monitor-01,artifact

`time` (ISO 8601 with offset), `vital` (canonical code), `value` and `unit` are required;
`device_id` and `quality` (flags separated by `;`) are optional; other columns are ignored.
Vital Recorder's numeric CSV export is read as well (see `simulators.vitalrecorder`).
"""

from __future__ import annotations

import csv
import itertools
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

from simulators.recording import (
    QUALITY_FLAGS,
    VITALS,
    RecordedSample,
    Recording,
    RecordingError,
    parse_time,
    parse_value,
)
from simulators.timeline import Feed, Send, WireObservation
from simulators.vitalrecorder import is_vitalrecorder, read_vitalrecorder

__all__ = ["COLUMNS", "RecordingError", "ReplayRun", "read_recording"]

REQUIRED = ("time", "vital", "value", "unit")
OPTIONAL = ("device_id", "quality")
COLUMNS = REQUIRED + OPTIONAL
_ADDED_BY_VIGIL = {"unbound"}  # Vigil sets it on ingest; a device may not send it


def read_recording(path: Path) -> Recording:
    """The samples of a Vigil session CSV or a Vital Recorder export, in time order."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            lines = csv.reader(handle)
            header = next(lines, None)
            if header is None:
                raise RecordingError("is empty (expected a header row)", path)
            # Row numbers as a spreadsheet shows them: the header is row 1.
            rows = ((number, cells) for number, cells in enumerate(lines, start=2) if any(cells))
            if is_vitalrecorder(header):
                samples = read_vitalrecorder(path, header, rows)
            else:
                samples = _read_vigil_csv(path, header, rows)
    except FileNotFoundError:
        raise RecordingError("no such file", path) from None
    except IsADirectoryError:
        raise RecordingError("is a directory, not a CSV file", path) from None
    except UnicodeDecodeError:
        raise RecordingError("is not UTF-8 text; is it a CSV file?", path) from None
    except OSError as exc:
        raise RecordingError(f"cannot be read: {exc.strerror or exc}", path) from None
    except csv.Error as exc:
        raise RecordingError(f"is not valid CSV: {exc}", path) from None
    return Recording.of(path, samples)


def _read_vigil_csv(
    path: Path, header: list[str], rows: Iterable[tuple[int, list[str]]]
) -> list[RecordedSample]:
    names = [name.strip().lower() for name in header]
    missing = [name for name in REQUIRED if name not in names]
    if missing:
        raise RecordingError(
            f"the header lacks {', '.join(missing)} (expected {','.join(COLUMNS)}, "
            f"the last two optional); found {','.join(header)}",
            path,
            1,
        )
    at = {name: names.index(name) for name in COLUMNS if name in names}
    samples: list[RecordedSample] = []
    for row, cells in rows:
        if len(cells) < len(header):
            raise RecordingError(f"{len(cells)} cells, the header has {len(header)}", path, row)

        def cell(name: str, cells: list[str] = cells) -> str:
            return cells[at[name]].strip() if name in at else ""

        vital = cell("vital").lower()
        if vital not in VITALS:
            raise RecordingError(
                f"unknown vital {cell('vital')!r} (use one of {', '.join(VITALS)})",
                path,
                row,
                "vital",
            )
        unit = cell("unit")
        if not unit:
            raise RecordingError(
                "is empty (give the value's unit, e.g. /min, %, mm[Hg])", path, row, "unit"
            )
        samples.append(
            RecordedSample(
                time=parse_time(cell("time"), path, row, "time"),
                vital=vital,
                value=parse_value(cell("value"), path, row, "value"),
                unit=unit,
                device_id=cell("device_id") or None,
                quality=_quality(cell("quality"), path, row),
                row=row,
            )
        )
    return samples


def _quality(text: str, path: Path, row: int) -> tuple[str, ...]:
    flags = [flag.strip().lower() for flag in text.replace(",", ";").split(";") if flag.strip()]
    for flag in flags:
        if flag not in QUALITY_FLAGS and flag not in _ADDED_BY_VIGIL:
            raise RecordingError(
                f"unknown quality flag {flag!r} (known: {', '.join(QUALITY_FLAGS)})",
                path,
                row,
                "quality",
            )
    return tuple(flag for flag in flags if flag not in _ADDED_BY_VIGIL)


class ReplayRun:
    """A recording as a `Run`: one feed per device, one send per device and recorded moment.

    `device` sends everything as that device (the file may name one device at most); without
    it every row needs its own `device_id`.
    """

    def __init__(self, recording: Recording, device: str | None = None) -> None:
        devices = recording.devices
        if device is not None and len(devices) > 1:
            raise RecordingError(
                f"names {len(devices)} devices ({', '.join(devices)}); --device can only "
                "stand in for one",
                recording.source,
            )
        if device is None:
            unnamed = next((s for s in recording.samples if s.device_id is None), None)
            if unnamed is not None:
                raise RecordingError(
                    "no device_id for this sample: give the file a device_id column or say "
                    "which device to send as with --device",
                    recording.source,
                    unnamed.row,
                )
        self.recording = recording
        self.device = device

    @property
    def span_s(self) -> float:
        return self.recording.span_s

    @property
    def devices(self) -> list[str]:
        return [self.device] if self.device else self.recording.devices

    def feeds(self, start: datetime) -> list[Feed]:
        by_device: dict[str, list[RecordedSample]] = {}
        for sample in self.recording.samples:
            device = self.device or sample.device_id
            assert device is not None  # checked in __init__
            by_device.setdefault(device, []).append(sample)
        return [self._feed(device, samples, start) for device, samples in by_device.items()]

    def _feed(self, device: str, samples: list[RecordedSample], start: datetime) -> Feed:
        origin = self.recording.start
        for time, moment in itertools.groupby(samples, key=lambda s: s.time):
            at_s = (time - origin).total_seconds()
            stamp = (start + timedelta(seconds=at_s)).isoformat()
            group = list(moment)
            yield Send(
                at_s,
                {"device_id": device, "observations": list(_observations(group, stamp))},
                tuple(f"{self.recording.source} row {s.row}" for s in group),
            )


def _observations(samples: list[RecordedSample], stamp: str) -> Iterator[WireObservation]:
    for sample in samples:
        item = WireObservation(
            vital=sample.vital, value=sample.value, unit=sample.unit, device_time=stamp
        )
        if sample.quality:
            item["quality"] = list(sample.quality)
        yield item
