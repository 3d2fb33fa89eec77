"""Session reports are drawn in a process of their own, beside the server.

Drawing the trace figure (matplotlib) and laying out the page (fpdf2) takes about half a
second to a second of CPU for any session, long or short (docs/PERFORMANCE.md). On the
event loop, no chair's post would be answered and no alarm would tick meanwhile. A worker
thread is not enough either: the drawing holds the server's one GIL for most of that
time, and the garbage collections its many objects set off stop every thread, the loop's
included. A worker process draws on the other core instead; what crosses over is the
`SessionReview` (about 150 KB pickled for a two-hour session) and the finished page.

The worker is started on the first report (a second or two: it imports matplotlib), or
by `ReportRenderer.start`, from a fork server rather than by forking the server itself,
whose threads and database connections a child must not inherit. It ends when the server
ends, however the server ends (uvicorn re-raises the SIGTERM it stopped on, so no exit
handler runs): nothing else would tell it, since its parent is the fork server and it
holds both ends of its own task queue.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import select
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime
from typing import TypeVar

from app.review.report import report_html, report_pdf
from contracts.review import SessionReview

T = TypeVar("T")
RENDER_PROCESSES = 1  # reports are occasional; one at a time keeps a core for the server


class ReportRenderer:
    """Draws reports in a worker process; one renderer serves every app in the process."""

    def __init__(self, processes: int = RENDER_PROCESSES) -> None:
        self._processes = processes
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    async def html(self, report: SessionReview, now: datetime) -> str:
        return await self._render(report_html, report, now)

    async def pdf(self, report: SessionReview, now: datetime) -> bytes:
        return await self._render(report_pdf, report, now)

    async def _render(
        self, draw: Callable[[SessionReview, datetime], T], report: SessionReview, now: datetime
    ) -> T:
        loop = asyncio.get_running_loop()
        pool = self._executor()
        try:
            return await loop.run_in_executor(pool, draw, report, now)
        except BrokenProcessPool:
            # The worker died (killed, out of memory): this report is drawn by a new one.
            self._discard(pool)
            return await loop.run_in_executor(self._executor(), draw, report, now)

    def start(self) -> int:
        """Start the worker now rather than at the first report; its process id."""
        pid: int = self._executor().submit(os.getpid).result()
        return pid

    def _executor(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                context = multiprocessing.get_context("forkserver")
                context.set_forkserver_preload(["app.review.rendering"])
                self._pool = ProcessPoolExecutor(
                    self._processes,
                    mp_context=context,
                    initializer=end_with,
                    initargs=(os.getpid(),),
                )
            return self._pool

    def _discard(self, pool: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._pool is pool:
                self._pool = None
        pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        """Stop the worker (at exit this happens by itself)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def end_with(server_pid: int) -> None:
    """In a worker, as it starts: end this process when `server_pid` ends."""
    watcher = threading.Thread(
        target=_exit_after, args=(server_pid,), name="vigil-render-watch", daemon=True
    )
    watcher.start()


def _exit_after(pid: int) -> None:
    try:
        handle = os.pidfd_open(pid)  # readable once the process has ended (Linux 5.3+)
    except ProcessLookupError:
        os._exit(0)
    except (AttributeError, OSError):  # no pidfd here: ask every second
        while _running(pid):
            time.sleep(1.0)
    else:
        select.select([handle], [], [])
    os._exit(0)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


renderer = ReportRenderer()
