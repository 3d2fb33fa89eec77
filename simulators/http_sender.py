"""Drive simulated devices against a running Vigil over its HTTP ingest door."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx

from simulators.resting import RestingPatientMonitor


class SimulationError(RuntimeError):
    """Vigil refused what the simulator sent; carrying on would hide a real problem."""


@dataclass
class SendStats:
    batches: int = 0
    observations: int = 0
    connection_failures: int = 0
    refused: list[str] = field(default_factory=list)


def make_monitors(
    chairs: int, device_prefix: str, nibp_interval_s: float, seed: int | None
) -> list[RestingPatientMonitor]:
    master = random.Random(seed)
    return [
        RestingPatientMonitor(
            device_id=f"{device_prefix}{index:02d}",
            rng=random.Random(master.getrandbits(64)),
            nibp_interval_s=nibp_interval_s,
        )
        for index in range(1, chairs + 1)
    ]


async def wait_for_server(client: httpx.AsyncClient, timeout_s: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        try:
            if (await client.get("/healthz")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if asyncio.get_running_loop().time() > deadline:
            raise SimulationError(f"Vigil at {client.base_url} did not answer /healthz")
        await asyncio.sleep(0.2)


async def run(
    base_url: str,
    monitors: list[RestingPatientMonitor],
    duration_s: float | None = None,
    stats: SendStats | None = None,
) -> SendStats:
    """Send each monitor's 1 Hz observations until `duration_s` (None: until cancelled)."""
    stats = stats or SendStats()
    async with httpx.AsyncClient(base_url=base_url, timeout=10.0) as client:
        await wait_for_server(client)
        loop = asyncio.get_running_loop()
        start = loop.time()
        try:
            async with asyncio.TaskGroup() as group:
                for index, monitor in enumerate(monitors):
                    # Real devices are not synchronised: spread the chairs over the second.
                    offset = index / max(len(monitors), 1)
                    group.create_task(_drive(client, monitor, start + offset, duration_s, stats))
        except* SimulationError as failures:
            raise failures.exceptions[0] from None
    return stats


async def _drive(
    client: httpx.AsyncClient,
    monitor: RestingPatientMonitor,
    first_tick: float,
    duration_s: float | None,
    stats: SendStats,
) -> None:
    loop = asyncio.get_running_loop()
    tick = 0
    while duration_s is None or tick < duration_s:
        await asyncio.sleep(max(0.0, first_tick + tick - loop.time()))
        observations = monitor.tick(float(tick), datetime.now(UTC))
        try:
            response = await client.post(
                "/api/v1/observations",
                json={"device_id": monitor.device_id, "observations": observations},
            )
        except httpx.TransportError:
            stats.connection_failures += 1  # a real device would be offline too: keep going
        else:
            if response.status_code >= 400:
                detail = response.json().get("detail", response.text)
                stats.refused.append(f"{monitor.device_id}: {response.status_code} {detail}")
                raise SimulationError(f"Vigil refused {monitor.device_id}: {detail}")
            stats.batches += 1
            stats.observations += len(observations)
        tick += 1
