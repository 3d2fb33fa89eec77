"""A resting patient on a multiparameter monitor: 1 Hz HR, pulse and SpO2, NIBP every interval.

Deliberately plain (the physiological model with ketamine PK/PD is its own module);
values look like a device's: whole numbers, NIBP only when a cuff cycle completes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass
class RestingPatientMonitor:
    device_id: str
    rng: random.Random
    nibp_interval_s: float = 180.0
    hr_baseline: float = field(init=False)
    hr: float = field(init=False)
    spo2: float = field(init=False)
    sbp_baseline: float = field(init=False)
    next_nibp_s: float = field(init=False)

    def __post_init__(self) -> None:
        self.hr_baseline = self.rng.uniform(62, 88)
        self.hr = self.hr_baseline
        self.spo2 = self.rng.uniform(96, 99)
        self.sbp_baseline = self.rng.uniform(110, 140)
        # The first reading comes early so a fresh screen shows a pressure soon.
        self.next_nibp_s = self.rng.uniform(5, 30)

    def tick(self, elapsed_s: float, device_time: datetime) -> list[dict[str, Any]]:
        """The observations the device reports at `elapsed_s` into the run."""
        # Mean-reverting random walks: about ±2–3 /min of HR wander, SpO2 within a point or two.
        self.hr += 0.1 * (self.hr_baseline - self.hr) + self.rng.gauss(0, 1.2)
        self.spo2 += 0.2 * (97.5 - self.spo2) + self.rng.gauss(0, 0.4)
        stamp = device_time.isoformat()
        hr = round(self.hr)
        observations: list[dict[str, Any]] = [
            {"vital": "hr", "value": hr, "unit": "/min", "device_time": stamp},
            {
                "vital": "pr",
                "value": hr + self.rng.choice((-1, 0, 0, 1)),
                "unit": "/min",
                "device_time": stamp,
            },
            {
                "vital": "spo2",
                "value": min(100, round(self.spo2)),
                "unit": "%",
                "device_time": stamp,
            },
        ]
        if elapsed_s >= self.next_nibp_s:
            self.next_nibp_s = elapsed_s + self.nibp_interval_s
            sbp = self.sbp_baseline + self.rng.gauss(0, 5)
            dbp = sbp * 0.62 + self.rng.gauss(0, 3)
            observations += [
                {"vital": "nibp_sys", "value": round(sbp), "unit": "mm[Hg]", "device_time": stamp},
                {"vital": "nibp_dia", "value": round(dbp), "unit": "mm[Hg]", "device_time": stamp},
                {
                    "vital": "nibp_mean",
                    "value": round(dbp + (sbp - dbp) / 3),
                    "unit": "mm[Hg]",
                    "device_time": stamp,
                },
            ]
        return observations
