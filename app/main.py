"""The API's factory: HTTP API, websockets and device doors.

The nurse station is not built here: `vigil.server` mounts the dashboard on top of this
app, handing it the viewer-scoped sources from `station_sources`. Nothing in `app` imports
the dashboard.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from sqlalchemy import text

from app import __version__
from app.adapters.endpoints import router as adapters_router
from app.adapters.runtime import build_runtime
from app.adapters.ws_ingest import router as ws_ingest_router
from app.alarms.endpoints import router as alarms_router
from app.alarms.service import AlarmService, load_clinic_protocol
from app.auth.audit import AuditTrail
from app.auth.dash_scope import ViewerScopedDirectory, ViewerScopedReviewSource
from app.auth.deps import SignedIn, authenticate_before_validation
from app.auth.endpoints import router as auth_router
from app.auth.service import AuthService
from app.auth.web import router as sign_in_router
from app.devices.endpoints import router as devices_router
from app.errors import DATABASE_RETRY_AFTER_S, database_unreachable, install_error_handlers
from app.exports.endpoints import router as exports_router
from app.ingest.endpoints import router as ingest_router
from app.ingest.service import IngestService
from app.live.endpoints import router as live_router
from app.live.hub import Hub
from app.live.service import LiveService
from app.observability.logs import RequestIdMiddleware
from app.observability.privacy import install_log_filters
from app.review.endpoints import router as review_router
from app.review.source import DatabaseReviewSource
from app.sessions.endpoints import router as sessions_router
from app.sessions.service import SessionService
from app.settings import Settings
from app.sites.directory import DatabaseSiteDirectory
from app.sites.endpoints import router as sites_router
from app.storage.db import Database
from app.storage.health import DatabaseHealth
from app.trends.endpoints import router as trends_router
from contracts.directory import SiteDirectory
from contracts.review import ReviewSource


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    install_log_filters()
    db = Database(settings.resolved_database_url)

    health = DatabaseHealth(db)
    protocol = load_clinic_protocol(settings.protocol_file)
    live = LiveService(db, Hub(settings.client_queue_size), protocol)
    alarms = AlarmService(db, protocol, data_dir=settings.data_dir, health=health)
    alarms.published.subscribe(live.publish_alarm)
    ingest = IngestService(db, settings)
    # In this order: the screens get a batch's samples, then the alarm engine evaluates it.
    ingest.committed.subscribe(live.publish_batch)
    ingest.committed.subscribe(alarms.on_batch)
    auth = AuthService(db, AuditTrail(db), settings)
    adapters = build_runtime(db, ingest, auth)
    adapters.events.subscribe(alarms.on_adapter_event)
    adapters.events.subscribe(alarms.on_device_alert)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await alarms.start()
        await alarms.restore_nibp_intervals()
        health.start()
        try:
            # Adapters start once alarms are restored, and stop while the database is open.
            await adapters.start()
            try:
                yield
            finally:
                await adapters.stop()
                # What was committed reaches the live view and the alarm engine first.
                await ingest.close()
        finally:
            await health.stop()
            await alarms.stop()
            db.close()

    app = FastAPI(
        title="Vigil",
        version=__version__,
        summary="Real-time vitals monitoring for IV infusion clinics.",
        lifespan=lifespan,
        # The schema and its pages are served below, to signed-in people only.
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.db = db
    app.state.database_health = health
    app.state.live = live
    app.state.alarms = alarms
    app.state.ingest = ingest
    app.state.sessions = SessionService(db, live, alarms)
    app.state.auth = auth
    app.state.adapters = adapters

    install_error_handlers(
        app,
        driver_error=db.engine.dialect.loaded_dbapi.Error,
        on_database_unreachable=health.report_failure,
    )
    # Outermost: every request, the nurse station's included, gets an id for its log lines.
    app.add_middleware(RequestIdMiddleware, access_log=settings.access_log)
    authenticate_before_validation(app)

    # Routes are matched in order: the device door, hit once a second per chair, comes
    # first, so a post is not tried against every route before it.
    app.include_router(ingest_router)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> JSONResponse:
        """Liveness and database reachability, for load balancers and the IT person."""
        started = time.monotonic()
        try:
            await db.run(lambda session: session.execute(text("SELECT 1")))
        except Exception as exc:  # any database failure means "not healthy", and says why
            if database_unreachable(exc):
                health.report_failure(exc)
            return JSONResponse(
                {"status": "unavailable", "database": type(exc).__name__},
                status_code=503,
                headers={"Retry-After": str(DATABASE_RETRY_AFTER_S)},
            )
        health.report_success(started)
        body: dict[str, Any] = {"status": "ok", "database": db.engine.dialect.name}
        body["version"] = __version__
        return JSONResponse(body)

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi_schema(_: SignedIn) -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False)
    async def api_docs(_: SignedIn) -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="Vigil API")

    app.include_router(auth_router)
    app.include_router(sign_in_router)
    app.include_router(sites_router)
    app.include_router(sessions_router)
    app.include_router(alarms_router)
    app.include_router(live_router)
    app.include_router(review_router)
    app.include_router(trends_router)
    app.include_router(devices_router)
    app.include_router(exports_router)
    app.include_router(ws_ingest_router)
    app.include_router(adapters_router)
    if settings.oidc_enabled:
        from app.auth.oidc import install_oidc  # Authlib is imported only when it is used

        install_oidc(app, settings, db)
    return app


@dataclass(frozen=True)
class StationSources:
    """What the nurse station reads from the server, each answer scoped to the person the
    sign-in gate (`app.auth.web.SignedInGate`) says is looking."""

    directory: SiteDirectory
    review: ReviewSource


def station_sources(app: FastAPI) -> StationSources:
    """The nurse station's sources over the services `create_app` built into `app`."""
    db: Database = app.state.db
    alarms: AlarmService = app.state.alarms
    auth: AuthService = app.state.auth
    return StationSources(
        directory=ViewerScopedDirectory(DatabaseSiteDirectory(db)),
        review=ViewerScopedReviewSource(
            DatabaseReviewSource(db, alarms.engine.protocol), db, auth.audit
        ),
    )
