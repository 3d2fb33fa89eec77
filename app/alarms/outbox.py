"""The alarm outbox: every alarm transition reaches the database, in order, whatever happens.

The alarm service puts each transition (and each derived baseline) here and shows it on the
screens at once, marked pending: a nurse must see an alarm even while the database is down.
One writer task drains the outbox in order, one transaction per group, and tells the service
when a group is stored (the screens then hear "stored"). A write that fails because the
database cannot be reached is retried with backoff (0.25 s doubling to 5 s, sooner when the
database is seen back), never dropped and never reordered.

Surviving a restart: from the first failed write until the outbox is empty again, every
waiting write is also appended to a journal file (JSON lines, fsync'd) under the data
directory. `replay` stores the journal's writes, in order, when the server starts. Both
retries and replays may write something already stored (a commit whose answer was lost);
`repository.store_writes` skips those, and the schema forbids a second row.

A write the database refuses for another reason (a constraint, a bug) would block every
alarm behind it: it is set aside alone into a rejected-writes file, logged as an error, and
the rest go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
import os
import time
import types
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

from app.alarms import repository
from app.alarms.repository import AlarmWrite, BaselineWrite, TransitionWrite
from app.errors import database_unreachable
from app.storage.db import Database
from app.storage.health import DatabaseHealth
from monitor.lifecycle import AlarmTransition

log = logging.getLogger(__name__)

JOURNAL_FILE = "alarm-outbox.jsonl"
REJECTED_FILE = "alarm-outbox-rejected.jsonl"
MAX_GROUP = 256  # writes in one transaction
FIRST_RETRY_S = 0.25
MAX_RETRY_S = 5.0
STOP_WAIT_S = 10.0  # how long a stopping server waits for the outbox to empty


@dataclass(slots=True)
class _Waiting:
    write: AlarmWrite
    # Settled True once stored, False once a write attempt that held it failed (it stays
    # queued); only the last write of one `put` carries it.
    receipt: asyncio.Future[bool] | None = None
    journaled: bool = False


class AlarmOutbox:
    """Ordered, retried, journaled storage of alarm writes; all methods run on the loop."""

    def __init__(
        self,
        db: Database,
        journal: Path,
        on_stored: Callable[[list[AlarmWrite]], Awaitable[None]],
        health: DatabaseHealth | None = None,
    ) -> None:
        self._db = db
        self.journal = journal
        self.rejected = journal.with_name(REJECTED_FILE)
        self._on_stored = on_stored
        self._health = health
        self._queue: deque[_Waiting] = deque()
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()  # set after every write attempt
        self._writer: asyncio.Task[None] | None = None
        self.failing = False  # the last write attempt could not reach the database
        self._journal_open = False  # the journal holds writes not yet known to be stored
        self.stored_count = 0
        self.retries = 0

    def __len__(self) -> int:
        return len(self._queue)

    # --- in ---------------------------------------------------------------------------------

    def put(self, writes: Sequence[AlarmWrite]) -> asyncio.Future[bool]:
        """Queue `writes` (after everything already queued) and return their receipt. The
        writer starts on them at the next `wake`, so the caller can show them first."""
        receipt: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        if not writes:
            receipt.set_result(True)
            return receipt
        waiting = [_Waiting(write) for write in writes]
        waiting[-1].receipt = receipt
        self._queue.extend(waiting)
        if self._journal_open:
            self._append_to_journal(waiting)
        if self.failing:
            receipt.set_result(False)  # nothing will be stored before the database is back
        return receipt

    def wake(self) -> None:
        self._wake.set()

    # --- lifecycle ----------------------------------------------------------------------------

    async def replay(self) -> int:
        """Store what a previous process left in the journal; returns how many writes. Raises
        if the database cannot be reached (the journal is then kept for the next start)."""
        writes = read_journal(self.journal)
        if writes:
            for start in range(0, len(writes), MAX_GROUP):
                await self._store(writes[start : start + MAX_GROUP])
            log.warning(
                "stored %d alarm writes kept in %s while the database was unreachable",
                len(writes),
                self.journal,
            )
        with contextlib.suppress(FileNotFoundError):
            self.journal.unlink()
        return len(writes)

    def start(self) -> None:
        self._writer = asyncio.create_task(self._write_forever(), name="vigil-alarm-outbox")

    async def stop(self, wait_s: float = STOP_WAIT_S) -> None:
        """Give the writer `wait_s` to empty the outbox; whatever is left is in the journal."""
        self.wake()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait_s):
                while self._queue and not self.failing:
                    self._progress.clear()
                    await self._progress.wait()
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        if self._queue:
            self._append_to_journal([w for w in self._queue if not w.journaled])
            log.warning(
                "stopping with %d alarm writes not stored; they are in %s and will be stored "
                "at the next start",
                len(self._queue),
                self.journal,
            )

    # --- the writer -----------------------------------------------------------------------

    async def _write_forever(self) -> None:
        delay = FIRST_RETRY_S
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            group = [self._queue[i] for i in range(min(MAX_GROUP, len(self._queue)))]
            started = time.monotonic()
            try:
                await self._store([w.write for w in group])
            except Exception as exc:
                # `_store` lets only outages out; anything else (the rejected-writes file
                # cannot be written) is logged, and the group is tried again all the same.
                if not database_unreachable(exc):
                    log.exception("storing alarm writes failed; trying again")
                self._failed(exc)
                self._progress.set()
                await self._back_off(delay)
                delay = min(delay * 2, MAX_RETRY_S)
                continue
            delay = FIRST_RETRY_S
            for _ in group:
                self._queue.popleft()
            self._progress.set()
            self.stored_count += len(group)
            if self.failing:
                self.failing = False
            if self._health is not None:
                self._health.report_success(started)
            if self._journal_open and not self._queue:
                self._close_journal()
            for waiting in group:
                if waiting.receipt is not None and not waiting.receipt.done():
                    waiting.receipt.set_result(True)
            try:
                await self._on_stored([w.write for w in group])
            except Exception:  # a screen's failure must not stop the storing
                log.exception("telling the screens that alarms were stored failed")

    async def _store(self, writes: list[AlarmWrite]) -> None:
        """Store `writes` in one transaction; if the database refuses that for a reason other
        than an outage, store them one by one and set aside each one it refuses alone."""
        try:
            await self._db.run(repository.store_writes, writes)
            return
        except Exception as exc:
            if database_unreachable(exc):
                raise
            if len(writes) == 1:
                self._reject(writes[0], exc)
                return
        for write in writes:
            await self._store([write])

    def _failed(self, exc: BaseException) -> None:
        self.retries += 1
        if not self.failing:
            self.failing = True
            self._journal_open = True
            self._append_to_journal([w for w in self._queue if not w.journaled])
        if self._health is not None and database_unreachable(exc):
            self._health.report_failure(exc)  # logs once per outage, not per attempt
        for waiting in self._queue:
            if waiting.receipt is not None and not waiting.receipt.done():
                waiting.receipt.set_result(False)

    async def _back_off(self, delay: float) -> None:
        """Wait `delay`, or less once the database is seen back (but at least the first
        step, so a flapping database is not hammered)."""
        await asyncio.sleep(FIRST_RETRY_S)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, delay - FIRST_RETRY_S)):
                if self._health is None:
                    await asyncio.Event().wait()
                else:
                    await self._health.wait_until_reachable()

    def _reject(self, write: AlarmWrite, exc: BaseException) -> None:
        line = json.dumps({"write": encode_write(write), "error": repr(exc)})
        _append_lines(self.rejected, [line])
        log.error(
            "the database refused an alarm write (%r); it is kept in %s: %s",
            exc,
            self.rejected,
            line,
        )

    # --- the journal ----------------------------------------------------------------------

    def _append_to_journal(self, waiting: Sequence[_Waiting]) -> None:
        # Written and fsync'd on the loop: it happens only during an outage, a few alarm
        # writes at a time, and the order of lines must be the order of the queue.
        if not waiting:
            return
        _append_lines(self.journal, [json.dumps(encode_write(w.write)) for w in waiting])
        for w in waiting:
            w.journaled = True
        self._journal_open = True

    def _close_journal(self) -> None:
        """Everything journaled is stored: start the next outage's journal afresh."""
        with contextlib.suppress(FileNotFoundError):
            self.journal.unlink()
        self._journal_open = False


