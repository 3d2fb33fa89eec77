"""The chair tile: a fixed skeleton the live script fills in from the websocket."""

from __future__ import annotations

from typing import Any

from dash import html

from dashboard.directory import ChairEntry


def data_attributes(**values: str) -> dict[str, Any]:
    """`data-*` attributes for a Dash component (the live script finds tiles by them)."""
    return {f"data-{name.replace('_', '-')}": value for name, value in values.items()}


def _vital(code: str, label: str, unit: str) -> html.Div:
    return html.Div(
        className="vital no-value",
        **data_attributes(vital=code),
        children=[
            html.Span(label, className="label"),
            html.Span("---", className="value"),
            html.Span(unit, className="unit"),
            html.Span("", className="age"),
        ],
    )


def chair_tile(chair: ChairEntry) -> html.Div:
    return html.Div(
        id=f"chair-{chair.chair_id}",
        className="tile",
        **data_attributes(chair_id=str(chair.chair_id)),
        children=[
            html.Div(
                className="tile-head",
                children=[
                    html.Span(chair.name, className="chair-name"),
                    html.Span("", className="patient"),
                    html.Span("no session", className="phase"),
                ],
            ),
            html.Div(
                className="tile-vitals",
                children=[
                    _vital("hr", "HR", "/min"),
                    _vital("spo2", "SpO\u2082", "%"),
                    _vital("nibp", "NIBP", "mmHg"),
                ],
            ),
            html.Div("", className="tile-status"),
        ],
    )
