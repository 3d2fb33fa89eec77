"""Start and stop the configured adapters with the server; one failing adapter harms no other."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from importlib.metadata import EntryPoint

from fastapi import APIRouter, FastAPI
from pydantic import BaseModel

from app.adapters.base import Adapter, AdapterContext, IngestAuthoriser, IngestSink
from app.adapters.discovery import LoadFailure, load_adapters
from app.adapters.events import ConnectionState, EventBus
from app.adapters.settings import AdapterSettings
from app.adapters.ws_ingest import router as ws_router
from app.auth.deps import Admin
from app.devices.endpoints import router as devices_router
from app.devices.service import DatabaseDeviceDirectory
from app.exports.endpoints import router as exports_router
from app.storage.db import Database

log = logging.getLogger(__name__)


class AdapterStatus(BaseModel):
    name: str
    state: ConnectionState
    error: str | None


class AdapterRuntime:
    """Owns the running adapters and the event bus they report on."""

    def __init__(
        self,
        adapters: Sequence[Adapter],
        context: AdapterContext,
        failures: Sequence[LoadFailure] = (),
        start_timeout_s: float = 15.0,
        stop_timeout_s: float = 5.0,
    ) -> None:
        self.adapters = list(adapters)
        self.context = context
        self._errors: dict[str, str] = {f.name: f.reason for f in failures}
        self._start_timeout_s = start_timeout_s
        self._stop_timeout_s = stop_timeout_s

    @property
    def events(self) -> EventBus:
        return self.context.events

    async def start(self) -> None:
        """Start every adapter, each on its own; a failure is logged by name and skipped."""
        for adapter in self.adapters:
            try:
                await asyncio.wait_for(adapter.start(self.context), self._start_timeout_s)
            except Exception as exc:
                self._errors[adapter.name] = f"failed to start: {type(exc).__name__}: {exc}"
                log.exception("adapter %s failed to start; the server runs on", adapter.name)
            else:
                log.info("adapter %s started (%s)", adapter.name, adapter.state.value)

    async def stop(self) -> None:
        for adapter in reversed(self.adapters):
            try:
                await asyncio.wait_for(adapter.stop(), self._stop_timeout_s)
            except Exception:
                log.exception("adapter %s failed to stop cleanly", adapter.name)

    def status(self) -> list[AdapterStatus]:
        statuses = [
            AdapterStatus(
                name=adapter.name,
                state=adapter.state,
                error=getattr(adapter, "last_error", None) or self._errors.get(adapter.name),
            )
            for adapter in self.adapters
        ]
        running = {adapter.name for adapter in self.adapters}
        statuses.extend(
            AdapterStatus(name=name, state=ConnectionState.DISCONNECTED, error=error)
            for name, error in self._errors.items()
            if name not in running
        )
        return statuses


def install_adapters(
    app: FastAPI,
    db: Database,
    ingest: IngestSink,
    credentials: IngestAuthoriser,
    settings: AdapterSettings | None = None,
    installed: Iterable[EntryPoint] | None = None,
) -> AdapterRuntime:
    """Wire adapters into `app`: started after the app's own startup, stopped before its end.

    Also serves the device registry (`/api/v1/devices`), `GET /api/v1/adapters`, the
    websocket ingest door (`/ws/ingest`) and the session exports
    (`/api/v1/sessions/{id}/export/...`). Call it before any catch-all mount so that these
    routes are reached. The runtime is `app.state.adapters`;
    the alarm engine subscribes to `app.state.adapters.events`.
    """
    settings = settings or AdapterSettings()
    adapters, failures = load_adapters(settings.adapters, installed)
    context = AdapterContext(
        ingest=ingest, devices=DatabaseDeviceDirectory(db), credentials=credentials
    )
    runtime = AdapterRuntime(
        adapters,
        context,
        failures,
        settings.adapter_start_timeout_s,
        settings.adapter_stop_timeout_s,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    # An included router's lifespan nests inside the app's own: the database is open for
    # the adapters' whole life.
    router = APIRouter(lifespan=lifespan)

    @router.get("/api/v1/adapters", response_model=list[AdapterStatus], tags=["adapters"])
    async def adapter_status(_: Admin) -> list[AdapterStatus]:
        """Each configured adapter and its link state; a failed one says why."""
        return runtime.status()

    router.include_router(devices_router)
    router.include_router(exports_router)
    router.include_router(ws_router)
    app.include_router(router)
    app.state.adapters = runtime
    return runtime
