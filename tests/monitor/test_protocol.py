"""The protocol file: the default's numbers, validation errors that point at the line, overrides."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from monitor_testkit import Chair, EvaluatorKind

from monitor.engine import AlarmEngine
from monitor.lifecycle import TransitionEvent
from monitor.overrides import SessionLimits
from monitor.protocol import (
    DEFAULT_PROTOCOL_PATH,
    Phase,
    Priority,
    ProtocolError,
    TechnicalKind,
    default_protocol,
    load_protocol,
    parse_protocol,
)
from monitor.vitals import Vital

DEFAULT = DEFAULT_PROTOCOL_PATH.read_text(encoding="utf-8")
REPO = Path(__file__).resolve().parents[2]


def line_of(text: str, needle: str, start: int = 0) -> int:
    """1-based number of the first line at or after line `start` that contains `needle`
    (its first line, if it has several)."""
    needle = needle.strip().splitlines()[0]
    for number, line in enumerate(text.splitlines(), start=1):
        if number >= start and needle in line:
            return number
    raise AssertionError(f"{needle!r} not in text")


# --- the default protocol is the brief's table --------------------------------------------------


def test_default_protocol_matches_the_brief() -> None:
    p = default_protocol()
    assert p.version == "2025.2"

    def rule(rule_id: str) -> tuple[object, ...]:
        r = p.rule(rule_id)
        return (r.vital, r.op.value, r.limit, r.delay_s, r.priority)

    assert rule("spo2_low_medium") == (Vital.SPO2, "<=", 93, 15, Priority.MEDIUM)
    assert rule("spo2_low_high") == (Vital.SPO2, "<=", 90, 15, Priority.HIGH)
    assert rule("spo2_desat") == (Vital.SPO2, "<=", 85, 0, Priority.CRISIS)
    assert rule("spo2_low_sustained") == (Vital.SPO2, "<=", 90, 60, Priority.CRISIS)
    for v in ("hr", "pr"):
        assert rule(f"{v}_high_medium") == (Vital(v), ">", 110, 10, Priority.MEDIUM)
        assert rule(f"{v}_low_medium") == (Vital(v), "<", 50, 10, Priority.MEDIUM)
        assert rule(f"{v}_high_high") == (Vital(v), ">", 130, 10, Priority.HIGH)
        assert rule(f"{v}_low_high") == (Vital(v), "<", 45, 10, Priority.HIGH)
        assert rule(f"{v}_high_crisis") == (Vital(v), ">", 150, 10, Priority.CRISIS)
        assert rule(f"{v}_low_crisis") == (Vital(v), "<", 40, 10, Priority.CRISIS)
    sbp = Vital.NIBP_SYS
    assert rule("sbp_high_medium") == (sbp, ">=", 160, 0, Priority.MEDIUM)
    rise = p.rule("sbp_rise_medium")
    assert (rise.relative_to_baseline, rise.limit) == (True, 30)
    assert rise.phases == {Phase.INFUSION, Phase.RECOVERY}
    high = p.rule("sbp_high_high")
    assert (high.limit, high.confirm_within_s, high.advice) == (
        180,
        180,
        "consider pausing infusion",
    )
    assert rule("sbp_high_crisis") == (sbp, ">=", 200, 0, Priority.CRISIS)
    assert [p.rule(f"dbp_high_{x}").limit for x in ("medium", "high", "crisis")] == [100, 110, 120]
    assert [p.rule(f"sbp_low_{x}").limit for x in ("medium", "high", "crisis")] == [100, 90, 80]
    assert [p.rule(f"map_low_{x}").limit for x in ("medium", "high")] == [70, 65]
    assert all(r.hysteresis > 0 for r in p.rules)

    tech = {c.kind: c for c in p.technical}
    assert tech[TechnicalKind.DEVICE_SILENT].window_s == 10
    assert tech[TechnicalKind.NO_VALUE].window_s == 10
    assert tech[TechnicalKind.NIBP_STALE].grace_s == 120
    assert tech[TechnicalKind.NIBP_FAILED].consecutive == 2
    assert tech[TechnicalKind.LOW_SIGNAL].limit == 0.4
    assert (p.nibp_interval(Phase.INFUSION), p.nibp_interval(Phase.RECOVERY)) == (300, 900)
    # sbp_high_high: the next scheduled reading (interval + 120 s) or a repeat within 3 min.
    high = p.rule("sbp_high_high")
    assert [p.confirm_window(high, interval) for interval in (0, 60, 300, 900)] == [
        180,
        180,
        420,
        1020,
    ]
    assert p.confirm_window(p.rule("sbp_high_crisis"), 300) is None
    assert p.lifecycle.latching == {Priority.HIGH, Priority.CRISIS}
    assert p.combination is not None
    assert p.combination.priority is Priority.HIGH
    assert p.gated_vitals == {Vital.SPO2, Vital.PR}


# --- errors name the rule, the key and the line ----------------------------------------------

HR_HIGH = line_of(DEFAULT, 'id = "hr_high_medium"')
CASES = [
    # (replace this, with this, rule id, key, line containing, message fragment)
    ("delay_s = 15", "delay = 15", "spo2_low_medium", "delay", "delay = 15", "unknown key"),
    ('limit = 90', 'limit = "ninety"', "spo2_low_high", "limit", '"ninety"', "must be a number"),
    ('op = ">"', 'op = "=>"', "hr_high_medium", "op", '"=>"', "not one of"),
    ('vital = "spo2"', 'vital = "spo3"', "spo2_low_medium", "vital", "spo3", "not one of"),
    ("limit = 110\n", "", "hr_high_medium", "limit", None, "is required"),
    ("limit = 93", "limit = 150", "spo2_low_medium", "limit", "150", "outside SpO2's range"),
    ('priority = "medium"', 'priority = "urgent"', "spo2_low_medium", "priority", "urgent", ""),
    ("phases = [\"infusion\", \"recovery\"]", 'phases = ["infusion", "after"]',
     "sbp_rise_medium", "phases", '"after"', "not one of"),
    ('id = "sbp_high_medium"\n', 'id = "sbp_high_medium"\ndelay_s = 10\n', "sbp_high_medium",
     "delay_s", "delay_s = 10", "use confirm_within_s"),
    ('id = "spo2_desat"\n', 'id = "spo2_desat"\nconfirm_within_s = 60\n', "spo2_desat",
     "confirm_within_s", "confirm_within_s = 60", "only NIBP rules"),
    ('id = "hr_low_crisis"\n', 'id = "hr_low_crisis"\nrelative_to = "baseline"\n',
     "hr_low_crisis", "relative_to", "relative_to", "NIBP vitals only"),
    ('id = "pr_low_crisis"', 'id = "pr_high_crisis"', "pr_high_crisis", "id",
     'id = "pr_high_crisis"', "duplicate id (first used on line"),
    ('"spo2_probe_off", "spo2_low_signal"]', '"spo2_probe_of", "spo2_low_signal"]',
     "spo2_no_value", "suppressed_by", "spo2_probe_of", "not another technical check"),
    ('kind = "device_silent"  # no sample of any vital\n',
     'kind = "device_silent"\nsuppressed_by = ["spo2_no_value"]\n', "device_silent",
     "suppressed_by", 'suppressed_by = ["spo2_no_value"]', "cycle"),
    ('limit = 0.4\n', '', "spo2_low_signal", "limit", None, "is required"),
    ('gated_vitals = ["spo2", "pr"]', 'gated_vitals = ["spo2", "pi"]', None, "gated_vitals",
     "gated_vitals", "cannot be gated"),
    ("[baseline]\n", "[alarms]\nx = 1\n[baseline]\n", None, "alarms", None, "unknown key"),
    ('audio_pause_s = 120', 'audio_pause_s = 0', None, "audio_pause_s", "audio_pause_s = 0",
     "greater than 0"),
    ("confirm_margin_s = 120", "confirm_margin_s = -1", None, "confirm_margin_s",
     "confirm_margin_s = -1", "at least 0"),
    ("confirm_margin_s = 120", "confirm_margin = 120", None, "confirm_margin", None,
     "unknown key (allowed: confirm_margin_s, interval_s)"),
]  # fmt: skip


@pytest.mark.parametrize(("old", "new", "rule_id", "key", "needle", "message"), CASES)
def test_errors_point_at_rule_key_and_line(
    old: str, new: str, rule_id: str | None, key: str, needle: str | None, message: str
) -> None:
    assert old in DEFAULT
    text = DEFAULT.replace(old, new, 1)
    with pytest.raises(ProtocolError) as caught:
        parse_protocol(text, source="clinic.toml")
    err = caught.value
    assert (err.rule_id, err.key) == (rule_id, key)
    assert message in str(err)
    if needle is not None:
        assert err.line == line_of(text, needle, start=line_of(DEFAULT, old) - 5)
    elif rule_id is not None:  # a key that is missing: the line of the rule's [[...]] header
        assert err.line is not None
        assert text.splitlines()[err.line - 1].strip() in ("[[rule]]", "[[technical]]")
    assert str(err).startswith(f"clinic.toml:{err.line}: " if err.line else "clinic.toml: ")


def test_missing_limit_points_at_the_rule_header() -> None:
    text = DEFAULT.replace("limit = 110\n", "", 1)
    with pytest.raises(ProtocolError) as caught:
        parse_protocol(text)
    assert caught.value.line == HR_HIGH - 1  # the [[rule]] line just above its id


def test_toml_syntax_errors_have_a_line() -> None:
    text = DEFAULT.replace("limit = 93", "limit = = 93", 1)
    with pytest.raises(ProtocolError) as caught:
        parse_protocol(text, source="clinic.toml")
    assert caught.value.line == line_of(text, "limit = = 93")
    assert "not valid TOML" in str(caught.value)


def test_version_is_required() -> None:
    with pytest.raises(ProtocolError, match="'version': is required"):
        parse_protocol(DEFAULT.replace('version = "2025.2"\n', ""))
    with pytest.raises(ProtocolError, match="must not be empty"):
        parse_protocol(DEFAULT.replace('version = "2025.2"', 'version = " "'))


def test_error_message_reads_well() -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_protocol(DEFAULT.replace("delay_s = 15", "delay = 15", 1), source="clinic.toml")
    line = line_of(DEFAULT, "delay_s = 15")
    assert str(caught.value).startswith(
        f"clinic.toml:{line}: 'spo2_low_medium': key 'delay': unknown key (allowed: "
    )


def test_load_protocol_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text(DEFAULT.replace('version = "2025.2"', 'version = "site-7"'), encoding="utf-8")
    assert load_protocol(path).version == "site-7"
    path.write_text(DEFAULT.replace("limit = 93", "limit = 930", 1), encoding="utf-8")
    with pytest.raises(ProtocolError, match=r"^site\.toml:\d+: 'spo2_low_medium'"):
        load_protocol(path)


MINIMAL = """
version = "min-1"
[baseline]
readings = 3
[[rule]]
id = "sbp_rise"
vital = "nibp_sys"
op = ">"
relative_to = "baseline"
limit = 20
priority = "high"
phases = ["infusion"]
[[rule]]
id = "spo2_low"
vital = "spo2"
op = "<"
limit = 90
delay_s = 5
priority = "medium"
"""


@pytest.mark.parametrize("kind", ["vector", "reference"])
def test_a_minimal_protocol_works(kind: EvaluatorKind) -> None:
    """No technical checks, no combination, a three-reading baseline."""
    protocol = parse_protocol(MINIMAL)
    chair = Chair(kind, phase=Phase.BASELINE, protocol=protocol)
    for t, sbp in ((0, 120), (100, 130), (200, 110), (300, 125)):
        chair.nibp(t, sbp, 80)
    assert chair.engine.baseline("chair-1", Vital.NIBP_SYS) == pytest.approx(365 / 3)
    chair.set_phase(Phase.INFUSION, 400)
    chair.nibp(500, 142, 80)  # > 121.67 + 20
    chair.run(500, 520, spo2=89)
    for t in range(520, 600):
        chair.tick(t)  # no technical checks: silence is not an alarm here
    assert chair.times("sbp_rise") == [500]
    assert chair.times("spo2_low") == [505]
    assert chair.raised_rules() == {"sbp_rise", "spo2_low"}


# --- per-session overrides ---------------------------------------------------------------


def test_override_records_who_why_old_new_and_time() -> None:
    limits = SessionLimits(default_protocol(), "s-9")
    record = limits.override("hr_high_medium", 120, who="dr.ng", why="athlete", time=50.0)
    assert (record.session_key, record.rule_id, record.old, record.new) == (
        "s-9",
        "hr_high_medium",
        110,
        120,
    )
    assert (record.who, record.why, record.time, record.protocol_version) == (
        "dr.ng",
        "athlete",
        50.0,
        "2025.2",
    )
    assert limits.limit("hr_high_medium") == 120
    second = limits.override("hr_high_medium", 125, who="dr.ng", why="still fine", time=60.0)
    assert (second.old, second.new) == (120, 125)
    back = limits.revert("hr_high_medium", who="rn", why="end of session", time=70.0)
    assert (back.old, back.new, back.reverted) == (125, 110, True)
    assert limits.limit("hr_high_medium") == 110
    assert limits.history == [record, second, back]


@pytest.mark.parametrize(
    ("rule_id", "value", "who", "why", "error"),
    [
        ("spo2_desat", 80, "dr", "x", "may not be overridden"),
        ("hr_high_medium", 120, "", "x", "who made it and why"),
        ("hr_high_medium", 120, "dr", " ", "who made it and why"),
        ("spo2_low_medium", 120, "dr", "x", "outside SpO2's range"),
        ("hr_high_medium", float("nan"), "dr", "x", "finite"),
    ],
)
def test_bad_overrides_are_refused(
    rule_id: str, value: float, who: str, why: str, error: str
) -> None:
    limits = SessionLimits(default_protocol(), "s")
    with pytest.raises(ValueError, match=error):
        limits.override(rule_id, value, who=who, why=why, time=0)
    assert limits.history == []
    with pytest.raises(KeyError):
        limits.override("no_such_rule", 1, who="dr", why="x", time=0)


def test_stored_overrides_are_reapplied_after_a_restart() -> None:
    engine = AlarmEngine()
    engine.add_session("a", Phase.INFUSION, 0)
    record = engine.override_limit("a", "spo2_low_high", 88, who="dr", why="COPD", time=1)

    fresh = AlarmEngine()
    fresh.add_session("a", Phase.INFUSION, 2)
    fresh.restore_override(record)
    assert fresh.limit("a", "spo2_low_high") == 88
    assert fresh.overrides("a") == [record]
    out = []
    for t in range(2, 40):
        out += fresh.ingest(fresh.batch([("a", "spo2", 89, float(t))]))
    raised = {r.rule_id for r in out if r.event is TransitionEvent.RAISED}
    assert "spo2_low_high" not in raised  # 89 is above the overridden 88
    assert "spo2_low_medium" in raised


# --- the core stays pure --------------------------------------------------------------------


def test_monitor_imports_no_web_db_or_simulator_code() -> None:
    code = (
        "import sys, monitor.engine, monitor.reference, monitor.evaluator, monitor.lifecycle;"
        "bad = sorted({m.split('.')[0] for m in sys.modules} & "
        "{'app', 'dashboard', 'simulators', 'fastapi', 'sqlalchemy', 'starlette', 'pydantic'});"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_docs_describe_every_rule_and_technical_alarm() -> None:
    doc = (REPO / "docs" / "ALARMS.md").read_text(encoding="utf-8")
    for check_id in default_protocol().check_ids:
        assert f"`{check_id}`" in doc, check_id
    assert "Signal delay (sample receipt → websocket)" in doc
