"""A session as the documented session CSV (docs/SIMULATION.md): what `vigil replay` reads."""

from __future__ import annotations

import csv
import io

from app.exports.repository import SessionRecord
from app.timeutil import iso
from monitor.vitals import DEVICE_QUALITY_NAMES

COLUMNS = ("time", "vital", "value", "unit", "device_id", "quality", "received_time")


def session_csv(record: SessionRecord) -> str:
    """One row per sample in device-time order; `received_time` rides along for review."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for sample in record.samples:
        writer.writerow(
            (
                iso(sample.device_time),
                sample.vital.value,
                repr(sample.value) if sample.value != int(sample.value) else int(sample.value),
                sample.unit,
                sample.device,
                # Vigil's own flags (unbound) are not the device's: replay must not send them.
                ";".join(flag for flag in sample.quality if flag in DEVICE_QUALITY_NAMES),
                iso(sample.received_time),
            )
        )
    return out.getvalue()
