"""Prometheus metrics (`GET /metrics`): what a clinic's IT person graphs and alerts on.

What is counted, and where:

- every batch or message a device door answers, by door (`http`, `ws`, `mllp`, `mqtt`) and
  outcome (`accepted`, or the refusal's class), where the door answers;
- the samples of every batch that reaches ingest, stored or refused, by door;
- each group commit of the sample writer (latency, batches in the group), and the batches
  handed to ingest and not yet answered (the writer's queue plus the group being stored);
- device → screen latency: from a batch's `received_time` to each websocket send of it;
- screens subscribed, resyncs sent, alarms raised by priority and kind, the alarm ticker's
  age, adapter and device link states, database reachability (those read at scrape time).

Hot-path cost: a counter increment or two per batch (`inc(n)`, never per sample) and no
label per device, patient or site: device links are counted by state, not listed.

Every app has a registry of its own (`VigilMetrics`; tests build many apps in one process).
The code that counts holds no reference to it: `MetricsMiddleware` makes its app's metrics
the current ones for every request, websocket and the lifespan (so also for the tasks the
lifespan starts: the alarm ticker, the adapters), and a call site counts with one line such
as `door_answered("mqtt", 201)`. Where no app's metrics are current (a service built on its
own in a test), counting does nothing.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sized
from contextlib import AbstractContextManager, nullcontext
from contextvars import ContextVar
from datetime import datetime
from typing import Protocol, TypeVar

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import VigilError
from monitor.protocol import AlarmKind, Priority

CONTENT_TYPE = CONTENT_TYPE_LATEST

DOORS = ("http", "ws", "mllp", "mqtt")
# A refusal's class, from the HTTP status the door answers with (or would: MLLP's ACK codes
# are mapped to the same classes). The outcome label is "accepted" or one of these.
REFUSALS = ("invalid", "credential", "unknown_device", "busy", "error")
LINK_STATES = ("connecting", "connected", "disconnected")
INGEST_PATH = "/api/v1/observations"
WS_INGEST_PATH = "/ws/ingest"
# Screens' sends are matched to the batch they carry by (site, seq); this many recent
# batches are remembered (about a minute at 300 chairs), so memory stays bounded.
PUBLISHED_KEPT = 20_000
# HL7 table 0357 codes Vigil's MLLP listener answers with (app/adapters/hl7_messages.py).
_HL7_UNKNOWN_KEY = "204"
_HL7_INTERNAL = "207"


def refusal_class(status: int) -> str:
    """The outcome label of an answer with HTTP `status`."""
    if status < 300:
        return "accepted"
    if status in (401, 403):
        return "credential"
    if status == 404:
        return "unknown_device"
    if status in (429, 503):
        return "busy"
    if 400 <= status < 500:
        return "invalid"
    return "error"


def hl7_outcome(ack_code: str, error_code: str | None) -> str:
    """The outcome label of an MLLP answer: AA is accepted; AE and AR by their error code."""
    if ack_code == "AA":
        return "accepted"
    if error_code == _HL7_UNKNOWN_KEY:
        return "unknown_device"
    if error_code == _HL7_INTERNAL:
        return "error"
    return "invalid"


class VigilMetrics:
    """One app's metrics, in a registry of its own."""

    def __init__(self) -> None:
        # No `_created` series: a timestamp per labelled counter doubles the scrape for
        # nothing a dashboard uses (process-wide in prometheus-client, and idempotent).
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry()
        registry = self.registry
        self.messages = Counter(
            "vigil_ingest_messages",
            "Batches and messages a device door answered, by door and outcome (accepted, "
            "or the refusal's class: invalid, credential, unknown_device, busy, error).",
            ["door", "outcome"],
            registry=registry,
        )
        self.samples = Counter(
            "vigil_ingest_samples",
            "Samples of batches that reached ingest, by door and outcome: accepted are "
            "stored (resent ones already stored are not counted again); refused ones by "
            "class. A batch a door cannot read at all has no samples to count.",
            ["door", "outcome"],
            registry=registry,
        )
        self.commit_seconds = Histogram(
            "vigil_ingest_commit_seconds",
            "Each group commit of the sample writer (one transaction), from handing it to "
            "the database thread to its commit: waiting behind other database work included.",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=registry,
        )
        self.group_batches = Histogram(
            "vigil_ingest_commit_group_batches",
            "Batches stored together in one group commit.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=registry,
        )
        self.batches_waiting = Gauge(
            "vigil_ingest_batches_waiting",
            "Batches handed to ingest and not yet answered: the sample writer's queue plus "
            "the group being committed.",
            registry=registry,
        )
        self.screen_latency = Histogram(
            "vigil_live_device_to_screen_seconds",
            "From a batch's arrival (its received_time) to its websocket send to each screen.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=registry,
        )
        self.resyncs = Counter(
            "vigil_live_resyncs",
            "Resyncs sent to screens (fell behind, the site changed, or the screen asked).",
            registry=registry,
        )
        self.alarms_raised = Counter(
            "vigil_alarms_raised",
            "Alarms raised, by priority and kind (physiological or technical).",
            ["priority", "kind"],
            registry=registry,
        )
        self.database_up = Gauge(
            "vigil_database_up",
            "1 when the database answered a query at the last scrape, else 0.",
            registry=registry,
        )
        self._screens = Gauge(
            "vigil_live_websocket_clients",
            "Screens subscribed to a site's live feed now.",
            registry=registry,
        )
        self._tick_age = Gauge(
            "vigil_alarm_tick_age_seconds",
            "Seconds since the alarm service's ticker last turned (NaN before it started).",
            registry=registry,
        )
        self._adapters: Callable[[], Iterable[tuple[str, str]]] = tuple
        self._device_links: dict[str, str] = {}  # device identifier → link state
        registry.register(_LinkCollector(self))
        self._messages: dict[tuple[str, str], Counter] = {}
        self._samples: dict[tuple[str, str], Counter] = {}
        # (site, seq) → received, epoch s; oldest first (popitem(last=False) is O(1), where a
        # plain dict's first key is found by walking past every entry deleted before it).
        self._published: OrderedDict[tuple[int, int], float] = OrderedDict()
        for priority in Priority:  # every series exists from the start, at 0
            for kind in AlarmKind:
                self.alarms_raised.labels(priority.value, kind.value)
        for door in DOORS:
            for outcome in ("accepted", *REFUSALS):
                self._messages[door, outcome] = self.messages.labels(door, outcome)
                self._samples[door, outcome] = self.samples.labels(door, outcome)

    # --- what create_app wires: state read at scrape time, and events -------------------

    def watch(
        self,
        *,
        screens: Callable[[], int],
        tick_age: Callable[[], float | None],
        adapters: Callable[[], Iterable[tuple[str, str]]],
    ) -> None:
        """Read these at every scrape: screens subscribed, seconds since the alarm ticker's
        last turn (None before it started), and each adapter's (name, link state)."""
        self._screens.set_function(lambda: float(screens()))
        self._tick_age.set_function(lambda: _nan_if_none(tick_age()))
        self._adapters = adapters

    def alarm_raised(self, priority: str, kind: str) -> None:
        self.alarms_raised.labels(priority, kind).inc()

    def device_link(self, device_identifier: str, state: str) -> None:
        """A device's link changed state (an adapter's event)."""
        self._device_links[device_identifier] = state

    def render(self, *, database_up: bool) -> bytes:
        """The Prometheus text exposition, with the database check just made."""
        self.database_up.set(1 if database_up else 0)
        return generate_latest(self.registry)

    # --- counting (through the module's functions below) --------------------------------

    def answered(self, door: str, outcome: str) -> None:
        counter = self._messages.get((door, outcome))
        if counter is None:  # a door or outcome not foreseen: counted all the same
            counter = self._messages[door, outcome] = self.messages.labels(door, outcome)
        counter.inc()

    def ingested(self, door: str, outcome: str, samples: int) -> None:
        counter = self._samples.get((door, outcome))
        if counter is None:
            counter = self._samples[door, outcome] = self.samples.labels(door, outcome)
        counter.inc(samples)

    def published(self, site_id: int, seq: int, received_epoch: float) -> None:
        published = self._published
        published[site_id, seq] = received_epoch
        if len(published) > PUBLISHED_KEPT:
            published.popitem(last=False)

    def sent(self, site_id: int, seq: int) -> None:
        received = self._published.get((site_id, seq))
        if received is not None:
            self.screen_latency.observe(max(0.0, time.time() - received))

    def link_counts(self) -> dict[str, int]:
        counts = dict.fromkeys(LINK_STATES, 0)
        for state in self._device_links.values():
            counts[state] = counts.get(state, 0) + 1
        return counts

    def adapter_states(self) -> Iterable[tuple[str, str]]:
        return self._adapters()


