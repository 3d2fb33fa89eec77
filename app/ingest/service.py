"""Ingest: validate, normalise, commit, then publish; nothing is acknowledged unstored."""

from __future__ import annotations

from fastapi import Request

from app.auth.tokens import token_hash
from app.events import Fanout, StoredBatch
from app.ingest.repository import PendingBatch
from app.ingest.schemas import ObservationBatchIn
from app.ingest.validation import normalise_batch
from app.ingest.writer import SampleWriter
from app.settings import Settings
from app.storage.db import Database
from app.timeutil import utcnow


class IngestService:
    def __init__(self, db: Database, settings: Settings) -> None:
        self._settings = settings
        self._writer = SampleWriter(db)
        # Each committed batch goes to every subscriber before the device is answered.
        # The loop is yielded between subscribers: `create_app` subscribes the live view
        # first, so the websocket senders put the samples on the wire before the alarm
        # engine takes the loop (it follows within microseconds, still before the answer).
        self.committed: Fanout[StoredBatch] = Fanout(yield_between=True)

    async def ingest(self, batch: ObservationBatchIn, *, credential: str | None) -> StoredBatch:
        """Store a batch sent with the device `credential` (checked in the same transaction
        as the write); `credential=None` only for doors that authenticate otherwise.
        Every subscriber of `committed` has had the batch when this returns."""
        received_time = utcnow()
        observations = normalise_batch(batch, received_time, self._settings.max_future_skew_s)
        hashed = None if credential is None else token_hash(credential)
        stored = await self._writer.store(
            PendingBatch(batch.device_id, observations, received_time, hashed)
        )
        await self.committed.publish(stored)
        return stored


async def get_ingest_service(request: Request) -> IngestService:
    """The app's IngestService (built by `create_app`), as a FastAPI dependency."""
    service: IngestService = request.app.state.ingest
    return service
