"""Ingest: validate, normalise, commit, then publish; nothing is acknowledged unstored."""

from __future__ import annotations

import asyncio

from app.alarms.service import AlarmService
from app.auth.tokens import token_hash
from app.ingest.repository import PendingBatch, StoredBatch
from app.ingest.schemas import ObservationBatchIn
from app.ingest.validation import normalise_batch
from app.ingest.writer import SampleWriter
from app.live.service import LiveService
from app.settings import Settings
from app.storage.db import Database
from app.timeutil import utcnow


class IngestService:
    def __init__(
        self, db: Database, live: LiveService, alarms: AlarmService, settings: Settings
    ) -> None:
        self._live = live
        self._alarms = alarms
        self._settings = settings
        self._writer = SampleWriter(db)

    async def ingest(self, batch: ObservationBatchIn, *, credential: str | None) -> StoredBatch:
        """Store a batch sent with the device `credential` (checked in the same transaction
        as the write); `credential=None` only for doors that authenticate otherwise."""
        received_time = utcnow()
        observations = normalise_batch(batch, received_time, self._settings.max_future_skew_s)
        hashed = None if credential is None else token_hash(credential)
        stored = await self._writer.store(
            PendingBatch(batch.device_id, observations, received_time, hashed)
        )
        await self._live.publish_batch(stored)
        # Let the websocket senders put the samples on the wire before the alarm engine
        # takes the loop; the alarm follows within microseconds, still before the answer.
        await asyncio.sleep(0)
        await self._alarms.on_batch(stored)
        return stored
