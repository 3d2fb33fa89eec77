"""Whether the database can be reached, as the last calls found it: one log line per change.

Every part that meets a database outage reports it here (the error handler behind every
route, the alarm outbox, the websocket feed); a probe (`SELECT 1` every `probe_s`) notices
an outage nobody's request has met yet, and the database's return. Screens are told of
each change (`wait_for_change`), and the log gets one line when the database is lost and
one when it is back, however many requests failed in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time

from sqlalchemy import text
from sqlalchemy.orm import Session

from app.errors import database_unreachable
from app.storage.db import Database

log = logging.getLogger(__name__)

PROBE_S = 2.0  # how often the probe asks; also bounds how late an unnoticed outage is seen
PROBE_TIMEOUT_S = 5.0  # a probe still waiting this long is abandoned (and decides nothing)


class Reachability(enum.StrEnum):
    OK = "ok"
    UNREACHABLE = "unreachable"


class DatabaseHealth:
    """The database's reachability; all methods run on the event loop."""

    def __init__(self, db: Database, probe_s: float = PROBE_S) -> None:
        self._db = db
        self._probe_s = probe_s
        self.state = Reachability.OK
        self._since = time.monotonic()
        self._changed = asyncio.Event()  # replaced on every change; waiters hold the old one
        self._prober: asyncio.Task[None] | None = None

    @property
    def reachable(self) -> bool:
        return self.state is Reachability.OK

    def report_failure(self, exc: BaseException) -> None:
        """A call found the database unreachable (callers check `database_unreachable`)."""
        if self.state is Reachability.OK:
            log.warning(
                "database unreachable (%s: %s); answering 503 until it is back",
                type(exc).__name__,
                str(exc).strip().splitlines()[0] if str(exc).strip() else "no message",
            )
            self._set(Reachability.UNREACHABLE)

    def report_success(self, started: float) -> None:
        """A call that began at `started` (`time.monotonic()`) reached the database. One
        that began before the outage was seen says nothing about now: its answer may come
        back after a later call's failure (they run on several threads)."""
        if self.state is Reachability.UNREACHABLE and started > self._since:
            log.warning("database reachable again after %.1f s", time.monotonic() - self._since)
            self._set(Reachability.OK)

    def _set(self, state: Reachability) -> None:
        self.state = state
        self._since = time.monotonic()
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait_for_change(self, seen: Reachability) -> Reachability:
        """Wait until the state differs from `seen` (at once if it already does)."""
        while self.state is seen:
            await self._changed.wait()
        return self.state

    async def wait_until_reachable(self) -> None:
        while self.state is not Reachability.OK:
            await self.wait_for_change(self.state)

    # --- the probe --------------------------------------------------------------------------

    async def probe(self) -> bool:
        """Ask the database once; report and return what was found."""
        started = time.monotonic()
        try:
            async with asyncio.timeout(PROBE_TIMEOUT_S):
                await self._db.run(_select_one)
        except TimeoutError:
            # Slow is not gone: under load the probe waits behind queued writes (SQLite has
            # one writer thread). Only an error the database gives says it is unreachable.
            return False
        except Exception as exc:
            if not database_unreachable(exc):
                raise
            self.report_failure(exc)
            return False
        self.report_success(started)
        return True

    async def _probe_forever(self) -> None:
        while True:
            await asyncio.sleep(self._probe_s)
            try:
                await self.probe()
            except Exception:  # a probe that breaks otherwise must not stop the watching
                log.exception("database probe failed")

    def start(self) -> None:
        self._prober = asyncio.create_task(self._probe_forever(), name="vigil-database-probe")

    async def stop(self) -> None:
        if self._prober is not None:
            self._prober.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._prober


def _select_one(session: Session) -> None:
    session.execute(text("SELECT 1"))
