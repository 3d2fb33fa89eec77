"""The Vigil server as deployed: the API with the nurse station mounted on top.

`app.main.create_app` builds the API, websockets and device doors and never imports the
dashboard; the dashboard never imports the server. Here the two meet: the station gets the
server's sources (through the `contracts` Protocols) and is mounted behind the sign-in gate.
"""

from __future__ import annotations

from a2wsgi import WSGIMiddleware
from fastapi import FastAPI
from starlette.types import ASGIApp

from app.auth.web import SignedInGate
from app.main import create_app, station_sources
from app.settings import Settings
from dashboard.app import create_dashboard


def create_server(settings: Settings | None = None) -> FastAPI:
    """One process serving the API, the websockets and the nurse station."""
    app = create_app(settings)
    sources = station_sources(app)
    dashboard = create_dashboard(sources.directory, review=sources.review)
    # Every page, asset and callback of the nurse station needs a signed-in browser.
    dash_asgi: ASGIApp = WSGIMiddleware(dashboard.server)  # type: ignore[assignment]
    # Mounted last: Dash answers every path the API does not.
    app.mount("/", SignedInGate(dash_asgi, lambda: app.state.auth))
    return app
