"""Playing a run from a terminal: a progress bar when it runs ahead of the clock, or for a
replay; a plain status line every half minute for a real-time run."""

from __future__ import annotations

import asyncio
import math

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from simulators import sender
from simulators.doors import Door
from simulators.sender import SendStats
from simulators.timeline import Run

STATUS_EVERY_S = 30.0
_REFRESH_S = 0.25


def clock(seconds: float) -> str:
    """`12:05` or `1:40:00`: a position on a timeline."""
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def summary(stats: SendStats) -> str:
    line = f"sent {stats.batches} batches ({stats.observations} observations)"
    if stats.undelivered:
        line += (
            f"; {stats.undelivered} batches not delivered "
            f"({stats.connection_failures} could not connect, {stats.server_errors} server errors)"
        )
    return line


def play(
    console: Console,
    base_url: str | Door,
    plan: Run,
    speed: float,
    stats: SendStats,
    wait_s: float,
    bar: bool,
    label: str,
) -> None:
    """Run `plan` to its end, showing progress; Ctrl-C raises KeyboardInterrupt, `stats` kept."""
    asyncio.run(_play(console, base_url, plan, speed, stats, wait_s, bar, label))


async def _play(
    console: Console,
    base_url: str | Door,
    plan: Run,
    speed: float,
    stats: SendStats,
    wait_s: float,
    bar: bool,
    label: str,
) -> None:
    task = asyncio.create_task(sender.run(base_url, plan, speed, stats, wait_s))
    span = plan.span_s
    if bar and span is not None:
        await _with_bar(console, task, stats, span, label)
    else:
        await _with_status(console, task, stats)
    await task  # re-raises what ended the run


async def _with_bar(
    console: Console, task: asyncio.Task[SendStats], stats: SendStats, span: float, label: str
) -> None:
    columns = (
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        TextColumn("{task.fields[position]}"),
        TextColumn("[dim]{task.fields[sent]}"),
        TimeRemainingColumn(),
    )
    total = max(span, 1.0)
    with Progress(*columns, console=console) as progress:
        handle = progress.add_task(label, total=total, position="", sent="")
        while True:
            done = task.done()
            position = min(stats.progress_s, span) if stats.started else 0.0
            if done and not task.cancelled() and task.exception() is None:
                position = span
            progress.update(
                handle,
                completed=min(position, total),
                position=f"{clock(position)} / {clock(span)}",
                sent=f"{stats.observations} observations",
            )
            if done:
                return
            await asyncio.wait({task}, timeout=_REFRESH_S)


async def _with_status(console: Console, task: asyncio.Task[SendStats], stats: SendStats) -> None:
    while not task.done():
        await asyncio.wait({task}, timeout=STATUS_EVERY_S)
        if not task.done() and stats.started:
            position = stats.progress_s
            where = clock(position) if math.isfinite(position) else "end"
            console.print(f"[{where}] {summary(stats)}", highlight=False, markup=False)