class _LinkCollector(Collector):
    """Adapter link states (one series per configured adapter and state, 1 for its current
    state) and device links counted by state, read at scrape time."""

    def __init__(self, metrics: VigilMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        adapters = GaugeMetricFamily(
            "vigil_adapter_state",
            "Each configured adapter's own link (listener, broker): 1 for its current state.",
            labels=["adapter", "state"],
        )
        for name, current in self._metrics.adapter_states():
            for state in LINK_STATES:
                adapters.add_metric([name, state], 1.0 if state == current else 0.0)
        yield adapters
        devices = GaugeMetricFamily(
            "vigil_device_links",
            "Devices by the state of their link to Vigil, as adapters last reported it.",
            labels=["state"],
        )
        for state, count in self._metrics.link_counts().items():
            devices.add_metric([state], float(count))
        yield devices


def _nan_if_none(value: float | None) -> float:
    return math.nan if value is None else value


# --- the current app's metrics, and the call sites' one-liners ----------------------------

_active: ContextVar[VigilMetrics | None] = ContextVar("vigil_metrics", default=None)
# The door a batch came in by, for the samples ingest counts: HTTP unless a door says so.
_door: ContextVar[str] = ContextVar("vigil_door", default="http")


def enter_door(door: str) -> None:
    """Batches handed to ingest from this task (and the tasks it starts) came by `door`."""
    _door.set(door)


def door_answered(door: str, status: int) -> None:
    """A door answered a batch or message with HTTP `status` (or its equivalent)."""
    metrics = _active.get()
    if metrics is not None:
        metrics.answered(door, refusal_class(status))


def hl7_answered(ack_code: str, error_code: str | None) -> None:
    """The MLLP listener answered a message with `ack_code` (AA, AE, AR)."""
    metrics = _active.get()
    if metrics is not None:
        metrics.answered("mllp", hl7_outcome(ack_code, error_code))


def commit_timer(group_batches: int) -> AbstractContextManager[object]:
    """Time one group commit of the sample writer: `with commit_timer(len(group)): ...`."""
    metrics = _active.get()
    if metrics is None:
        return nullcontext()
    metrics.group_batches.observe(group_batches)
    return metrics.commit_seconds.time()


def samples_published(site_id: int, seq: int, received_time: datetime) -> None:
    """A batch went to the site's screens as delta `seq`."""
    metrics = _active.get()
    if metrics is not None:
        metrics.published(site_id, seq, received_time.timestamp())


def delta_sent(site_id: int, seq: int) -> None:
    """Delta `seq` of the site was sent to one screen."""
    metrics = _active.get()
    if metrics is not None:
        metrics.sent(site_id, seq)


def screen_resynced() -> None:
    metrics = _active.get()
    if metrics is not None:
        metrics.resyncs.inc()


class _HasObservations(Protocol):
    @property
    def observations(self) -> Sized: ...


StoredT = TypeVar("StoredT", bound=_HasObservations)


async def count_ingest(attempt: Awaitable[StoredT], samples: int) -> StoredT:
    """Await ingest's `attempt` for a batch of `samples`; count its samples, stored or
    refused, under the current door, and the batch while it waits."""
    metrics = _active.get()
    if metrics is None:
        return await attempt
    door = _door.get()
    metrics.batches_waiting.inc()
    try:
        stored = await attempt
    except VigilError as exc:
        metrics.ingested(door, refusal_class(exc.status_code), samples)
        raise
    except Exception:
        metrics.ingested(door, "error", samples)
        raise
    finally:
        metrics.batches_waiting.dec()
    metrics.ingested(door, "accepted", len(stored.observations))
    return stored


class MetricsMiddleware:
    """Makes `metrics` the current ones for every request, websocket and the lifespan of
    the app it wraps, and counts the answers of the HTTP device door (`POST
    /api/v1/observations`, whatever refused it: the body's shape, the credential, ingest).

    Plain ASGI: the device door is called every second per chair.
    """

    def __init__(self, app: ASGIApp, *, metrics: VigilMetrics) -> None:
        self._app = app
        self._metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        token = _active.set(self._metrics)
        path = scope.get("path")
        door = _door.set("ws" if path == WS_INGEST_PATH else "http")
        try:
            if scope["type"] == "http" and path == INGEST_PATH and scope["method"] == "POST":
                send = self._counting(send)
            await self._app(scope, receive, send)
        finally:
            _door.reset(door)
            _active.reset(token)

    def _counting(self, send: Send) -> Send:
        metrics = self._metrics

        async def send_counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                metrics.answered("http", refusal_class(message["status"]))
            await send(message)

        return send_counted
