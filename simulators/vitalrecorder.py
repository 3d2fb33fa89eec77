"""VitalDB Vital Recorder's numeric CSV export: one row per moment, one column per track.

Header like `unix_time_s,utc_iso,NIBP_SYS [mmHg],…,PLETH_SAT_O2 [%],PLETH_HR [/min],…`.
Only the tracks Vigil knows are read; the others (ABP, RR, …) are skipped. The monitor
repeats the last NIBP reading on every row, so a reading is taken when its values change.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from simulators.recording import RecordedSample, RecordingError, parse_time, parse_value

TIME_COLUMN = "utc_iso"
# Track name → (Vigil vital, unit to send).
_TRACKS = {
    "ECG_HR": ("hr", "/min"),
    "PLETH_HR": ("pr", "/min"),
    "PLETH_SAT_O2": ("spo2", "%"),
    "PLETH_PERF_REL": ("pi", "%"),
    "NIBP_SYS": ("nibp_sys", "mmHg"),
    "NIBP_DIA": ("nibp_dia", "mmHg"),
    "NIBP_MEAN": ("nibp_mean", "mmHg"),
}
_NIBP = ("NIBP_SYS", "NIBP_DIA", "NIBP_MEAN")
_TRACK = re.compile(r"^\s*([A-Za-z0-9_]+)\s*(\[.*\])?\s*$")


def is_vitalrecorder(header: list[str]) -> bool:
    return TIME_COLUMN in (name.strip() for name in header)


def read_vitalrecorder(
    source: Path | str, header: list[str], rows: Iterable[tuple[int, list[str]]]
) -> list[RecordedSample]:
    """Samples from the rows after the header (`(row number, cells)` pairs)."""
    tracks: dict[str, int] = {}
    time_index = -1
    for index, name in enumerate(header):
        if name.strip() == TIME_COLUMN:
            time_index = index
            continue
        match = _TRACK.match(name)
        if match and match.group(1) in _TRACKS:
            tracks[match.group(1)] = index
    if not tracks:
        known = ", ".join(_TRACKS)
        raise RecordingError(f"no column Vigil can replay (looked for {known})", source, 1)

    samples: list[RecordedSample] = []
    last_nibp: tuple[str, ...] | None = None
    for row, cells in rows:
        if len(cells) != len(header):
            raise RecordingError(f"{len(cells)} cells, the header has {len(header)}", source, row)
        time = parse_time(cells[time_index], source, row, TIME_COLUMN)
        nibp = tuple(cells[tracks[name]].strip() for name in _NIBP if name in tracks)
        new_nibp = nibp != last_nibp
        last_nibp = nibp
        for name, index in tracks.items():
            text = cells[index].strip()
            if not text or (name in _NIBP and not new_nibp):
                continue  # no value this row, or the same NIBP reading repeated
            vital, unit = _TRACKS[name]
            value = parse_value(text, source, row, header[index].strip())
            samples.append(RecordedSample(time, vital, value, unit, None, (), row))
    return samples
