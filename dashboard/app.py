"""The nurse station: a Dash app the server mounts at `/`.

The layout comes from the site directory once per page; every live value comes from the
site's websocket through assets/vigil-live.js (tiles, sparklines, alarms, sound) and
assets/station-chair.js (the chair view), never from polling.
"""

from __future__ import annotations

import re
from pathlib import Path

from dash import Dash, Input, Output, dcc, html

from contracts.directory import SiteDirectory
from contracts.review import ReviewSource
from dashboard.review.pages import is_review_path, register_review_callbacks, review_page
from dashboard.tiles import chair_tile, data_attributes

SECONDARY_DISPLAY_NOTICE = (
    "Vigil is a secondary display. The bedside monitors keep their own alarms: "
    "always confirm at the bedside."
)
_SITE_PATH = re.compile(r"^/sites/(\d+)/?$")

# Session-event presets of the chair view: (label, event kind, value, unit, note).
EVENT_PRESETS: list[tuple[str, str, str, str, str]] = [
    ("Infusion start", "infusion_start", "", "", ""),
    ("Infusion stop", "infusion_stop", "", "", ""),
    ("Rate 0.5 mg/kg/h", "rate_change", "0.5", "mg/kg/h", ""),
    ("Rate 0.75 mg/kg/h", "rate_change", "0.75", "mg/kg/h", ""),
    ("Rate 1.0 mg/kg/h", "rate_change", "1.0", "mg/kg/h", ""),
    ("Pause infusion", "infusion_pause", "", "", ""),
    ("Resume infusion", "infusion_resume", "", "", ""),
    ("BP med: labetalol 10 mg IV", "bp_medication", "10", "mg", "labetalol IV"),
    ("BP med: clonidine 0.1 mg PO", "bp_medication", "0.1", "mg", "clonidine PO"),
]


def _toolbar() -> html.Div:
    return html.Div(
        className="toolbar",
        children=[
            html.Span("Show:", className="toolbar-label"),
            *[
                html.Button(label, className="filter", **data_attributes(filter=name))
                for name, label in [
                    ("alarming", "Alarming"),
                    ("disconnected", "Disconnected"),
                    ("infusion", "In infusion"),
                ]
            ],
            html.Label(
                className="sort",
                children=[
                    "Sort: ",
                    html.Select(
                        id="sort-order",
                        className="sort-select",
                        children=[
                            html.Option("chair order", value="chair"),
                            html.Option("severity", value="severity"),
                        ],
                    ),
                ],
            ),
            html.Span("", id="filter-count", className="filter-count"),
            html.Span(className="spacer"),
            html.Span("SOUND OFF", id="sound-status", className="sound-status off"),
            html.Button("Enable sound", id="sound-enable", className="sound-enable"),
            html.Button("Alarm self-test", id="sound-test", className="sound-test"),
        ],
    )


# The NIBP intervals a monitor's auto mode offers (the server accepts the same list,
# app.alarms.nibp.ALLOWED_NIBP_INTERVALS_S; a test keeps them equal): (label, seconds).
NIBP_INTERVAL_CHOICES: list[tuple[str, int]] = [
    *((f"{minutes} min", minutes * 60) for minutes in (1, 2, 3, 5, 10, 15, 30, 60)),
    ("none (manual readings only)", 0),
]


def _nibp_interval_control() -> html.Div:
    """The session's NIBP interval: pick, then confirm (station-chair.js does the rest)."""
    return html.Div(
        className="nibp-interval",
        children=[
            html.Label("NIBP every", htmlFor="nibp-interval-select"),
            html.Select(
                id="nibp-interval-select",
                children=[
                    # The label gets the phase's interval once the view opens.
                    html.Option("protocol default", value="default"),
                    *(html.Option(label, value=str(s)) for label, s in NIBP_INTERVAL_CHOICES),
                ],
            ),
            html.Button("Set", id="nibp-interval-set", className="event-preset"),
            html.Span(
                id="nibp-interval-confirm",
                className="nibp-interval-confirm",
                hidden=True,
                children=[
                    html.Span("", id="nibp-interval-question"),
                    html.Button("Confirm", id="nibp-interval-yes", className="event-preset"),
                    html.Button("Cancel", id="nibp-interval-no", className="event-preset"),
                ],
            ),
            html.Span("", id="nibp-interval-result", className="event-result"),
        ],
    )


