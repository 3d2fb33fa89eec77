"""The chair tile: a fixed skeleton the live script fills in from the websocket.

Dash renders a tile once per page; after that only assets/vigil-live.js touches it, so a
value arriving never re-renders the grid.
"""

from __future__ import annotations

from typing import Any

from dash import html

from contracts.directory import ChairEntry


def data_attributes(**values: str) -> dict[str, Any]:
    """`data-*` attributes for a Dash component (the live script finds tiles by them)."""
    return {f"data-{name.replace('_', '-')}": value for name, value in values.items()}


def sparkline(code: str) -> html.Div:
    """A 15-minute trace; plain SVG drawn by the live script (see docs/PERFORMANCE.md)."""
    return html.Div(className="spark", **data_attributes(spark=code))


def _vital(code: str, label: str, unit: str, *extra: html.Span) -> html.Div:
    return html.Div(
        className="vital no-value",
        **data_attributes(vital=code),
        children=[
            html.Span(label, className="label"),
            html.Span("---", className="value"),
            html.Span(unit, className="unit"),
            *extra,
            html.Span("", className="age"),
        ],
    )


def chair_tile(chair: ChairEntry) -> html.Div:
    return html.Div(
        id=f"chair-{chair.chair_id}",
        className="tile",
        title="Open the chair view",
        **data_attributes(chair_id=str(chair.chair_id)),
        children=[
            html.Div(
                className="tile-head",
                children=[
                    html.Span(chair.name, className="chair-name"),
                    html.Span("", className="patient"),
                    html.Span("no session", className="phase"),
                    html.Span("", className="infusion-time", title="time since infusion start"),
                ],
            ),
            html.Div(
                className="tile-vitals",
                children=[
                    html.Div(
                        className="vital-cell",
                        children=[_vital("hr", "HR", "/min"), sparkline("hr")],
                    ),
                    html.Div(
                        className="vital-cell",
                        children=[
                            _vital(
                                "spo2",
                                "SpO\u2082",
                                "%",
                                html.Span("", className="signal", title="signal quality"),
                            ),
                            sparkline("spo2"),
                        ],
                    ),
                    _vital("nibp", "NIBP", "mmHg", html.Span("", className="next-cuff")),
                ],
            ),
            html.Div("", className="tile-link"),
            html.Div(
                className="tile-alarm",
                children=[
                    html.Div("", className="tile-status"),
                    html.Div(
                        className="tile-actions",
                        children=[
                            html.Button("Ack", className="ack-button", hidden=True),
                            html.Button("Pause audio", className="pause-button", hidden=True),
                            html.Span("", className="pause-left"),
                        ],
                    ),
                ],
            ),
        ],
    )
