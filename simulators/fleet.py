"""Many simulated chairs as one run: seeds, device ids, staggering and mid-session starts."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from simulators.chair import SimulatedChair
from simulators.scenarios import Scenario
from simulators.timeline import Feed, Send


@dataclass(frozen=True)
class ChairPlan:
    """One chair of a run: its monitor's id, its scenario and seed, and where it starts."""

    device_id: str
    scenario: Scenario
    seed: int
    skip_s: int = 0  # start this many seconds into the session (already under way)


def chair_seed(seed: int, index: int) -> int:
    """Chair `index` (from 1) of a run seeded `seed` uses `seed + index − 1`.

    So chair 1 of `--seed 7` is exactly `--seed 7 --chairs 1`, and chair 3 can be reproduced
    alone with `--seed 9`.
    """
    return seed + index - 1


def device_id(prefix: str, index: int) -> str:
    return f"{prefix}{index:02d}"


def fleet(scenario: Scenario, chairs: int, seed: int, prefix: str) -> list[ChairPlan]:
    """`chairs` chairs on one scenario, devices `{prefix}01…`, seeds from `seed`."""
    return [
        ChairPlan(device_id(prefix, index), scenario, chair_seed(seed, index))
        for index in range(1, chairs + 1)
    ]


# Where the `steady` scenario is in each phase of a session (seconds from its start), and how
# long before its minute 0 the patient checked in: steady starts the infusion at 10 min, the
# demo clinic's sessions 12 min after check-in.
_CHECK_IN_LEAD_S = 120
_PHASE_WINDOWS_S = {
    "checked_in": (0, 0),
    "baseline": (0, 9 * 60),
    "infusion": (10 * 60, 49 * 60),
    "recovery": (50 * 60, 100 * 60),
}


def session_position(phase: str, since_check_in_s: float) -> int:
    """Where in a steady-like scenario a chair should start to match a session under way.

    The time since check-in decides, kept within the session's current phase: a session that
    has said "infusion" for hours (a demo restarted the next day) starts late in the infusion.
    """
    low, high = _PHASE_WINDOWS_S.get(phase, (0, 0))
    return int(min(max(since_check_in_s - _CHECK_IN_LEAD_S, low), high))


class ChairRun:
    """Simulated chairs as a `Run`: each its own feed, staggered across the second.

    `duration_s` is how long each chair runs from its start point; None runs the scenario to
    its end (the longest of the chairs' scenarios), or forever when no scenario has an end.
    Past a scenario's end the patient simply carries on.
    """

    def __init__(
        self, plans: Sequence[ChairPlan], duration_s: float | None = None, endless: bool = False
    ) -> None:
        if not plans:
            raise ValueError("a run needs at least one chair")
        self.plans = tuple(plans)
        self._span: float | None = None
        if not endless:
            self._span = duration_s if duration_s is not None else self._scenario_span()

    def _scenario_span(self) -> float | None:
        spans: list[float] = []
        for plan in self.plans:
            end = plan.scenario.duration_s
            if end is None:
                return None
            spans.append(max(0.0, end - plan.skip_s))
        return max(spans)

    @property
    def span_s(self) -> float | None:
        return self._span

    def feeds(self, start: datetime) -> list[Feed]:
        count = len(self.plans)
        # Real monitors are not synchronised: chair i sends i/N of a second after chair 0, and
        # its clock says so too.
        return [self._feed(plan, start, index / count) for index, plan in enumerate(self.plans)]

    def _feed(self, plan: ChairPlan, start: datetime, phase_s: float) -> Feed:
        chair_start = start + timedelta(seconds=phase_s - plan.skip_s)
        chair = SimulatedChair(plan.scenario, plan.seed, chair_start, device_id=plan.device_id)
        for _ in range(plan.skip_s):  # the session so far: simulated, not sent
            chair.step()
        return self._ticks(chair, plan.skip_s, phase_s)

    def _ticks(self, chair: SimulatedChair, skip_s: int, phase_s: float) -> Feed:
        limit = math.inf if self._span is None else self._span
        elapsed = 0
        while elapsed < limit:
            tick = chair.step()
            yield Send(elapsed + phase_s, tick.body)
            elapsed = tick.elapsed_s - skip_s + 1
