"""Play a run (simulated chairs, a replayed recording) against Vigil through one of its doors.

Each device's feed is its own task, paced on the run's timeline at the chosen speed (see
`simulators.timeline` for where device times fall). A device that falls behind catches up by
sending everything already due in one request, as a gateway with a backlog would.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from simulators.doors import Door, DoorUnreachable, HttpDoor
from simulators.timeline import Feed, Run, Send, timeline_start

MAX_BATCH = 1000  # observations per request, as the ingest allows


class SimulationError(RuntimeError):
    """Vigil refused what was sent, or cannot be reached: carrying on would hide the problem."""


class ServerUnreachable(SimulationError):
    """Vigil's door (HTTP health check, MLLP listener, MQTT broker) did not answer in time."""


@dataclass
class SendStats:
    """What a run has done so far; read by progress displays while it runs."""

    batches: int = 0
    observations: int = 0
    connection_failures: int = 0  # batches lost because the server could not be reached
    server_errors: int = 0  # batches lost to a 5xx answer
    refused: list[str] = field(default_factory=list)
    positions: dict[int, float] = field(default_factory=dict)  # feed → timeline seconds sent
    started: bool = False

    @property
    def undelivered(self) -> int:
        return self.connection_failures + self.server_errors

    @property
    def progress_s(self) -> float:
        """How far along the timeline every device has got (the slowest one)."""
        return min(self.positions.values()) if self.positions else 0.0


async def run(
    target: str | Door,
    plan: Run,
    speed: float = 1.0,
    stats: SendStats | None = None,
    wait_s: float = 30.0,
    token: str | None = None,
) -> SendStats:
    """Play `plan` through `target` (a base URL for the HTTP door, with the device
    credential `token`, or any Door) until its feeds end (or until cancelled)."""
    stats = stats or SendStats()
    door = HttpDoor(target, token) if isinstance(target, str) else target
    try:
        try:
            await door.ready(wait_s)
        except DoorUnreachable as exc:
            raise ServerUnreachable(f"{exc} (--url, --mllp or --mqtt set the address)") from None
        loop = asyncio.get_running_loop()
        # The wall clock and the device clocks start together; building the feeds may take a
        # moment (chairs joining mid-session are simulated up to their start point first).
        wall_start, now = loop.time(), datetime.now(UTC)
        feeds = await asyncio.to_thread(plan.feeds, timeline_start(now, plan.span_s, speed))
        stats.positions = dict.fromkeys(range(len(feeds)), 0.0)
        stats.started = True
        try:
            async with asyncio.TaskGroup() as group:
                for index, feed in enumerate(feeds):
                    group.create_task(_drive(door, feed, index, wall_start, speed, stats))
        except* SimulationError as failures:
            raise failures.exceptions[0] from None
    finally:
        await door.close()
    return stats


async def _drive(
    door: Door,
    feed: Feed,
    index: int,
    wall_start: float,
    speed: float,
    stats: SendStats,
) -> None:
    loop = asyncio.get_running_loop()
    pending = next(feed, None)
    while pending is not None:
        delay = wall_start + pending.at_s / speed - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        due = [pending]
        size = _size(pending)
        pending = next(feed, None)
        # Everything else already due goes in the same request.
        while (
            pending is not None
            and wall_start + pending.at_s / speed <= loop.time()
            and size + _size(pending) <= MAX_BATCH
        ):
            due.append(pending)
            size += _size(pending)
            pending = next(feed, None)
        if size:
            await _post(door, due, stats)
        stats.positions[index] = due[-1].at_s
    stats.positions[index] = math.inf  # done: no longer the slowest


def _size(send: Send) -> int:
    return len(send.body["observations"]) if send.body else 0


async def _post(door: Door, sends: Sequence[Send], stats: SendStats) -> None:
    bodies = [send.body for send in sends if send.body]
    device = bodies[0]["device_id"]
    observations: list[Any] = [item for body in bodies for item in body["observations"]]
    sources = [source for send in sends if send.body for source in send.sources]
    try:
        reply = await door.send(device, observations)
    except DoorUnreachable:
        stats.connection_failures += 1  # a real device would be offline too: keep going
        return
    if reply.status >= 500:
        stats.server_errors += 1
        return
    if reply.status >= 400:
        reason = _reason(reply.detail, sources if len(sources) == len(observations) else [])
        stats.refused.append(f"{device}: {reason}")
        raise SimulationError(f"Vigil refused {device}'s batch ({reply.status}): {reason}")
    stats.batches += 1
    stats.observations += len(observations)


def _reason(detail: Any, sources: Sequence[str]) -> str:
    """Vigil's own words; a 422's problems pointed at the rows they came from."""
    if not isinstance(detail, list):
        return str(detail)
    problems: list[str] = []
    for problem in detail:
        loc = problem.get("loc", []) if isinstance(problem, dict) else []
        message = problem.get("msg", problem) if isinstance(problem, dict) else problem
        where = ".".join(str(part) for part in loc[1:])
        if len(loc) >= 3 and loc[1] == "observations" and isinstance(loc[2], int):
            # Point at the recording's row; keep the field when the value is not the problem.
            part = f" {loc[3]}" if len(loc) > 3 and loc[3] != "value" else ""
            where = f"{sources[loc[2]]}{part}" if loc[2] < len(sources) else where
        problems.append(f"{where}: {message}" if where else str(message))
    return "; ".join(problems)
