"""The adapter interface: lifecycle, connection state, and the one door to ingest.

An adapter turns a device protocol (HL7 over MLLP, MQTT, ...) into Vigil's own
observation batches and hands them to `AdapterContext.submit`, which runs the same
validation, storage and live publication as `POST /api/v1/observations`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from pydantic import ValidationError

from app.adapters.alerts import DeviceAlertIn, build_alert
from app.adapters.events import ConnectionState, EventBus, LinkEvent
from app.devices.schemas import DeviceRef as DeviceRef
from app.errors import FieldProblem, InvalidRequest, NotAuthenticated, VigilError
from app.events import DeviceAlert, StoredBatch
from app.ingest.schemas import IngestAccepted, ObservationBatchIn
from app.observability.metrics import enter_door
from app.timeutil import utcnow

log = logging.getLogger(__name__)


class AdapterError(VigilError):
    """An adapter could not be found, loaded or started."""

    code = "adapter_error"


class IngestAuthoriser(Protocol):
    """Checks a device credential against the device a batch is for (raises if refused)."""

    async def device_caller(self, token: str | None) -> object:
        """Who the credential belongs to; raises when it is unknown or revoked."""
        ...


class _RefuseAll:
    async def device_caller(self, token: str | None) -> object:
        raise NotAuthenticated("no credential check is configured: token doors are closed")


class IngestSink(Protocol):
    """Where batches go: `app.ingest.service.IngestService` in the server."""

    async def ingest(self, batch: ObservationBatchIn, *, credential: str | None) -> StoredBatch:
        """Store it; `credential` is the sender's device credential (None: the door vouched)."""
        ...


class AlertSenders(Protocol):
    """Who may report alerts for which device: `app.adapters.alerts.DatabaseAlertSenders`."""

    async def sender(self, identifier: str, credential: str | None) -> DeviceRef:
        """The device, where it is bound now; raises 401, 403 or 404 like HTTP ingest."""
        ...


class _NoAlertSenders:
    async def sender(self, identifier: str, credential: str | None) -> DeviceRef:
        raise NotAuthenticated("no alert sender check is configured: alert doors are closed")


class DeviceDirectory(Protocol):
    """Finds the registered device among the identifiers a message carries."""

    async def find(self, candidates: Sequence[str]) -> DeviceRef | None:
        """The first candidate that is a registered device, or None."""
        ...


@dataclass(frozen=True)
class AdapterContext:
    """What the runtime gives every adapter when it starts."""

    ingest: IngestSink
    devices: DeviceDirectory
    events: EventBus = field(default_factory=EventBus)
    credentials: IngestAuthoriser = field(default_factory=_RefuseAll)
    alert_senders: AlertSenders = field(default_factory=_NoAlertSenders)

    async def submit(self, batch: ObservationBatchIn) -> StoredBatch:
        """Validate, normalise, store and publish one device's batch, exactly as HTTP ingest.

        Raises what HTTP ingest answers with: `NotFoundError` (404) for an unknown device,
        `InvalidRequest` (422) naming each implausible or malformed field.
        """
        return await self.ingest.ingest(batch, credential=None)

    async def submit_with_credential(
        self, token: str | None, batch: ObservationBatchIn
    ) -> StoredBatch:
        """`submit` for token doors (websocket, MQTT): the credential is checked on every
        batch, so a revoked one stops at its next batch, whatever door it uses."""
        if not token:
            raise NotAuthenticated("a device credential is required")
        return await self.ingest.ingest(batch, credential=token)

    async def submit_alert(
        self, alert: DeviceAlertIn, *, credential: str | None, adapter: str, reference: str = ""
    ) -> DeviceAlert:
        """Check the sender's credential, then publish a JSON door's alert on the event bus.

        Raises what HTTP ingest would: `NotAuthenticated` (401) without a live credential,
        `Forbidden` (403) for a device it does not cover, `NotFoundError` (404) for an
        unknown device. When this returns, the alarm service has turned the alert into
        its alarm, stored and broadcast.
        """
        if not credential:
            raise NotAuthenticated("a device credential is required")
        device = await self.alert_senders.sender(alert.device_id, credential)
        event = build_alert(
            alert, device, adapter=adapter, received_time=utcnow(), reference=reference
        )
        await self.events.publish(event)
        return event


def validate_batch(data: object) -> ObservationBatchIn:
    """A wire batch (decoded JSON, or dicts an adapter built) as `ObservationBatchIn`.

    Structural problems raise `InvalidRequest` with the locations HTTP ingest reports
    (``("body", "observations", 0, "value")``), so every door words its errors alike.
    """
    try:
        return ObservationBatchIn.model_validate(data)
    except ValidationError as exc:
        raise InvalidRequest(
            [
                FieldProblem(("body", *error["loc"]), error["msg"], error["type"])
                for error in exc.errors()
            ]
        ) from None


