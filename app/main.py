"""The API's factory: HTTP API, websockets and device doors.

The nurse station is not built here: `vigil.server` mounts the dashboard on top of this
app, handing it the viewer-scoped sources from `station_sources`. Nothing in `app` imports
the dashboard.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse

from app import __version__
from app.adapters.endpoints import router as adapters_router
from app.adapters.runtime import AdapterRuntime, build_runtime
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
from app.errors import NotAuthenticated, install_error_handlers
from app.events import AdapterEvent, AlarmPublished, LinkEvent, StoredBatch
from app.exports.endpoints import router as exports_router
from app.ingest.endpoints import router as ingest_router
from app.ingest.schemas import ObservationBatchIn
from app.ingest.service import IngestService
from app.live.endpoints import router as live_router
from app.live.hub import Hub
from app.live.service import LiveService
from app.observability.logs import RequestIdMiddleware
from app.observability.metrics import CONTENT_TYPE, MetricsMiddleware, VigilMetrics, count_ingest
from app.observability.privacy import install_log_filters
from app.observability.readiness import Readiness, check_database, readiness_body
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
from monitor.lifecycle import TransitionEvent


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    install_log_filters()
    db = Database(settings.resolved_database_url)

    health = DatabaseHealth(db)
    protocol = load_clinic_protocol(settings.protocol_file)
    live = LiveService(db, Hub(settings.client_queue_size), protocol)
    alarms = AlarmService(db, protocol, data_dir=settings.data_dir, health=health)
    alarms.published.subscribe(live.publish_alarm)
    ingest = CountedIngestService(db, settings)
    # In this order: the screens get a batch's samples, then the alarm engine evaluates it.
    ingest.committed.subscribe(live.publish_batch)
    ingest.committed.subscribe(alarms.on_batch)
    auth = AuthService(db, AuditTrail(db), settings)
    adapters = build_runtime(db, ingest, auth)
    adapters.events.subscribe(alarms.on_adapter_event)
    adapters.events.subscribe(alarms.on_device_alert)
    metrics = VigilMetrics()
    _instrument(metrics, alarms, adapters)

    def tick_age() -> float | None:
        return None if alarms.last_tick is None else time.monotonic() - alarms.last_tick

    readiness = Readiness(
        db,
        settings.ready_database_timeout_s,
        tick_age,
        settings.ready_max_tick_age_s,
        lambda: [(s.name, s.state.value, s.error) for s in adapters.status()],
    )
    metrics.watch(
        screens=lambda: live.hub.subscribers,
        tick_age=tick_age,
        adapters=lambda: [(s.name, s.state.value) for s in adapters.status()],
    )

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
    app.state.metrics = metrics

    install_error_handlers(
        app,
        driver_error=db.engine.dialect.loaded_dbapi.Error,
        on_database_unreachable=health.report_failure,
    )
    # Outermost: every request, the nurse station's included, gets an id for its log lines.
    app.add_middleware(RequestIdMiddleware, access_log=settings.access_log)
    authenticate_before_validation(app)
    # Counting code finds this app's metrics through it, in requests and in the lifespan.
    app.add_middleware(MetricsMiddleware, metrics=metrics)

    # Routes are matched in order: the device door, hit once a second per chair, comes
    # first, so a post is not tried against every route before it.
    app.include_router(ingest_router)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> JSONResponse:
        """Liveness: the process answers. No database call: a database outage must not get
        a live process restarted. `database` is the kind configured; `/readyz` checks it."""
        body: dict[str, Any] = {"status": "ok", "database": db.engine.dialect.name}
        body["version"] = __version__
        return JSONResponse(body)

    @app.get("/readyz", tags=["health"])
    async def readyz() -> JSONResponse:
        """Readiness: the database, the alarm ticker and each configured adapter, each
        named with whether it is up; 503 when one is down."""
        status_code, body = readiness_body(await readiness.run())
        return JSONResponse(body, status_code=status_code)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics(request: Request) -> Response:
        """Prometheus metrics, for the bearer of VIGIL_METRICS_TOKEN; 404 while unset."""
        expected = settings.metrics_token
        if expected is None:
            return JSONResponse({"detail": "Not Found"}, status_code=404)
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(
            given.strip().encode(), expected.get_secret_value().encode()
        ):
            raise NotAuthenticated("send Authorization: Bearer <VIGIL_METRICS_TOKEN>")
        database = await check_database(db, settings.ready_database_timeout_s)
        return Response(metrics.render(database_up=database.ok), media_type=CONTENT_TYPE)

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


class CountedIngestService(IngestService):
    """Ingest as `create_app` serves it: every batch's samples counted, stored or refused,
    under the door it came by (`app.observability.metrics.count_ingest`)."""

    async def ingest(self, batch: ObservationBatchIn, **options: Any) -> StoredBatch:
        return await count_ingest(super().ingest(batch, **options), len(batch.observations))


def _instrument(metrics: VigilMetrics, alarms: AlarmService, adapters: AdapterRuntime) -> None:
    """Count alarms raised and device link states from the events that carry them."""

    async def count_alarm(published: object) -> None:
        if isinstance(published, AlarmPublished) and published.event is TransitionEvent.RAISED:
            metrics.alarm_raised(published.alarm.priority.value, published.alarm.kind.value)

    async def count_link(event: AdapterEvent) -> None:
        if isinstance(event, LinkEvent) and event.device_identifier is not None:
            metrics.device_link(event.device_identifier, event.state.value)

    alarms.published.subscribe(count_alarm)
    adapters.events.subscribe(count_link)


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
