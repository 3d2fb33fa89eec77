"""Alarm text: the parameter, the value and the violated limit ("SpO2 86 ≤ 90")."""

from __future__ import annotations

import math

from monitor.protocol import VITAL_LABEL, Rule, TechnicalCheck, TechnicalKind


def number(value: float) -> str:
    """A vital's value as a monitor shows it: whole numbers plain, else up to two decimals."""
    if value == round(value):
        return str(round(value))
    return f"{value:.2f}".rstrip("0").rstrip(".")


def rule_text(
    rule: Rule,
    value: float,
    limit: float,
    baseline: float | None = None,
    worst: float | None = None,
) -> str:
    """E.g. "SBP 184 ≥ 180: consider pausing infusion", "SBP 172 ≥ 168 (baseline 138 + 30)",
    "SpO2 84 ≤ 85 (lowest 82)": the vital's label, its value, the violated limit, then the
    baseline a relative limit stands on and the worst value reached (when it is not this
    one), then the rule's advice. The label and the value always come first (the station
    puts the live value in their place)."""
    text = f"{VITAL_LABEL[rule.vital]} {number(value)} {rule.op.symbol} {number(limit)}"
    notes = []
    if baseline is not None:
        notes.append(f"baseline {number(baseline)} + {number(limit - baseline)}")
    if worst is not None and number(worst) != number(value):
        notes.append(f"{'highest' if rule.op.is_upper else 'lowest'} {number(worst)}")
    if notes:
        text += f" ({'; '.join(notes)})"
    if rule.advice:
        text += f": {rule.advice}"
    return text


def technical_text(check: TechnicalCheck, value: float, limit: float) -> str:
    """The check's own `text` if the protocol gives one, else a description of the fault."""
    if check.text:
        return check.text
    label = VITAL_LABEL[check.vital] if check.vital is not None else ""
    kind = check.kind
    if kind is TechnicalKind.DEVICE_SILENT:
        return f"Monitor silent: no data for {number(limit)} s"
    if kind is TechnicalKind.NO_VALUE:
        return f"{label} no value for {number(limit)} s"
    if kind is TechnicalKind.NIBP_STALE:
        minutes = f" for {number(limit / 60)} min" if math.isfinite(limit) else ""
        return f"NIBP stale: no valid reading{minutes}"
    if kind is TechnicalKind.PROBE_OFF:
        return f"{label} probe off"
    if kind is TechnicalKind.NIBP_FAILED:
        return f"NIBP failed {check.consecutive} times in a row"
    reading = f" ({label} {number(value)} ≤ {number(check.limit)})" if math.isfinite(value) else ""
    return f"Low signal quality{reading}: SpO2 and pulse rate held"
