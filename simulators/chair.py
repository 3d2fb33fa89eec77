"""A simulated chair: one patient, one bedside monitor, one scenario, on a simulated clock.

Pure and deterministic: given a seed, a scenario and a start time, `SimulatedChair` yields
the same per-second batches in Vigil's wire format every time, as fast as it is iterated.
Sending them (in real time or not) is the sender's business.

    chair = SimulatedChair("steady+probe-off", seed=7, start=datetime.now(UTC))
    for tick in chair:                 # one ChairTick per simulated second
        if tick.body is not None:      # None: device silent, or nothing to report
            post(tick.body)
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from simulators.devices import (
    DeviceClock,
    EcgHeartRate,
    FailureWindow,
    MotionBurst,
    NibpCuff,
    PulseOximeter,
    Reading,
)
from simulators.patient import (
    Desaturation,
    Episode,
    Patient,
    PatientProfile,
    PumpError,
    TrueVitals,
    Vasovagal,
    draw_patient,
)
from simulators.scenario_schema import Value
from simulators.scenarios import Scenario, Timed, load_scenario
from simulators.wire import Batch, Observation, VitalCode, observation

Concrete = float | bool | str
_WINDOW_KINDS = ("probe_off", "motion", "disconnect", "nibp_failures")


def _stream(seed: int, name: str) -> random.Random:
    """Independent random streams per concern, so adding an event does not change the patient."""
    return random.Random(f"vigil-sim:{seed}:{name}")


def _draw(value: Value, rng: random.Random) -> Concrete:
    return rng.uniform(*value) if isinstance(value, tuple) else value


def _num(params: Mapping[str, Concrete], key: str) -> float:
    value = params[key]
    assert not isinstance(value, bool | str), key
    return float(value)


def _interval_s(value: Concrete) -> float | None:
    return None if value == "off" else float(value) * 60.0


@dataclass(frozen=True)
class PlannedEvent:
    """A timeline entry with its ranges drawn: what will happen in this run, and when."""

    kind: str  # event kind, or "infusion_<action>"
    start_s: int
    end_s: int | None  # for events that last (probe off, motion, disconnect, failures)
    params: Mapping[str, Concrete]


@dataclass(frozen=True)
class ChairTick:
    """One simulated second of one chair."""

    elapsed_s: int  # seconds since the chair's start
    time: datetime  # true simulated time of this second (start + elapsed_s)
    device_id: str
    device_time: datetime  # the monitor's clock at this second (offset and drift included)
    silent: bool  # the device is disconnected: nothing reaches Vigil this second
    observations: tuple[Observation, ...]  # what the device reports (even while silent)
    annotations: tuple[str, ...]  # what happened this second, for logs and tests
    truth: TrueVitals  # the patient's true state, never sent

    @property
    def body(self) -> Batch | None:
        """The HTTP ingest body to send, or None when there is nothing to send."""
        if self.silent or not self.observations:
            return None
        return {"device_id": self.device_id, "observations": list(self.observations)}

    def values(self, vital: VitalCode) -> list[float]:
        """Values of one vital reported this second (empty when silent)."""
        body = self.body
        return [o["value"] for o in body["observations"] if o["vital"] == vital] if body else []


class SimulatedChair:
    """A patient in a chair with a multiparameter monitor, following a scenario."""

    def __init__(
        self,
        scenario: Scenario | str,
        seed: int,
        start: datetime,
        device_id: str = "sim-chair-01",
        duration_s: int | None = None,
    ) -> None:
        if start.tzinfo is None:
            raise ValueError("start must carry a UTC offset (e.g. datetime.now(UTC))")
        self.scenario = load_scenario(scenario) if isinstance(scenario, str) else scenario
        self.seed = seed
        self.start = start
        self.device_id = device_id
        if duration_s is None and self.scenario.duration_s is not None:
            duration_s = round(self.scenario.duration_s)
        self.duration_s = duration_s  # None: runs until the caller stops iterating

        plan_rng = _stream(seed, "scenario")
        self.monitor = {k: _draw(v, plan_rng) for k, v in sorted(self.scenario.monitor.items())}
        overrides = {k: _draw(v, plan_rng) for k, v in sorted(self.scenario.patient.items())}
        timeline = [
            self._plan(entry, plan_rng, infusion=True) for entry in self.scenario.infusion
        ] + [self._plan(entry, plan_rng, infusion=False) for entry in self.scenario.events]
        self.timeline = tuple(sorted(timeline, key=lambda e: e.start_s))

        patient_overrides = {k: v for k, v in overrides.items() if not isinstance(v, str)}
        self.profile: PatientProfile = draw_patient(_stream(seed, "patient"), patient_overrides)
        self.patient = Patient(self.profile, _stream(seed, "physiology"), self._episodes())

        m = self.monitor
        self.clock = DeviceClock(start, _num(m, "clock_offset_s"), _num(m, "clock_drift_ppm"))
        self._cuff = NibpCuff(
            _stream(seed, "nibp"),
            _interval_s(m["nibp_interval_min"]),
            _num(m, "nibp_first_min") * 60.0,
            _num(m, "nibp_failure_rate"),
        )
        self._oximeter = PulseOximeter(
            _stream(seed, "oximeter"),
            int(_num(m, "spo2_averaging_s")),
            _num(m, "probe_off_hold_s"),
        )
        self._ecg = EcgHeartRate(_stream(seed, "ecg")) if m["ecg"] else None
        self._cuff_on_spo2_arm = bool(m["cuff_on_spo2_arm"])

        self._windows: dict[str, list[PlannedEvent]] = {kind: [] for kind in _WINDOW_KINDS}
        self._motion: list[MotionBurst] = []
        self._marks: dict[int, list[str]] = {}  # annotations known in advance, by second
        self._actions: list[PlannedEvent] = []  # commands applied when their second comes
        for event in self.timeline:
            self._schedule(event)
        self._next_action = 0
        self._elapsed = 0

    # -- planning -----------------------------------------------------------------------------

    def _schedule(self, event: PlannedEvent) -> None:
        marks = self._marks.setdefault(event.start_s, [])
        if event.kind in ("vasovagal", "desaturation"):
            marks.append(event.kind)  # the patient model plays these out itself
            return
        if event.kind not in _WINDOW_KINDS:
            self._actions.append(event)
            return
        end = event.end_s if event.end_s is not None else event.start_s
        self._windows[event.kind].append(event)
        marks.append(event.kind)
        self._marks.setdefault(end, []).append(f"{event.kind}_end")
        p = event.params
        if event.kind == "motion":
            burst = MotionBurst(event.start_s, end, _num(p, "spo2_drop"), bool(p["flagged"]))
            self._motion.append(burst)
        elif event.kind == "nibp_failures":
            window = FailureWindow(event.start_s, end, _num(p, "failure_rate"))
            self._cuff.add_failure_window(window)

    @staticmethod
    def _plan(entry: Timed, rng: random.Random, infusion: bool) -> PlannedEvent:
        start = round(float(_draw(entry.at_s, rng)))
        params = {k: _draw(v, rng) for k, v in sorted(entry.params.items())}
        kind = f"infusion_{entry.kind}" if infusion else entry.kind
        end: int | None = None
        if "duration_s" in params and kind != "desaturation":
            end = start + max(1, round(_num(params, "duration_s")))
        elif "duration_min" in params:
            end = start + max(1, round(_num(params, "duration_min") * 60))
        return PlannedEvent(kind, start, end, params)

    def _episodes(self) -> list[Episode]:
        episodes: list[Episode] = []
        for event in self.timeline:
            p = event.params
            if event.kind == "vasovagal":
                episodes.append(
                    Vasovagal(
                        start_s=event.start_s,
                        onset_s=_num(p, "onset_s"),
                        plateau_s=_num(p, "plateau_s"),
                        recovery_s=_num(p, "recovery_min") * 60.0,
                        hr_drop=_num(p, "hr_drop"),
                        map_drop=_num(p, "map_drop"),
                        perfusion_factor=_num(p, "perfusion_factor"),
                    )
                )
            elif event.kind == "desaturation":
                descent = _num(p, "descent_s")
                # Long enough at the nadir for the oximeter's averaging to show it.
                hold = max(_num(p, "duration_s") - descent, 10.0)
                episodes.append(
                    Desaturation(
                        event.start_s, descent, hold, _num(p, "recovery_s"), _num(p, "nadir")
                    )
                )
        return episodes

    # -- running ------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[ChairTick]:
        """The remaining seconds up to the scenario's end (forever when it has none)."""
        while self.duration_s is None or self._elapsed < self.duration_s:
            yield self.step()

    def step(self) -> ChairTick:
        """Simulate the next second (past the scenario's end the patient simply carries on)."""
        now = self._elapsed
        annotations = list(self._marks.get(now, ()))
        if now > 0 and self.patient.advance(1.0):
            annotations.append("infusion_complete")
        annotations += self._apply_actions(now)

        truth = self.patient.vitals()
        motion = next((b for b in self._motion if b.start_s <= now < b.end_s), None)
        nibp = self._cuff.tick(now, truth, motion)
        annotations += nibp.events
        cuff_s = self._cuff.inflating_for(now) if self._cuff_on_spo2_arm else None
        readings: list[Reading] = []
        if self._ecg is not None:
            readings += self._ecg.tick(now, truth, motion)
        readings += self._oximeter.tick(
            now, truth, not self._active("probe_off", now), cuff_s, motion
        )
        readings += nibp.readings

        device_time = self.clock.at(now)
        self._elapsed += 1
        return ChairTick(
            elapsed_s=now,
            time=self.start + timedelta(seconds=now),
            device_id=self.device_id,
            device_time=device_time,
            silent=self._active("disconnect", now),
            observations=tuple(
                observation(r.vital, r.value, device_time, r.quality) for r in readings
            ),
            annotations=tuple(annotations),
            truth=truth,
        )

    def _active(self, kind: str, now: int) -> bool:
        return any(w.start_s <= now < (w.end_s or w.start_s) for w in self._windows[kind])

    def _apply_actions(self, now: int) -> list[str]:
        done: list[str] = []
        while self._next_action < len(self._actions):
            action = self._actions[self._next_action]
            if action.start_s > now:
                break
            self._next_action += 1
            done.append(self._apply(action, now))
        return done

    def _apply(self, action: PlannedEvent, now: int) -> str:
        p, pump = action.params, self.patient.pump
        try:
            match action.kind:
                case "infusion_start":
                    pump.start(_num(p, "dose_mg_per_kg"), _num(p, "over_min"))
                case "infusion_rate":
                    total = _num(p, "total_dose_mg_per_kg") if "total_dose_mg_per_kg" in p else None
                    pump.set_rate(_num(p, "rate_mg_per_kg_h"), total)
                case "infusion_pause":
                    pump.pause()
                case "infusion_resume":
                    pump.resume()
                case "infusion_stop":
                    pump.stop()
                case "nibp_stat":
                    self._cuff.stat(now)
                case "nibp_start":
                    self._cuff.manual()
                case "nibp_interval":
                    self._cuff.set_interval(now, _interval_s(p["interval_min"]))
        except PumpError:
            # e.g. a scheduled stop after the pump already finished the dose on its own.
            return f"{action.kind}_ignored"
        return action.kind
