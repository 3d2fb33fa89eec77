"""Runs of many chairs, and where a run's timeline sits on the wall clock (pure, no server)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from simulators.chair import SimulatedChair
from simulators.fleet import ChairPlan, ChairRun, fleet, session_position
from simulators.scenarios import load_scenario
from simulators.timeline import Send, TimelineError, timeline_start

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
STEADY = load_scenario("steady")


def sends(run: ChairRun, start: datetime = NOW) -> list[list[Send]]:
    return [list(feed) for feed in run.feeds(start)]


def values(feed: list[Send]) -> list[tuple[str, float]]:
    return [(o["vital"], o["value"]) for s in feed if s.body for o in s.body["observations"]]


def test_chairs_get_numbered_devices_and_seeds_from_the_run_seed() -> None:
    plans = fleet(STEADY, 3, seed=7, prefix="bay-")
    assert [(p.device_id, p.seed) for p in plans] == [("bay-01", 7), ("bay-02", 8), ("bay-03", 9)]


def test_the_same_seed_gives_the_same_run_and_chair_k_is_seed_plus_k_minus_1() -> None:
    first = sends(ChairRun(fleet(STEADY, 3, seed=7, prefix="d-"), duration_s=120))
    again = sends(ChairRun(fleet(STEADY, 3, seed=7, prefix="d-"), duration_s=120))
    assert [values(f) for f in first] == [values(f) for f in again]
    alone = sends(ChairRun(fleet(STEADY, 1, seed=9, prefix="d-"), duration_s=120))
    assert values(first[2]) == values(alone[0])
    assert values(first[0]) != values(first[1])


def test_chairs_are_staggered_across_the_second_clock_and_send_alike() -> None:
    feeds = sends(ChairRun(fleet(STEADY, 4, seed=1, prefix="d-"), duration_s=5))
    assert [f[0].at_s for f in feeds] == [0.0, 0.25, 0.5, 0.75]
    assert all(len(f) == 5 for f in feeds)
    assert max(s.at_s for f in feeds for s in f) < 5  # all within the run's length
    for index, (feed, phase) in enumerate(zip(feeds, (0.0, 0.25, 0.5, 0.75), strict=True)):
        # Each device's clock carries its phase too: chair i is chair 0 started i/N s later.
        start = NOW + timedelta(seconds=phase)
        chair = SimulatedChair(STEADY, index + 1, start, device_id=f"d-{index + 1:02d}")
        assert [s.body for s in feed] == [chair.step().body for _ in range(5)]


def test_a_chair_joining_mid_session_continues_the_same_patient() -> None:
    plan = ChairPlan("d-01", STEADY, seed=5, skip_s=600)
    (feed,) = sends(ChairRun([plan], duration_s=10))
    whole = SimulatedChair(STEADY, 5, NOW - timedelta(seconds=600), device_id="d-01")
    ticks = [whole.step() for _ in range(610)][600:]
    assert [s.body for s in feed] == [t.body for t in ticks]
    assert [s.at_s for s in feed] == list(range(10))


def test_the_run_length_is_the_scenario_unless_told_otherwise() -> None:
    assert ChairRun(fleet(STEADY, 2, 1, "d-")).span_s == 6000
    assert ChairRun(fleet(STEADY, 2, 1, "d-"), duration_s=90).span_s == 90
    assert ChairRun(fleet(STEADY, 2, 1, "d-"), endless=True).span_s is None
    late = ChairPlan("d-01", STEADY, 1, skip_s=5400)
    assert ChairRun([late]).span_s == 600


def test_real_time_runs_start_now_and_faster_ones_end_now() -> None:
    assert timeline_start(NOW, None, 1.0) == NOW
    assert timeline_start(NOW, 600, 1.0) == NOW
    start = timeline_start(NOW, 600, 10.0)
    assert start == NOW - timedelta(seconds=540)
    # The last second of the timeline is stamped at the wall time it is sent.
    assert start + timedelta(seconds=600) == NOW + timedelta(seconds=600 / 10)
    with pytest.raises(TimelineError, match="needs a known length"):
        timeline_start(NOW, None, 10.0)
    with pytest.raises(TimelineError, match="1 or more"):
        timeline_start(NOW, 60, 0.5)


@pytest.mark.parametrize(
    ("phase", "minutes", "expected_min"),
    [
        ("checked_in", 2, 0),
        ("baseline", 5, 3),
        ("infusion", 40, 38),
        ("recovery", 75, 73),
        ("infusion", 24 * 60, 49),  # a demo restarted the next day: still in the infusion
        ("recovery", 30, 50),
    ],
)
def test_a_demo_chair_starts_where_its_session_is(
    phase: str, minutes: float, expected_min: float
) -> None:
    assert session_position(phase, minutes * 60) == expected_min * 60
