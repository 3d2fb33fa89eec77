"""Ingest: validate, normalise, commit, answer; then publish. Nothing is acknowledged
unstored, nothing stored twice, and nothing that happens after the commit can turn a stored
batch into a failure."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import Request

from app.auth.tokens import token_hash
from app.errors import FieldProblem, InvalidRequest
from app.events import Fanout, StoredBatch
from app.ingest.repository import PendingBatch
from app.ingest.schemas import ObservationBatchIn
from app.ingest.validation import normalise_batch
from app.ingest.writer import SampleWriter
from app.settings import Settings
from app.storage.db import Database
from app.timeutil import utcnow

IDEMPOTENCY_KEYS_KEPT = 10_000  # the most recent keys remembered (a few MB at most)


class IngestService:
    def __init__(self, db: Database, settings: Settings) -> None:
        self._settings = settings
        # Each group's committed batches go to every subscriber right after the commit, in
        # commit order, while the devices are answered: `create_app` subscribes the live view
        # first, then the alarm engine, which yields once so that the websocket senders put
        # the samples on the wire before it takes the loop. A subscriber's failure is
        # logged, counted and retried there (`Fanout.post`); it never reaches a device.
        self.committed: Fanout[StoredBatch] = Fanout(yield_between=True, name="ingest.committed")
        self._writer = SampleWriter(
            db, queue_limit=settings.ingest_queue_limit, on_commit=self.committed.post
        )
        self._keys = IdempotencyKeys(IDEMPOTENCY_KEYS_KEPT)

    async def ingest(
        self,
        batch: ObservationBatchIn,
        *,
        credential: str | None,
        idempotency_key: str | None = None,
    ) -> StoredBatch:
        """Store a batch sent with the device `credential` (checked in the same transaction
        as the write); `credential=None` only for doors that authenticate otherwise.

        Returns once the batch is committed; its new samples are published after that.
        Samples already stored (same device, vital and device time) are counted as
        duplicates and not stored or published again; a batch sent again with the same
        `idempotency_key` (same sender and device) is answered as all duplicates.
        """
        received_time = utcnow()
        observations = normalise_batch(batch, received_time, self._settings.max_future_skew_s)
        hashed = None if credential is None else token_hash(credential)
        pending = PendingBatch(batch.device_id, observations, received_time, hashed)
        if idempotency_key is None:
            return await self._writer.store(pending)
        return await self._keys.once(
            (hashed, batch.device_id, idempotency_key),
            hashlib.blake2b(batch.model_dump_json().encode(), digest_size=16).digest(),
            lambda: self._writer.store(pending),
        )

    @property
    def waiting(self) -> int:
        """Batches waiting for the sample writer."""
        return self._writer.waiting

    async def close(self, timeout_s: float = 5.0) -> bool:
        """Let what was committed reach every subscriber (at shutdown); False on timeout."""
        return await self.committed.drain(timeout_s)


@dataclass(slots=True)
class _Keyed:
    fingerprint: bytes  # of the batch first sent with the key
    outcome: asyncio.Future[StoredBatch | None]  # None: it was not stored


class IdempotencyKeys:
    """Answers to batches sent with an `Idempotency-Key`, by (sender, device, key): the most
    recent `limit`, in memory. After a restart the key is forgotten, yet a resend is still
    stored once: the samples' own uniqueness (device, vital, device time) sees to that."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._entries: OrderedDict[tuple[str | None, str, str], _Keyed] = OrderedDict()

    async def once(
        self,
        key: tuple[str | None, str, str],
        fingerprint: bytes,
        store: Callable[[], Awaitable[StoredBatch]],
    ) -> StoredBatch:
        earlier = self._entries.get(key)
        if earlier is not None:
            if earlier.fingerprint != fingerprint:
                raise InvalidRequest(
                    [
                        FieldProblem(
                            ("header", "Idempotency-Key"),
                            "this key was already used for a different batch of this device; "
                            "use a new key for new data",
                        )
                    ]
                )
            # The first send may still be on its way to the database: its outcome decides.
            first = await asyncio.shield(earlier.outcome)
            if first is not None:
                return dataclasses.replace(
                    first, observations=[], duplicates=len(first.observations) + first.duplicates
                )
            # The first send was not stored: this one is tried afresh.
        entry = _Keyed(fingerprint, asyncio.get_running_loop().create_future())
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self._limit:
            self._entries.popitem(last=False)
        stored: StoredBatch | None = None
        try:
            stored = await store()
            return stored
        finally:
            if stored is None and self._entries.get(key) is entry:
                del self._entries[key]
            entry.outcome.set_result(stored)


async def get_ingest_service(request: Request) -> IngestService:
    """The app's IngestService (built by `create_app`), as a FastAPI dependency."""
    service: IngestService = request.app.state.ingest
    return service
