"""Start and stop the configured adapters with the server; one failing adapter harms no other."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from importlib.metadata import EntryPoint

from pydantic import BaseModel

from app.adapters.alerts import DatabaseAlertSenders
from app.adapters.base import Adapter, AdapterContext, IngestAuthoriser, IngestSink
from app.adapters.discovery import LoadFailure, load_adapters
from app.adapters.events import ConnectionState, EventBus
from app.adapters.settings import AdapterSettings
from app.devices.service import DatabaseDeviceDirectory
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


def build_runtime(
    db: Database,
    ingest: IngestSink,
    credentials: IngestAuthoriser,
    settings: AdapterSettings | None = None,
    installed: Iterable[EntryPoint] | None = None,
) -> AdapterRuntime:
    """The configured adapters (`VIGIL_ADAPTERS`), loaded and ready to start.

    `create_app` starts them after the alarm service and stops them first, keeps the
    runtime as `app.state.adapters` and subscribes the alarm engine to its `events`.
    """
    settings = settings or AdapterSettings()
    adapters, failures = load_adapters(settings.adapters, installed)
    context = AdapterContext(
        ingest=ingest,
        devices=DatabaseDeviceDirectory(db),
        credentials=credentials,
        alert_senders=DatabaseAlertSenders(db),
    )
    return AdapterRuntime(
        adapters,
        context,
        failures,
        settings.adapter_start_timeout_s,
        settings.adapter_stop_timeout_s,
    )