def accepted_reply(stored: StoredBatch) -> dict[str, object]:
    """HTTP ingest's 201 answer, as a JSON-able dict with its status code."""
    return {"status": 201, **IngestAccepted.of(stored).model_dump(mode="json")}


def error_reply(exc: VigilError) -> dict[str, object]:
    """The HTTP answer `exc` maps to, as a JSON-able dict with its status code."""
    return {"status": exc.status_code, **exc.body()}


@runtime_checkable
class Adapter(Protocol):
    """A device protocol adapter, started and stopped with the server.

    `start` returns once the adapter is serving (or has failed; it then keeps retrying
    on its own); `stop` releases every socket and task. `state` is the adapter's own link:
    connecting → connected → disconnected.
    """

    name: str

    @property
    def state(self) -> ConnectionState: ...

    async def start(self, context: AdapterContext) -> None: ...

    async def stop(self) -> None: ...


class BaseAdapter(ABC):
    """An adapter whose `run` is supervised: restarted with backoff after any failure.

    Subclasses implement `run`, which serves until cancelled and calls `mark_connected`
    once it is up. An exception from `run` is logged with the adapter's name, the state
    goes to disconnected, and `run` is called again after 1 s, 2 s, ... up to 30 s.
    """

    name: str = "adapter"
    # Errors that mean "the other end is not there": logged in one line, no traceback.
    expected_errors: tuple[type[BaseException], ...] = (OSError,)
    restart_initial_s: float = 1.0
    restart_max_s: float = 30.0
    ready_timeout_s: float = 10.0

    def __init__(self, name: str | None = None) -> None:
        if name is not None:
            self.name = name
        self._state = ConnectionState.DISCONNECTED
        self._context: AdapterContext | None = None
        self._task: asyncio.Task[None] | None = None
        self._settled = asyncio.Event()  # up, or failed its first attempt
        self.last_error: str | None = None

    @property
    def state(self) -> ConnectionState:
        return self._state

    @property
    def context(self) -> AdapterContext:
        if self._context is None:
            raise AdapterError(f"adapter {self.name!r} is not started")
        return self._context

    @abstractmethod
    async def run(self) -> None:
        """Serve until cancelled; call `mark_connected` when ready."""

    async def start(self, context: AdapterContext) -> None:
        """Start the supervised `run`; return when it is up, or failed on its first try.

        Either way the supervisor keeps it running (or retrying) in the background.
        """
        if self._task is not None:
            raise AdapterError(f"adapter {self.name!r} is already started")
        self._context = context
        self._settled = asyncio.Event()
        self._task = asyncio.create_task(self._supervise(), name=f"vigil-adapter-{self.name}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._settled.wait(), self.ready_timeout_s)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._context is not None and self._state is not ConnectionState.DISCONNECTED:
            await self._set_state(ConnectionState.DISCONNECTED, "stopped")

    async def mark_connected(self, detail: str | None = None) -> None:
        """Tell the supervisor (and the event bus) that `run` is serving."""
        self.last_error = None
        await self._set_state(ConnectionState.CONNECTED, detail)
        self._settled.set()

    async def publish_link(
        self,
        state: ConnectionState,
        device: DeviceRef,
        peer: str | None = None,
        reason: str | None = None,
    ) -> None:
        """Report a device's own link state (for the alarm engine)."""
        await self.context.events.publish(
            LinkEvent(
                self.name,
                state,
                utcnow(),
                device.identifier,
                device.chair_id,
                device.site_id,
                peer,
                reason,
            )
        )

    async def _supervise(self) -> None:
        enter_door(self.name)  # the batches this adapter hands to ingest are counted as its
        delay = self.restart_initial_s
        loop = asyncio.get_running_loop()
        while True:
            await self._set_state(ConnectionState.CONNECTING)
            began = loop.time()
            try:
                await self.run()
                reason = "stopped serving"
            except asyncio.CancelledError:
                raise
            except self.expected_errors as exc:
                reason = f"{type(exc).__name__}: {exc}"
                log.warning("adapter %s: %s; retrying in %g s", self.name, reason, delay)
            except Exception as exc:
                reason = f"{type(exc).__name__}: {exc}"
                log.exception("adapter %s failed; retrying in %g s", self.name, delay)
            self.last_error = reason
            await self._set_state(ConnectionState.DISCONNECTED, reason)
            self._settled.set()
            if loop.time() - began > self.restart_max_s:
                delay = self.restart_initial_s  # it ran well for a while: start over
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.restart_max_s)

    async def _set_state(self, state: ConnectionState, reason: str | None = None) -> None:
        if state is self._state:
            return
        self._state = state
        log.info("adapter %s %s%s", self.name, state.value, f" ({reason})" if reason else "")
        if self._context is not None:
            await self._context.events.publish(LinkEvent(self.name, state, utcnow(), reason=reason))
