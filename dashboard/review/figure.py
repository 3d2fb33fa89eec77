"""The session trace as one plotly figure: vitals, infusion rate, alarms and events stacked on
one shared time axis, so zooming or panning one row moves them all.

The figure is a plain dict (plotly's JSON schema), not `plotly.graph_objects`: validating
thousands of points object by object cost more than the database read of a 2-hour session.
Times are milliseconds since 1970, which a date axis takes as they are.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from contracts.review import SessionTrace
from monitor.display import PRIORITY_COLOURS
from monitor.protocol import Priority

PHASE_COLOURS = {
    "checked_in": "rgba(125,133,144,0.10)",
    "baseline": "rgba(88,166,255,0.12)",
    "infusion": "rgba(227,179,65,0.14)",
    "recovery": "rgba(63,185,80,0.12)",
}
VITAL_STYLE = {  # row, colour, mode
    "hr": (1, "#3fb950", "lines"),
    "pr": (1, "#56d4dd", "lines"),
    "spo2": (2, "#58a6ff", "lines"),
    "nibp_sys": (3, "#e3b341", "markers"),
    "nibp_dia": (3, "#e3b341", "markers"),
    "nibp_mean": (3, "#f0883e", "markers"),
}
NIBP_SYMBOLS = {"nibp_sys": "triangle-down", "nibp_dia": "triangle-up", "nibp_mean": "circle"}
ROWS = ("HR / PR /min", "SpO2 %", "NIBP mmHg", "rate", "alarms")
ROW_HEIGHTS = (0.27, 0.2, 0.27, 0.1, 0.16)
ROW_GAP = 0.02
ALARM_ROW = 5
RATE_ROW = 4


def _ms(moment: datetime) -> float:
    return moment.timestamp() * 1000.0


def _axis(row: int) -> str:
    """The y axis of a row, as a trace names it ("y", "y2", …)."""
    return "y" if row == 1 else f"y{row}"


def _domains() -> list[tuple[float, float]]:
    """Each row's vertical extent, top row first."""
    usable = 1.0 - ROW_GAP * (len(ROWS) - 1)
    top = 1.0
    domains = []
    for height in ROW_HEIGHTS:
        bottom = max(0.0, top - height * usable)
        domains.append((bottom, top))
        top = bottom - ROW_GAP
    return domains