def _append_lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists()
    with path.open("a", encoding="utf-8") as file:
        file.write("".join(line + "\n" for line in lines))
        file.flush()
        os.fsync(file.fileno())
    if new:  # the file's name must survive a power cut too
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


# --- the journal's lines ----------------------------------------------------------------------

_TRANSITION_HINTS = get_type_hints(AlarmTransition)


def encode_write(write: AlarmWrite) -> dict[str, Any]:
    if isinstance(write, BaselineWrite):
        return {
            "kind": "baseline",
            "session_id": write.session_id,
            "vital": write.vital,
            "value": write.value,
            "at": write.at.isoformat(),
        }
    transition = {f.name: getattr(write.transition, f.name) for f in fields(AlarmTransition)}
    return {
        "kind": "transition",
        "chair_id": write.chair_id,
        "site_id": write.site_id,
        "transition": transition,
    }


def decode_write(line: dict[str, Any]) -> AlarmWrite:
    if line["kind"] == "baseline":
        return BaselineWrite(
            int(line["session_id"]),
            str(line["vital"]),
            float(line["value"]),
            datetime.fromisoformat(line["at"]),
        )
    if line["kind"] != "transition":
        raise ValueError(f"unknown outbox write {line['kind']!r}")
    given = line["transition"]
    values = {
        f.name: _revive(_TRANSITION_HINTS[f.name], given[f.name])
        for f in fields(AlarmTransition)
        if f.name in given  # a field added since the line was written keeps its default
    }
    return TransitionWrite(AlarmTransition(**values), int(line["chair_id"]), int(line["site_id"]))


def _revive(hint: Any, value: Any) -> Any:
    """A JSON value back as the field's type: enums from their values, the rest as is."""
    if value is None:
        return None
    union = get_origin(hint) in (Union, types.UnionType)
    for candidate in get_args(hint) if union else (hint,):
        if isinstance(candidate, type) and issubclass(candidate, enum.Enum):
            return candidate(value)
    return value


def read_journal(path: Path) -> list[AlarmWrite]:
    """The journal's writes in order. A last line cut short (the process died while writing
    it) was never part of the outbox's promise and is dropped with a warning."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    lines = text.split("\n")
    writes = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            writes.append(decode_write(json.loads(line)))
        except (ValueError, KeyError) as exc:
            if number == len(lines) and not text.endswith("\n"):
                log.warning("%s: dropping a last line cut short: %r", path, line[:200])
                break
            raise ValueError(f"{path}:{number}: not an alarm outbox line: {exc}") from exc
    return writes
