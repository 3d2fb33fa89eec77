"""A session as the documented session CSV (docs/SIMULATION.md): what `vigil replay` reads."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

from app.exports.repository import ExportSample, SessionRecord
from app.timeutil import iso
from monitor.vitals import DEVICE_QUALITY_NAMES

COLUMNS = ("time", "vital", "value", "unit", "device_id", "quality", "received_time")
ROWS_PER_CHUNK = 2000


def session_csv(record: SessionRecord) -> str:
    """One row per sample in device-time order; `received_time` rides along for review."""
    return "".join(session_csv_chunks(record))


def session_csv_chunks(record: SessionRecord, rows: int = ROWS_PER_CHUNK) -> Iterator[str]:
    """`session_csv` in pieces of `rows` rows, the header with the first (alone for a
    session without samples): a long session is streamed, not held as one text."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for start in range(0, max(1, len(record.samples)), rows):
        writer.writerows(_row(sample) for sample in record.samples[start : start + rows])
        yield out.getvalue()
        out.seek(0)
        out.truncate()


def _row(sample: ExportSample) -> tuple[object, ...]:
    return (
        iso(sample.device_time),
        sample.vital.value,
        repr(sample.value) if sample.value != int(sample.value) else int(sample.value),
        sample.unit,
        sample.device,
        # Vigil's own flags (unbound) are not the device's: replay must not send them.
        ";".join(flag for flag in sample.quality if flag in DEVICE_QUALITY_NAMES),
        iso(sample.received_time),
    )
