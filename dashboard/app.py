"""The nurse station: a Dash app the server mounts at `/`.

The layout comes from the site directory once per page; every live value comes
from the site's websocket through assets/vigil-live.js, never from polling.
"""

from __future__ import annotations

import re
from pathlib import Path

from dash import Dash, Input, Output, dcc, html

from dashboard.directory import SiteDirectory
from dashboard.tiles import chair_tile, data_attributes

SECONDARY_DISPLAY_NOTICE = (
    "Vigil is a secondary display. The bedside monitors keep their own alarms: "
    "always confirm at the bedside."
)
_SITE_PATH = re.compile(r"^/sites/(\d+)/?$")


def create_dashboard(directory: SiteDirectory) -> Dash:
    dash_app = Dash(
        __name__,
        title="Vigil — nurse station",
        assets_folder=str(Path(__file__).parent / "assets"),
        update_title="",
        suppress_callback_exceptions=True,
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
                ],
            ),
            html.Div(
                "Connection to the Vigil server lost: values are not live. Reconnecting…",
                id="link-banner",
                className="link-banner",
                role="alert",
                hidden=True,
            ),
            html.Main(id="station"),
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
        nav = [
            dcc.Link(site.name, href=f"/sites/{site.site_id}", className="site-link")
            for site in sites
        ]
        match = _SITE_PATH.match(pathname or "/")
        site_id = int(match.group(1)) if match else (sites[0].site_id if sites else None)
        if site_id is None or site_id not in {site.site_id for site in sites}:
            return html.Div("No such site. Pick one above.", className="empty"), nav
        tiles = [chair_tile(chair) for chair in directory.chairs(site_id)]
        grid = html.Div(
            id="grid", className="grid", **data_attributes(site_id=str(site_id)), children=tiles
        )
        return grid, nav

    return dash_app
