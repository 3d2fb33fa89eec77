"""Group commit: batches that arrive while a commit is under way are stored together.

One transaction and one fsync then serve every waiting request, and each request is
still answered only after the commit that holds its samples. Under light load a group
is a single batch, so nothing waits; under heavy load throughput grows with the group.
"""

from __future__ import annotations

import asyncio

from app.errors import VigilError
from app.events import StoredBatch
from app.ingest.repository import PendingBatch, store_batches
from app.observability.metrics import commit_timer
from app.storage.db import Database

MAX_GROUP = 256  # batches in one transaction; keeps one commit's latency bounded


class SampleWriter:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._waiting: list[tuple[PendingBatch, asyncio.Future[StoredBatch]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def store(self, batch: PendingBatch) -> StoredBatch:
        future: asyncio.Future[StoredBatch] = asyncio.get_running_loop().create_future()
        self._waiting.append((batch, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="vigil-sample-writer")
        return await future

    async def _flush(self) -> None:
        while self._waiting:
            group, self._waiting = self._waiting[:MAX_GROUP], self._waiting[MAX_GROUP:]
            try:
                with commit_timer(len(group)):
                    results = await self._db.run_held(store_batches, [batch for batch, _ in group])
            except Exception as exc:  # the whole transaction failed: every request hears it
                for _, future in group:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(group, results, strict=True):
                if future.done():  # the request was cancelled (client gone); nothing to tell
                    continue
                if isinstance(result, VigilError):
                    future.set_exception(result)
                else:
                    future.set_result(result)