def trace_figure(trace: SessionTrace) -> dict[str, Any]:
    """HR/PR, SpO2, NIBP points, the infusion rate band, alarm spans and event markers."""
    data: list[dict[str, Any]] = []
    for series in trace.series:
        row, colour, mode = VITAL_STYLE[series.vital]
        marker: dict[str, Any] = {"color": colour, "size": 7}
        if series.vital in NIBP_SYMBOLS:
            marker["symbol"] = NIBP_SYMBOLS[series.vital]
        data.append(
            {
                "type": "scatter",
                "x": [_ms(t) for t in series.times],
                "y": series.values,
                "mode": mode,
                "name": series.label,
                "line": {"color": colour, "width": 1.2},
                "marker": marker,
                "yaxis": _axis(row),
            }
        )
        if series.flagged_times:
            data.append(
                {
                    "type": "scatter",
                    "x": [_ms(t) for t in series.flagged_times],
                    "y": series.flagged_values,
                    "mode": "markers",
                    "name": f"{series.label} (flagged)",
                    "marker": {"color": "#7d8590", "size": 3},
                    "yaxis": _axis(row),
                }
            )

    if trace.rates:
        xs: list[float | None] = []
        ys: list[float | None] = []
        texts: list[str] = []
        for step in trace.rates:
            label = "rate not recorded" if step.rate is None else f"{step.rate:g} {step.unit or ''}"
            dose = "" if step.dose_at_end is None else f"; {step.dose_at_end:.2f} mg/kg by end"
            xs += [_ms(step.start), _ms(step.end), None]
            ys += [step.rate or 0.0, step.rate or 0.0, None]
            texts += [label + dose] * 3
        data.append(
            {
                "type": "scatter",
                "x": xs,
                "y": ys,
                "mode": "lines",
                "fill": "tozeroy",
                "name": "infusion rate",
                "line": {"color": "#d2a8ff", "width": 1},
                "text": texts,
                "hoverinfo": "text+x",
                "yaxis": _axis(RATE_ROW),
            }
        )

    if trace.events:
        data.append(
            {
                "type": "scatter",
                "x": [_ms(e.at) for e in trace.events],
                "y": [0.0] * len(trace.events),
                "mode": "markers+text",
                "text": [e.kind.replace("_", " ") for e in trace.events],
                "hovertext": [f"{e.label} ({e.recorded_by})" for e in trace.events],
                "hoverinfo": "text+x",
                "textposition": "top center",
                "textfont": {"size": 9, "color": "#e6edf3"},
                "name": "events",
                "marker": {"symbol": "diamond", "color": "#e6edf3", "size": 8},
                "yaxis": _axis(RATE_ROW),
            }
        )

    shapes: list[dict[str, Any]] = [
        {
            "type": "rect",
            "xref": "x",
            "yref": "paper",
            "x0": _ms(span.start),
            "x1": _ms(span.end),
            "y0": 0,
            "y1": 1,
            "fillcolor": PHASE_COLOURS.get(span.phase, "rgba(0,0,0,0)"),
            "line": {"width": 0},
            "layer": "below",
            "name": f"phase:{span.phase}",
        }
        for span in trace.phases
    ]
    for lane, alarm in enumerate(trace.alarms):
        shapes.append(
            {
                "type": "rect",
                "xref": "x",
                "yref": _axis(ALARM_ROW),
                "x0": _ms(alarm.start),
                "x1": _ms(alarm.end),
                "y0": lane + 0.1,
                "y1": lane + 0.9,
                "fillcolor": PRIORITY_COLOURS[Priority(alarm.priority)],
                "line": {"width": 0},
                "name": f"alarm:{alarm.priority}:{alarm.alarm_id}",
            }
        )
    shapes.append(
        {
            "type": "line",
            "xref": "paper",
            "yref": _axis(2),
            "x0": 0,
            "x1": 1,
            "y0": 90,
            "y1": 90,
            "line": {"color": "#f85149", "width": 1, "dash": "dot"},
            "name": "spo2-90",
        }
    )
    if trace.alarms:
        data.append(
            {
                "type": "scatter",
                "x": [_ms(a.start) for a in trace.alarms],
                "y": [lane + 0.5 for lane in range(len(trace.alarms))],
                "mode": "markers",
                "marker": {
                    "color": [PRIORITY_COLOURS[Priority(a.priority)] for a in trace.alarms],
                    "size": 6,
                    "symbol": "line-ns-open",
                },
                "hovertext": [f"{a.priority}: {a.text}" for a in trace.alarms],
                "hoverinfo": "text+x",
                "name": "alarms",
                "yaxis": _axis(ALARM_ROW),
            }
        )

    layout: dict[str, Any] = {
        "template": "plotly_dark",
        "paper_bgcolor": "#0d1117",
        "plot_bgcolor": "#0d1117",
        "font": {"color": "#e6edf3"},
        "height": 760,
        "margin": {"l": 60, "r": 20, "t": 20, "b": 30},
        "legend": {"orientation": "h", "y": -0.04},
        "hovermode": "closest",
        "dragmode": "zoom",
        "uirevision": trace.session_id,
        "shapes": shapes,
        "xaxis": {
            "type": "date",
            "range": [_ms(trace.start), _ms(trace.end)],
            "anchor": _axis(ALARM_ROW),
            "gridcolor": "#30363d",
        },
    }
    for row, ((bottom, top), title) in enumerate(zip(_domains(), ROWS, strict=True), start=1):
        axis: dict[str, Any] = {
            "domain": [bottom, top],
            "anchor": "x",
            "title": {"text": title, "font": {"size": 10}},
            "gridcolor": "#30363d",
            "zeroline": False,
        }
        if row == ALARM_ROW:
            axis |= {"range": [-0.2, max(1, len(trace.alarms)) + 0.2], "showticklabels": False}
        layout["yaxis" if row == 1 else f"yaxis{row}"] = axis
    return {"data": data, "layout": layout}
