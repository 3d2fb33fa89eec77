"""Group commit: batches that arrive while a commit is under way are stored together.

One transaction and one fsync then serve every waiting request, and each request is
still answered only after the commit that holds its samples. Under light load a group
is a single batch, so nothing waits; under heavy load throughput grows with the group.
Each batch keeps its own fate inside the group: one that cannot be stored is refused alone
(`store_batches`), and only a failure of the transaction itself fails them all.

The queue is bounded: past `queue_limit` waiting batches a new one is refused at once with
`Overloaded` (503, Retry-After) instead of waiting without end while the database is slow.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from app.errors import Overloaded, VigilError
from app.events import StoredBatch
from app.ingest.repository import PendingBatch, store_batches
from app.observability.metrics import commit_timer
from app.storage.db import Database

MAX_GROUP = 256  # batches in one transaction; keeps one commit's latency bounded
RETRY_AFTER_S = 1  # what a refused sender is told to wait: about a few group commits

log = logging.getLogger(__name__)


class SampleWriter:
    """Stores batches in group commits; `on_commit` hears each group's stored batches (those
    with new samples), in commit order, right after the commit and before any answer."""

    def __init__(
        self,
        db: Database,
        *,
        queue_limit: int,
        on_commit: Callable[[Sequence[StoredBatch]], None] | None = None,
    ) -> None:
        self._db = db
        self._queue_limit = queue_limit
        self._on_commit = on_commit
        self._waiting: list[tuple[PendingBatch, asyncio.Future[StoredBatch]]] = []
        self._flusher: asyncio.Task[None] | None = None

    @property
    def waiting(self) -> int:
        """Batches queued for the next group (not counting the one being committed)."""
        return len(self._waiting)

    async def store(self, batch: PendingBatch) -> StoredBatch:
        if len(self._waiting) >= self._queue_limit:
            raise Overloaded(
                f"Vigil is busy: {len(self._waiting)} batches are waiting to be stored; "
                f"nothing of this one was taken, send it again in {RETRY_AFTER_S} s",
                RETRY_AFTER_S,
            )
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
            self._committed(results)
            for (_, future), result in zip(group, results, strict=True):
                if future.done():  # the request was cancelled (client gone); nothing to tell
                    continue
                if isinstance(result, VigilError):
                    future.set_exception(result)
                else:
                    future.set_result(result)

    def _committed(self, results: list[StoredBatch | VigilError]) -> None:
        """Hand the group's new samples on before the answers go out: the fan-out is
        scheduled first, so the screens hear of them as early as the devices do."""
        if self._on_commit is None:
            return
        stored = [r for r in results if isinstance(r, StoredBatch) and r.observations]
        try:
            self._on_commit(stored)
        except Exception:  # the samples are stored: their answers must still go out
            log.exception("the fan-out of a committed group could not be scheduled")
