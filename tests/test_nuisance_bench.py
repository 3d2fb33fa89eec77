"""The nuisance-alarm bench (bench/bench_nuisance.py) on one short scenario: its raw-threshold
count bounds the engine's, and its event check finds the scenario's desaturation."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "bench_nuisance.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_nuisance", BENCH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being made
    spec.loader.exec_module(module)
    return module


def test_a_transient_desaturation_is_counted_and_found(bench: ModuleType) -> None:
    # 40 simulated minutes: the desaturation comes between minutes 25 and 35.
    source = bench.scenario_source("transient-desaturation", seed=1, duration_s=40 * 60)
    assert [p for _, p in source.phases] == ["baseline", "infusion"]
    transitions = bench.replay(source)
    raw = bench.raw_onsets(source)
    engine = bench.count_raised(transitions)
    assert engine > 0
    assert len(raw) >= engine
    # The engine raises one alarm per parameter (tiers of one vital are one alarm), so
    # counting one per vital finds nothing more to fold.
    assert 0 < bench.count_per_parameter(transitions) <= engine

    [check] = bench.check_events(source, transitions)
    assert check.event.label == "desaturation"
    assert check.rule_id is not None
    assert check.rule_id.startswith("spo2_")
    assert check.alarmed
    assert check.latency_s is not None
    assert 0 <= check.latency_s <= check.delay_s + bench.SLACK_S
    # The alarm came from the desaturation, after the event began.
    assert check.event.start_s <= check.raised_s <= check.event.end_s + check.delay_s


def test_the_steady_scenario_has_no_true_event(bench: ModuleType) -> None:
    source = bench.scenario_source("steady", seed=1, duration_s=15 * 60)
    assert bench.check_events(source, bench.replay(source)) == []
