"""The alarm engine inside the server: samples and session changes in, stored records out.

The engine (`monitor.AlarmEngine`) is pure and runs on the event loop, one input at a time
(`_engine_lock`). Committed sample batches are not evaluated one post at a time: `on_batch`
queues them and one task evaluates everything queued, across all sessions, in one
`SampleBatch` as soon as the loop is free (a writer group's posts together, keeping each
session's order); every other input (a tick, a session change, a person's action) first
evaluates what is queued, so the engine sees inputs in the order they came.

Every transition goes to the alarm outbox (`app.alarms.outbox`), which stores it in order
and survives a database outage and a restart, and to the screens at once, marked not yet
stored: a nurse must see an alarm while the database is down. A second message says when
it is stored. People's actions (acknowledge, audio pause) are answered once stored, or
with a 503 saying they will be.
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
from app.alarms.device_alerts import DeviceAlertMapper
from app.alarms.nibp import NibpSchedule, nibp_schedule, open_session_intervals
from app.alarms.outbox import JOURNAL_FILE, AlarmOutbox
from app.alarms.repository import AlarmWrite, BaselineWrite, TransitionWrite
from app.alarms.schemas import LimitOverrideOut
from app.errors import (
    DependencyUnavailable,
    FieldProblem,
    InvalidRequest,
    NotFoundError,
    database_unreachable,
)
from app.events import (
    AdapterEvent,
    AlarmOut,
    AlarmPublished,
    AlarmStored,
    ConnectionState,
    DeviceAlert,
    Fanout,
    LinkEvent,
    StoredBatch,
)
from app.storage.db import Database
from app.storage.health import DatabaseHealth
from app.timeutil import utcnow
from monitor.conditions import VITAL_INDEX, SampleBatch
from monitor.engine import AlarmEngine
from monitor.lifecycle import AlarmTransition, TransitionEvent
from monitor.protocol import Phase, Protocol, default_protocol, load_protocol
from monitor.vitals import Vital

log = logging.getLogger(__name__)

TICK_S = 1.0
# How long a person's action waits for its transitions to be stored before the answer says
# they will be (a healthy write takes milliseconds; an outage is known sooner than this).
ACTION_STORE_WAIT_S = 5.0


def load_clinic_protocol(path: Path | None) -> Protocol:
    return load_protocol(path) if path is not None else default_protocol()


class AlarmService:
    def __init__(
        self,
        db: Database,
        protocol: Protocol,
        *,
        data_dir: Path | None = None,
        health: DatabaseHealth | None = None,
    ) -> None:
        """`data_dir` holds the outbox's journal (`JOURNAL_FILE`); `health` hears of outages
        the outbox meets, and tells it when the database is back."""
        self._db = db
        self._health = health
        # Every transition as it happens, then the news that it is stored, for the screens
        # (`create_app` subscribes the live view).
        self.published: Fanout[AlarmPublished | AlarmStored] = Fanout()
        self.engine = AlarmEngine(protocol)
        self._where: dict[str, tuple[int, int]] = {}  # open session key → (chair id, site id)
        # Every session's place, kept after it ends: its last transitions are stored later.
        self._placed: dict[str, tuple[int, int]] = {}
        self._engine_lock = asyncio.Lock()
        self._ticker: asyncio.Task[None] | None = None
        self._evaluator: asyncio.Task[None] | None = None
        # Committed batches not evaluated yet, in the order they were committed.
        self._queued: list[StoredBatch] = []
        self._batches_queued = asyncio.Event()
        self.evaluations = 0  # engine calls for samples (one per loop turn with batches)
        self.batches_evaluated = 0
        # Baselines the engine derives are not in its alarm records: keep them ourselves.
        self._baselines: dict[tuple[str, Vital], float | None] = {}
        self._device_alerts = DeviceAlertMapper()
        journal = (data_dir if data_dir is not None else Path("data")) / JOURNAL_FILE
        self.outbox = AlarmOutbox(db, journal, self._confirm_stored, health)

    # --- lifecycle ------------------------------------------------------------------------

    last_tick: float | None = None  # time.monotonic() of the ticker's last turn (readiness)

    async def start(self) -> None:
        """Store what the outbox journaled before a restart, watch every open session,
        restore live alarms and overrides, start evaluating and ticking."""
        await self.outbox.replay()
        now = time.time()
        for session_id, chair_id, site_id, phase in await self._db.read(repository.open_sessions):
            self._watch(session_id, chair_id, site_id, phase, now)
        self.engine.restore(await self._db.read(repository.active_alarm_records))
        for record in await self._db.read(repository.stored_overrides):
            if record.session_key in self._where:
                self.engine.restore_override(record)
        for session_id, vital, value in await self._db.read(repository.stored_baselines):
            if str(session_id) in self._where:
                self.engine.set_baseline(str(session_id), Vital(vital), value)
                self._baselines[(str(session_id), Vital(vital))] = value
        self.outbox.start()
        self._evaluator = asyncio.create_task(self._evaluate_forever(), name="vigil-alarm-eval")
        self._ticker = asyncio.create_task(self._tick_forever(), name="vigil-alarm-tick")
        self.last_tick = time.monotonic()

    async def stop(self) -> None:
        """Evaluate what is queued, then give the outbox its time to store everything (what
        it cannot store is journaled for the next start)."""
        for task in (self._ticker, self._evaluator):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        try:
            async with self._engine_lock:
                await self._evaluate_queued()
        except Exception:
            log.exception("evaluating the last samples at shutdown failed")
        await self.outbox.stop()

    def _watch(
        self, session_id: int, chair_id: int, site_id: int, phase: Phase, now: float
    ) -> None:
        key = str(session_id)
        # Windows for "no value" start now: a restart must not make every chair look silent.
        self.engine.add_session(key, phase, now)
        self._where[key] = self._placed[key] = (chair_id, site_id)

    async def _ensure_watched(self, session_id: int) -> bool:
        """Watch an open session the engine does not know yet; False if it is not open."""
        if str(session_id) not in self._where:
            found = await self._db.read(repository.session_chair, session_id)
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
                async with self._engine_lock:
                    await self._evaluate_queued()
                    await self._commit(self.engine.tick(time.time()))
            except Exception:  # a bad tick must not stop alarm evaluation for good
                log.exception("alarm tick failed")

    async def _evaluate_forever(self) -> None:
        while True:
            await self._batches_queued.wait()
            self._batches_queued.clear()
            try:
                async with self._engine_lock:
                    await self._evaluate_queued()
            except Exception:  # a bad batch must not stop alarm evaluation for good
                log.exception("alarm evaluation failed")

    # --- inputs ---------------------------------------------------------------------------

    async def on_batch(self, batch: StoredBatch) -> None:
        """Queue a committed batch; it is evaluated with everything else queued as soon as
        the loop is free (no timer: a writer group's posts arrive within one loop turn)."""
        if batch.session_id is None or not batch.observations:
            return
        self._queued.append(batch)
        self._batches_queued.set()

    async def _evaluate_queued(self) -> None:
        """Evaluate every queued batch in one engine call; hold `_engine_lock`.

        Sessions the engine does not watch yet are looked up first. A lookup that cannot
        reach the database leaves that session's batches queued, in order, for the next
        turn; the other sessions' batches go on.
        """
        looked_up: set[int] = set()
        unreachable: set[int] = set()
        while True:
            unknown = {
                b.session_id
                for b in self._queued
                if b.session_id is not None
                and str(b.session_id) not in self._where
                and b.session_id not in looked_up
            }
            if not unknown:
                break
            for session_id in unknown:
                looked_up.add(session_id)
                try:
                    await self._ensure_watched(session_id)
                except Exception as exc:
                    if not database_unreachable(exc):
                        raise
                    if self._health is not None:
                        self._health.report_failure(exc)
                    unreachable.add(session_id)
        batches = [b for b in self._queued if b.session_id not in unreachable]
        self._queued = [b for b in self._queued if b.session_id in unreachable]
        watched = [b for b in batches if str(b.session_id) in self._where]
        if not watched:
            return
        transitions = self.engine.ingest(self._sample_batch(watched))
        self.evaluations += 1
        self.batches_evaluated += len(watched)
        await self._commit(transitions, self._new_baselines(watched))

    def _sample_batch(self, batches: list[StoredBatch]) -> SampleBatch:
        """One `SampleBatch` of several sessions' batches, each session's in commit order."""
        sessions: list[int] = []
        vitals: list[int] = []
        values: list[float] = []
        times: list[float] = []
        qualities: list[int] = []
        measured: list[float] = []  # the device's own times: a reading is new only if its time is
        for batch in batches:
            index = self.engine.session_index(str(batch.session_id))
            observations = batch.observations
            # Device clocks drift: place the batch on Vigil's clock, keeping its own spacing,
            # with its newest sample at the moment it was received.
            newest = max(o.device_time for o in observations)
            offset = batch.received_time.timestamp() - newest.timestamp()
            sessions += [index] * len(observations)
            vitals += [VITAL_INDEX[o.vital] for o in observations]
            values += [o.value for o in observations]
            times += [o.device_time.timestamp() + offset for o in observations]
            qualities += [int(o.quality) for o in observations]
            measured += [o.device_time.timestamp() for o in observations]
        return SampleBatch.from_arrays(sessions, vitals, values, times, qualities, measured)

    def _new_baselines(self, batches: list[StoredBatch]) -> list[AlarmWrite]:
        """Baselines the engine derived from these batches that are not stored yet."""
        writes: list[AlarmWrite] = []
        now = utcnow()
        seen: set[tuple[str, Vital]] = set()
        for batch in batches:
            key = str(batch.session_id)
            for observation in batch.observations:
                if (key, observation.vital) in seen or key not in self._where:
                    continue
                seen.add((key, observation.vital))
                value = self.engine.baseline(key, observation.vital)
                if value is not None and self._baselines.get((key, observation.vital)) != value:
                    self._baselines[(key, observation.vital)] = value
                    writes.append(BaselineWrite(int(key), observation.vital.value, value, now))
        return writes

    async def on_session_changed(self, session_id: int, phase: Phase, ended: bool) -> None:
        key = str(session_id)
        async with self._engine_lock:
            await self._evaluate_queued()  # samples committed before the change come first
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
        async with self._engine_lock:
            await self._evaluate_queued()
            await self._commit(
                self.engine.link_state(
                    key, event.device_identifier, connected=connected, time=event.at.timestamp()
                )
            )

    async def on_device_alert(self, event: AdapterEvent) -> None:
        """A device's own alert (NIBP cycle failed, SpO2 probe off, an equipment fault):
        the documented technical alarm on its chair's open session, stored and broadcast
        before the door that brought it answers (docs/ALARMS.md, "From the wire")."""
        if not isinstance(event, DeviceAlert) or event.chair_id is None:
            return
        key = next((k for k, (chair, _) in self._where.items() if chair == event.chair_id), None)
        if key is None:
            return  # an empty chair: nobody to alarm about
        await self._commit(self._device_alerts.transitions(self.engine, key, event))

    async def set_nibp_interval(self, session_id: int, seconds: float | None) -> NibpSchedule:
        """The session's NIBP interval, in force at once (None: the phase's default); the
        caller has stored it. Returns what now applies, with the NIBP-stale wait."""
        if not await self._ensure_watched(session_id):
            raise NotFoundError(f"no open session {session_id}")
        key = str(session_id)
        self.engine.set_nibp_interval(key, seconds)
        return nibp_schedule(self.engine.protocol, self.engine.phase(key), seconds)

    async def restore_nibp_intervals(self) -> None:
        """After `start`: give the engine the NIBP interval stored for each open session."""
        for session_id, seconds in await self._db.run(open_session_intervals):
            if str(session_id) in self._where:
                self.engine.set_nibp_interval(str(session_id), seconds)

    # --- people's actions -----------------------------------------------------------------

    async def acknowledge(self, alarm_id: str, by: str) -> list[AlarmOut]:
        async with self._engine_lock:
            if not any(a.alarm_id == alarm_id for a in self.engine.active_alarms()):
                raise NotFoundError(
                    f"no active alarm {alarm_id!r}: it was cleared or never existed"
                )
            transitions = self.engine.acknowledge(alarm_id, actor=by, time=time.time())
            alarms, receipt = await self._queue(transitions)
        await self._wait_stored(receipt, "acknowledgement")
        return alarms

    async def pause_audio(self, session_id: int, by: str, seconds: float | None) -> list[AlarmOut]:
        if not await self._ensure_watched(session_id):
            raise NotFoundError(f"no open session {session_id}")
        async with self._engine_lock:
            transitions = self.engine.pause_audio(
                str(session_id), actor=by, time=time.time(), duration_s=seconds
            )
            alarms, receipt = await self._queue(transitions)
        await self._wait_stored(receipt, "audio pause")
        return alarms

    async def _wait_stored(self, receipt: asyncio.Future[bool], what: str) -> None:
        """Return once `receipt` says stored; a 503 if the database cannot be reached (the
        action has taken effect on every screen, and the outbox will store it)."""
        stored = False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(ACTION_STORE_WAIT_S):
                stored = await asyncio.shield(receipt)
        if not stored:
            raise DependencyUnavailable(
                "database",
                f"The {what} is shown on every screen but Vigil cannot reach its database; "
                "it will be stored, in order, when the database is back.",
            )

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

    async def _commit(
        self, transitions: list[AlarmTransition], baselines: list[AlarmWrite] | None = None
    ) -> list[AlarmOut]:
        """Queue for storing, then show on every screen; in the order the engine made them."""
        alarms, _ = await self._queue(transitions, baselines)
        return alarms

    async def _queue(
        self, transitions: list[AlarmTransition], baselines: list[AlarmWrite] | None = None
    ) -> tuple[list[AlarmOut], asyncio.Future[bool]]:
        """`_commit`, with the receipt that says when (or whether yet) it is all stored."""
        writes: list[AlarmWrite] = []
        for transition in transitions:
            chair_id, site_id = self._placed[transition.session_key]
            writes.append(TransitionWrite(transition, chair_id, site_id))
        writes += baselines or []
        receipt = self.outbox.put(writes)
        alarms = [
            AlarmOut.of(w.transition, w.chair_id) for w in writes if isinstance(w, TransitionWrite)
        ]
        try:
            for transition, alarm in zip(transitions, alarms, strict=True):
                # A pause says when it ends, so every screen counts down to the same moment.
                until = None
                if transition.event is TransitionEvent.AUDIO_PAUSED:
                    ends = self.engine.audio_paused_until(transition.session_key)
                    until = None if ends is None else datetime.fromtimestamp(ends, UTC)
                site_id = self._placed[transition.session_key][1]
                await self.published.publish(
                    AlarmPublished(
                        site_id, transition.event, transition.actor, alarm, until, stored=False
                    )
                )
        finally:
            self.outbox.wake()  # after the screens have it: "stored" never comes first
        return alarms, receipt

    async def _confirm_stored(self, writes: list[AlarmWrite]) -> None:
        """The outbox stored `writes`: tell the screens which transitions."""
        for write in writes:
            if isinstance(write, TransitionWrite):
                transition = write.transition
                await self.published.publish(
                    AlarmStored(
                        write.site_id,
                        write.chair_id,
                        int(transition.session_key),
                        transition.alarm_id,
                        transition.event,
                        repository.to_datetime(transition.time),
                    )
                )


async def get_alarm_service(request: Request) -> AlarmService:
    """The app's AlarmService (built by `create_app`), as a FastAPI dependency."""
    service: AlarmService = request.app.state.alarms
    return service
