"""Malformed scenario files and unknown names fail with an error that says where and what."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulators.scenarios import ScenarioError, load_scenario


def write(tmp_path: Path, text: str, name: str = "mine") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(text, encoding="utf-8")
    return path


def fails(path: Path) -> ScenarioError:
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    assert str(path) in str(caught.value)
    return caught.value


def test_a_valid_file_with_ranges_loads(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
description = "mine"
duration_min = 30
include = [{ scenario = "probe-off", at_min = 5 }]

[patient]
baseline_sbp = [120, 130]

[[event]]
at_min = [10, 12]
kind = "motion"
""",
    )
    scenario = load_scenario(path)
    assert scenario.patient["baseline_sbp"] == (120, 130)
    assert scenario.duration_s == (100 + 5) * 60  # the included session is longer
    motion = next(e for e in scenario.events if e.kind == "motion")
    assert motion.at_s == (600, 720)
    assert motion.params["duration_s"] == (5, 60)
    probe_off = next(e for e in scenario.events if e.kind == "probe_off")
    assert probe_off.at_s == (20 + 5) * 60  # shifted by the include's at_min


def test_toml_syntax_error_names_the_line(tmp_path: Path) -> None:
    error = fails(write(tmp_path, 'description = "x"\n\n[patient\nbaseline_hr = 70\n'))
    assert error.line == 3
    assert "not valid TOML" in str(error)


def test_unknown_event_kind_names_the_line_and_key(tmp_path: Path) -> None:
    text = '[[event]]\nat_min = 1\nkind = "probe_of"\n'
    error = fails(write(tmp_path, text))
    assert (error.line, error.key) == (3, "[[event]] #1 kind")
    assert "unknown kind 'probe_of'" in error.problem
    assert "(known: desaturation, disconnect, motion" in error.problem


def test_out_of_range_value_names_the_second_event(tmp_path: Path) -> None:
    text = """
[[event]]
at_min = 1
kind = "motion"

[[event]]
at_min = 2
kind = "desaturation"
nadir = 120
"""
    error = fails(write(tmp_path, text))
    assert (error.line, error.key) == (9, "[[event]] #2 nadir")
    assert "between 50 and 99" in error.problem


@pytest.mark.parametrize(
    ("text", "line", "key", "problem"),
    [
        ("colour = 1\n", 1, "colour", "unknown key 'colour'"),
        ("[patient]\nheight = 170\n", 2, "[patient] height", "unknown key 'height'"),
        ("[patient]\nbaseline_hr = [60, 70, 80]\n", 2, "[patient] baseline_hr", "two numbers"),
        ("[patient]\nbaseline_hr = [80, 60]\n", 2, "[patient] baseline_hr", "backwards"),
        ('[patient]\nbaseline_hr = "fast"\n', 2, "[patient] baseline_hr", "must be a number"),
        ("[monitor]\nnibp_interval_min = 4\n", 2, "[monitor] nibp_interval_min", "1, 2, 3, 5"),
        ('[monitor]\necg = "yes"\n', 2, "[monitor] ecg", "true or false"),
        ("[monitor]\nspo2_averaging_s = [4, 8]\n", 2, "[monitor] spo2_averaging_s", "single"),
        (
            '[[infusion]]\nat_min = 1\naction = "start"\nover_min = 40\n',
            1,
            "[[infusion]] #1",
            "missing required key 'dose_mg_per_kg'",
        ),
        ('[[infusion]]\naction = "pause"\n', 1, "[[infusion]] #1", "missing required key 'at_min'"),
        (
            '[[infusion]]\nat_min = 1\naction = "pause"\n',
            1,
            "[[infusion]] #1",
            "cannot pause at this point: no infusion is running",
        ),
        (
            'duration_min = 10\n[[event]]\nat_min = 12\nkind = "motion"\n',
            2,
            "[[event]] #1",
            "after the scenario ends",
        ),
        ('include = ["stedy"]\n', 1, "include[1]", "unknown scenario 'stedy'"),
        ("include = [3]\n", 1, "include[1]", "must name a scenario"),
    ],
)
def test_problems_name_line_key_and_what_is_wrong(
    tmp_path: Path, text: str, line: int, key: str, problem: str
) -> None:
    error = fails(write(tmp_path, text))
    assert (error.line, error.key) == (line, key)
    assert problem in error.problem


def test_an_include_loop_is_reported(tmp_path: Path) -> None:
    write(tmp_path, 'include = ["second"]\n', "first")
    write(tmp_path, '\ninclude = ["first"]\n', "second")
    with pytest.raises(ScenarioError) as caught:
        load_scenario(tmp_path / "first.toml")
    error = caught.value  # reported where the loop closes
    assert "loop: first → second → first" in error.problem
    assert (error.source, error.line) == (str(tmp_path / "second.toml"), 2)


def test_unknown_scenario_name_lists_the_known_ones() -> None:
    with pytest.raises(ScenarioError, match=r"unknown scenario 'nope' \(known: .*steady"):
        load_scenario("steady+nope")


def test_missing_file_is_named(tmp_path: Path) -> None:
    error = fails(tmp_path / "absent.toml")
    assert "no such scenario file" in error.problem