def _chair_view() -> html.Div:
    return html.Div(
        id="chair-view",
        className="chair-view",
        hidden=True,
        role="dialog",
        children=[
            html.Div(
                className="chair-view-head",
                children=[
                    html.Span("", id="chair-view-title", className="chair-view-title"),
                    html.Span("", id="chair-view-phase", className="phase"),
                    _nibp_interval_control(),
                    html.Button("Close", id="chair-view-close", className="chair-view-close"),
                ],
            ),
            dcc.Graph(
                id="chair-trend",
                className="chair-trend",
                config={"displayModeBar": False, "responsive": True},
                style={"height": "380px"},
                figure={"data": [], "layout": {"template": "plotly_dark"}},
            ),
            html.Div(
                className="chair-view-body",
                children=[
                    html.Div(
                        className="chair-panel",
                        children=[html.H3("Alarms"), html.Ul(id="chair-alarms")],
                    ),
                    html.Div(
                        className="chair-panel",
                        children=[html.H3("Active limits"), html.Table(id="chair-limits")],
                    ),
                    html.Div(
                        className="chair-panel",
                        children=[
                            html.H3("Record an event"),
                            html.Div(
                                className="event-presets",
                                children=[
                                    html.Button(
                                        label,
                                        className="event-preset",
                                        **data_attributes(
                                            kind=kind, value=value, unit=unit, note=note
                                        ),
                                    )
                                    for label, kind, value, unit, note in EVENT_PRESETS
                                ],
                            ),
                            html.Div(
                                className="event-note",
                                children=[
                                    dcc.Input(
                                        id="event-note-text",
                                        type="text",
                                        placeholder="Note…",
                                        debounce=False,
                                    ),
                                    html.Button(
                                        "Add note",
                                        className="event-preset",
                                        **data_attributes(kind="note"),
                                    ),
                                ],
                            ),
                            html.Div("", id="event-result", className="event-result"),
                            html.H3("Events"),
                            html.Ul(id="chair-events"),
                        ],
                    ),
                ],
            ),
        ],
    )


def create_dashboard(directory: SiteDirectory, review: ReviewSource | None = None) -> Dash:
    dash_app = Dash(
        __name__,
        title="Vigil — nurse station",
        assets_folder=str(Path(__file__).parent / "assets"),
        update_title="",
        suppress_callback_exceptions=True,
        # The server's sign-in sets this cookie; callbacks echo it so the server's CSRF
        # check lets them through.
        csrf_token_name="vigil_csrf",
        csrf_header_name="X-CSRF-Token",
    )
    dash_app.layout = html.Div(
        className="station-page",
        children=[
            dcc.Location(id="url"),
            html.Header(
                className="topbar",
                children=[
                    html.Span("Vigil", className="brand"),
                    html.Nav(id="site-nav", className="site-nav"),
                    html.Span("", id="occupancy", className="occupancy"),
                    html.Span("connecting…", id="link-status", className="link-status down"),
                    html.Span("", id="signed-in-as", className="signed-in-as"),
                    html.Button("Sign out", id="sign-out", className="sign-out"),
                ],
            ),
            html.Div(
                "Connection to the Vigil server lost: values are not live. Reconnecting…",
                id="link-banner",
                className="link-banner",
                role="alert",
                hidden=True,
            ),
            _toolbar(),
            html.Main(id="station"),
            _chair_view(),
            html.Footer(SECONDARY_DISPLAY_NOTICE, className="notice"),
        ],
    )

    @dash_app.callback(
        Output("station", "children"),
        Output("site-nav", "children"),
        Input("url", "pathname"),
    )
    def render_site(pathname: str | None) -> tuple[html.Div, list[dcc.Link]]:
        sites = directory.sites()
        match = _SITE_PATH.match(pathname or "/")
        site_id = int(match.group(1)) if match else (sites[0].site_id if sites else None)
        nav = [
            dcc.Link(
                f"{site.name} ({site.chair_count})",
                href=f"/sites/{site.site_id}",
                className="site-link current" if site.site_id == site_id else "site-link",
            )
            for site in sites
        ]
        if review is not None and is_review_path(pathname):
            return review_page(review, pathname or "/review"), nav
        if site_id is None or site_id not in {site.site_id for site in sites}:
            return html.Div("No such site. Pick one above.", className="empty"), nav
        tiles = [chair_tile(chair) for chair in directory.chairs(site_id)]
        grid = html.Div(
            id="grid", className="grid", **data_attributes(site_id=str(site_id)), children=tiles
        )
        return grid, nav

    if review is not None:
        register_review_callbacks(dash_app, review)
    return dash_app
