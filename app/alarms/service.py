"""The alarm engine inside the server: samples and session changes in, stored records out.

The engine (`monitor.AlarmEngine`) is pure and runs on the event loop. Every transition
it produces is committed to the database before it is broadcast, in the order it was
made (one lock serialises the commits), so a screen never shows an alarm that a restart
would forget.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime
from pathlib import Path

from fastapi import Request

from app.alarms import repository
from app.alarms.schemas import LimitOverrideOut
from app.errors import FieldProblem, InvalidRequest, NotFoundError
from app.events import (
    AdapterEvent,
    AlarmOut,
    AlarmPublished,
    ConnectionState,
    Fanout,
    LinkEvent,
    StoredBatch,
)
from app.storage.db import Database
from app.timeutil import utcnow
from monitor.conditions import VITAL_INDEX, SampleBatch
from monitor.engine import AlarmEngine
from monitor.lifecycle import AlarmTransition, TransitionEvent
from monitor.protocol import Phase, Protocol, default_protocol, load_protocol
from monitor.vitals import Vital

log = logging.getLogger(__name__)

TICK_S = 1.0


def load_clinic_protocol(path: Path | None) -> Protocol:
    return load_protocol(path) if path is not None else default_protocol()


class AlarmService:
    def __init__(self, db: Database, protocol: Protocol) -> None:
        self._db = db
        # Every stored transition, for the screens (`create_app` subscribes the live view).
        self.published: Fanout[AlarmPublished] = Fanout()
        self.engine = AlarmEngine(protocol)
        self._where: dict[str, tuple[int, int]] = {}  # session key → (chair id, site id)
        self._commit_lock = asyncio.Lock()
        self._ticker: asyncio.Task[None] | None = None
        # Baselines the engine derives are not in its alarm records: keep them ourselves.
        self._baselines: dict[tuple[str, Vital], float | None] = {}

    # --- lifecycle ------------------------------------------------------------------------

    last_tick: float | None = None  # time.monotonic() of the ticker's last turn (readiness)

    async def start(self) -> None:
        """Watch every open session, restore live alarms and overrides, start ticking."""
        now = time.time()
        for session_id, chair_id, site_id, phase in await self._db.run(repository.open_sessions):
            self._watch(session_id, chair_id, site_id, phase, now)
        self.engine.restore(await self._db.run(repository.active_alarm_records))
        for record in await self._db.run(repository.stored_overrides):
            if record.session_key in self._where:
                self.engine.restore_override(record)
        for session_id, vital, value in await self._db.run(repository.stored_baselines):
            if str(session_id) in self._where:
                self.engine.set_baseline(str(session_id), Vital(vital), value)
                self._baselines[(str(session_id), Vital(vital))] = value
        self._ticker = asyncio.create_task(self._tick_forever(), name="vigil-alarm-tick")
        self.last_tick = time.monotonic()

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker

    def _watch(
        self, session_id: int, chair_id: int, site_id: int, phase: Phase, now: float
    ) -> None:
        key = str(session_id)
        # Windows for "no value" start now: a restart must not make every chair look silent.
        self.engine.add_session(key, phase, now)
        self._where[key] = (chair_id, site_id)

    async def _ensure_watched(self, session_id: int) -> bool:
        """Watch an open session the engine does not know yet; False if it is not open."""
        if str(session_id) not in self._where:
            found = await self._db.run(repository.session_chair, session_id)
            # Another request may have started watching it while the query ran.
            if found is not None and found[3] and str(session_id) not in self._where:
                chair_id, site_id, phase, _open = found
                self._watch(session_id, chair_id, site_id, phase, time.time())
        return str(session_id) in self._where

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            self.last_tick = time.monotonic()
            try:
                await self._commit(self.engine.tick(time.time()))
            except Exception:  # a bad tick must not stop alarm evaluation for good
                log.exception("alarm tick failed")

    # --- inputs ---------------------------------------------------------------------------

    async def on_batch(self, batch: StoredBatch) -> None:
        if batch.session_id is None or not await self._ensure_watched(batch.session_id):
            return
        index = self.engine.session_index(str(batch.session_id))
        # Device clocks drift: place the batch on Vigil's clock, keeping its own spacing,
        # with its newest sample at the moment it was received.
        newest = max(o.device_time for o in batch.observations)
        offset = batch.received_time.timestamp() - newest.timestamp()
        samples = SampleBatch.from_arrays(
            [index] * len(batch.observations),
            [VITAL_INDEX[o.vital] for o in batch.observations],
            [o.value for o in batch.observations],
            [o.device_time.timestamp() + offset for o in batch.observations],
            [int(o.quality) for o in batch.observations],
        )
        await self._commit(self.engine.ingest(samples))
        await self._keep_baselines(batch.session_id, {o.vital for o in batch.observations})

    async def _keep_baselines(self, session_id: int, vitals: set[Vital]) -> None:
        key = str(session_id)
        for vital in vitals:
            value = self.engine.baseline(key, vital)
            if value is not None and self._baselines.get((key, vital)) != value:
                self._baselines[(key, vital)] = value
                await self._db.run(
                    repository.store_baseline, session_id, vital.value, value, utcnow()
                )

    async def on_session_changed(self, session_id: int, phase: Phase, ended: bool) -> None:
        key = str(session_id)
        now = time.time()
        if key not in self._where:
            if not ended:
                await self._ensure_watched(session_id)
            return
        if ended:
            transitions = self.engine.remove_session(key, now)
            await self._commit(transitions)
            self._where.pop(key, None)
        else:
            await self._commit(self.engine.set_phase(key, phase, now))

    async def on_adapter_event(self, event: AdapterEvent) -> None:
        """A device's link lost or back: a technical alarm on its chair's open session."""
        if not isinstance(event, LinkEvent) or event.device_identifier is None:
            return
        if event.chair_id is None or event.state is ConnectionState.CONNECTING:
            return
        key = next((k for k, (chair, _) in self._where.items() if chair == event.chair_id), None)
        if key is None:
            return  # an empty chair: nobody to alarm about
        connected = event.state is ConnectionState.CONNECTED
        await self._commit(
            self.engine.link_state(
                key, event.device_identifier, connected=connected, time=event.at.timestamp()
            )
        )

    # --- people's actions -----------------------------------------------------------------

    async def acknowledge(self, alarm_id: str, by: str) -> list[AlarmOut]:
        if not any(a.alarm_id == alarm_id for a in self.engine.active_alarms()):
            raise NotFoundError(f"no active alarm {alarm_id!r}: it was cleared or never existed")
        return await self._commit(self.engine.acknowledge(alarm_id, actor=by, time=time.time()))

    async def pause_audio(self, session_id: int, by: str, seconds: float | None) -> list[AlarmOut]:
        if not await self._ensure_watched(session_id):
            raise NotFoundError(f"no open session {session_id}")
        transitions = self.engine.pause_audio(
            str(session_id), actor=by, time=time.time(), duration_s=seconds
        )
        return await self._commit(transitions)

    async def override_limit(
        self, session_id: int, rule_id: str, limit: float, by: str, reason: str
    ) -> LimitOverrideOut:
        if not await self._ensure_watched(session_id):
            raise NotFoundError(f"no open session {session_id}")
        try:
            self.engine.protocol.rule(rule_id)
        except KeyError:
            known = ", ".join(rule.id for rule in self.engine.protocol.rules)
            raise InvalidRequest(
                [FieldProblem(("body", "rule_id"), f"unknown rule {rule_id!r}; known: {known}")]
            ) from None
        try:
            record = self.engine.override_limit(
                str(session_id), rule_id, limit, who=by, why=reason, time=time.time()
            )
        except ValueError as exc:
            raise InvalidRequest([FieldProblem(("body", "limit"), str(exc))]) from None
        await self._db.run(repository.store_override, record)
        return LimitOverrideOut(
            session_id=session_id,
            rule_id=record.rule_id,
            old=record.old,
            new=record.new,
            by=record.who,
            reason=record.why,
            at=repository.to_datetime(record.time),
            reverted=record.reverted,
        )

    # --- output ---------------------------------------------------------------------------

    async def _commit(self, transitions: list[AlarmTransition]) -> list[AlarmOut]:
        """Store, then publish; in the order the engine made them."""
        if not transitions:
            return []
        chair_of = {key: where[0] for key, where in self._where.items()}
        async with self._commit_lock:
            chairs = await self._db.run(repository.store_transitions, transitions, chair_of)
        alarms = [AlarmOut.of(t, chair) for t, chair in zip(transitions, chairs, strict=True)]
        for transition, alarm in zip(transitions, alarms, strict=True):
            where = self._where.get(transition.session_key)
            if where is not None:
                # A pause says when it ends, so every screen counts down to the same moment.
                until = None
                if transition.event is TransitionEvent.AUDIO_PAUSED:
                    ends = self.engine.audio_paused_until(transition.session_key)
                    until = None if ends is None else datetime.fromtimestamp(ends, UTC)
                await self.published.publish(
                    AlarmPublished(where[1], transition.event, transition.actor, alarm, until)
                )
        return alarms


async def get_alarm_service(request: Request) -> AlarmService:
    """The app's AlarmService (built by `create_app`), as a FastAPI dependency."""
    service: AlarmService = request.app.state.alarms
    return service
