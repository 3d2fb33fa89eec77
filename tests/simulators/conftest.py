"""Shared runs for the simulator tests: each (scenario, seed) is simulated once per session."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from functools import lru_cache

import pytest

from simulators.chair import ChairTick, SimulatedChair

START = datetime(2025, 3, 4, 9, 0, tzinfo=UTC)


@lru_cache(maxsize=64)
def _run(scenario: str, seed: int) -> tuple[SimulatedChair, tuple[ChairTick, ...]]:
    chair = SimulatedChair(scenario, seed=seed, start=START)
    return chair, tuple(chair)


@pytest.fixture
def run_scenario() -> Callable[[str, int], tuple[SimulatedChair, tuple[ChairTick, ...]]]:
    """Simulate a whole scenario (cached): the chair, for its plan, and every tick."""
    return _run


@pytest.fixture
def sim_start() -> datetime:
    return START
