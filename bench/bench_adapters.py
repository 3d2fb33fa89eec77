"""Adapter throughput: HL7 over MLLP (1 and 10 connections) and MQTT, beside HTTP, same run.

Starts Vigil as a real uvicorn subprocess (``vigil.server:create_server``) on a fresh SQLite
database with 10 demo chairs (devices demo-monitor-01…10, bound, sessions open), with the
MLLP listener and the MQTT adapter enabled (the local Mosquitto on 127.0.0.1:1883, topics
under a prefix of this run alone). Then, from this one asyncio process, over real sockets:

- ``http-1`` / ``http-10``: 1 or 10 keep-alive clients post batches back to back;
- ``mllp-1`` / ``mllp-10``: 1 or 10 MLLP connections (python-hl7's asyncio streams) each
  send an ORU^R01 and wait for its ACK before the next, as a gateway in original mode does;
- ``mqtt``: one client publishes batches for the 10 devices at QoS 1, keeping at most
  ``--window`` unanswered, and counts Vigil's answers on the ack topics.

Every message is one device's batch of the same four observations (hr, pr, spo2, pi),
so messages/s compare across doors. Each door runs ``--seconds`` per round; rounds
alternate the doors so that other load on the machine hits all alike, and the median
round is reported. At the end, the rows in ``samples`` must equal the acknowledged
observations (stored before acknowledged).

Every door pays for its credential check, as with real devices (docs/SECURITY.md): HTTP
batches carry the site's gateway credential as ``Authorization: Bearer vgd_…``, MQTT
batches as ``"token"``; MLLP needs none (loopback is on its allow-list). The credentials
are written into the seeded database (bench/_credentials.py), with an admin's API token
for ``GET /api/v1/adapters``.

    .venv/bin/python bench/bench_adapters.py               # 3 rounds of 10 s per door
    .venv/bin/python bench/bench_adapters.py --quick       # 1 round of 3 s
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
from hl7.mllp import open_hl7_connection  # type: ignore[import-untyped]
from sqlalchemy import create_engine, func, select

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from _credentials import add_gateway_credential, add_person, bearer  # noqa: E402

from app.exports.hl7v2 import batch_oru  # noqa: E402 (after the path is set)
from app.sites.demo import seed_demo  # noqa: E402
from app.storage import migrate  # noqa: E402
from app.storage.db import Database  # noqa: E402
from app.storage.models import Role, Sample  # noqa: E402

DEVICES = [f"demo-monitor-{index:02d}" for index in range(1, 11)]
BROKER = ("127.0.0.1", 1883)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def batch(device: str) -> dict[str, Any]:
    now = datetime.now(UTC).isoformat()
    return {
        "device_id": device,
        "observations": [
            {"vital": "hr", "value": 72, "unit": "/min", "device_time": now},
            {"vital": "pr", "value": 71, "unit": "/min", "device_time": now},
            {"vital": "spo2", "value": 97, "unit": "%", "device_time": now},
            {"vital": "pi", "value": 2.1, "unit": "%", "device_time": now},
        ],
    }


OBSERVATIONS_PER_MESSAGE = 4
CONTROL_IDS = (f"bench-{n}" for n in range(10**12))  # MSH-10, unique for the whole run


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    http_url: str
    mllp_port: int
    topic_prefix: str
    database_url: str
    device_token: str  # the site's gateway credential, for every demo monitor


@contextlib.contextmanager
def vigil(directory: Path) -> Iterator[Server]:
    url = f"sqlite:///{directory / 'vigil.sqlite'}"
    migrate.upgrade(url, REPO / "alembic")
    db = Database(url)
    try:
        with db.session() as session:
            site_id = seed_demo(session, chairs=len(DEVICES))
            device_token = add_gateway_credential(session, site_id)
            admin = bearer(add_person(session, "bench.admin", Role.ADMIN, [site_id]))
    finally:
        db.close()
    http_port, mllp_port = free_port(), free_port()
    run_id = uuid.uuid4().hex[:8]
    prefix = f"vigil-bench/{run_id}"
    env = {
        **os.environ,
        "VIGIL_DATABASE_URL": url,
        "VIGIL_ADAPTERS": "mllp,mqtt",
        "VIGIL_MLLP_PORT": str(mllp_port),
        "VIGIL_MLLP_TIMEZONE": "UTC",
        "VIGIL_MQTT_TOPIC_PREFIX": prefix,
        "VIGIL_MQTT_CLIENT_ID": f"vigil-bench-{run_id}",
        "VIGIL_MQTT_PERSISTENT_SESSION": "false",
    }
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "vigil.server:create_server",
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(http_port),
        "--log-level",
        "warning",
    ]
    process = subprocess.Popen(command, env=env, cwd=REPO)
    server = Server(process, f"http://127.0.0.1:{http_port}", mllp_port, prefix, url, device_token)
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.HTTPError):
                response = httpx.get(f"{server.http_url}/api/v1/adapters", headers=admin, timeout=1)
                adapters = response.json() if response.status_code == 200 else []
                if all(a["state"] == "connected" for a in adapters) and len(adapters) == 2:
                    break
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("Vigil did not come up with both adapters connected")
            time.sleep(0.2)
        yield server
    finally:
        process.terminate()
        process.wait(timeout=15)


@dataclass
class Count:
    messages: int = 0
    refused: int = 0


async def until(deadline: float, send: Callable[[], Awaitable[bool]], count: Count) -> None:
    loop = asyncio.get_running_loop()
    while loop.time() < deadline:
        if await send():
            count.messages += 1
        else:
            count.refused += 1


async def http_door(server: Server, clients: int, seconds: float) -> Count:
    count = Count()
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(
        base_url=server.http_url,
        limits=limits,
        timeout=30,
        headers=bearer(server.device_token),
    ) as client:
        deadline = asyncio.get_running_loop().time() + seconds

        def sender(device: str) -> Callable[[], Awaitable[bool]]:
            async def send() -> bool:
                response = await client.post("/api/v1/observations", json=batch(device))
                return response.status_code == 201

            return send

        await asyncio.gather(*(until(deadline, sender(DEVICES[i]), count) for i in range(clients)))
    return count


async def mllp_door(server: Server, connections: int, seconds: float) -> Count:
    count = Count()
    deadline = asyncio.get_running_loop().time() + seconds

    async def gateway(device: str) -> None:
        reader, writer = await open_hl7_connection("127.0.0.1", server.mllp_port)
        try:

            async def send() -> bool:
                message = batch_oru(batch(device), next(CONTROL_IDS), datetime.now(UTC))
                writer.writeblock(message.encode())
                await writer.drain()
                ack = bytes(await reader.readblock())
                return b"MSA|AA|" in ack

            await until(deadline, send, count)
        finally:
            writer.close()

    await asyncio.gather(*(gateway(DEVICES[i]) for i in range(connections)))
    return count


async def mqtt_door(server: Server, seconds: float, window: int) -> Count:
    count = Count()
    prefix = server.topic_prefix
    async with aiomqtt.Client(*BROKER, identifier=f"bench-{uuid.uuid4().hex[:8]}") as client:
        await client.subscribe(f"{prefix}/devices/+/ack", qos=1)
        slots = asyncio.Semaphore(window)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds

        async def answers() -> None:
            async for message in client.messages:
                payload = message.payload if isinstance(message.payload, bytes) else b"{}"
                if json.loads(payload).get("status") == 201:
                    count.messages += 1
                else:
                    count.refused += 1
                slots.release()

        reader = asyncio.create_task(answers())
        index = 0
        while loop.time() < deadline:
            await slots.acquire()
            device = DEVICES[index % len(DEVICES)]
            index += 1
            topic = f"{prefix}/devices/{device}/observations"
            payload = {**batch(device), "token": server.device_token}
            await client.publish(topic, json.dumps(payload), qos=1)
        # Wait for the answers still in flight, so that every batch sent is counted.
        for _ in range(window):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    slots.acquire(), timeout=max(0.0, deadline + 10 - loop.time())
                )
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
    return count


async def run(
    server: Server, seconds: float, rounds: int, window: int
) -> tuple[dict[str, list[float]], int]:
    """Messages/s of each door in each round, and the messages acknowledged in all."""
    doors: dict[str, Callable[[], Awaitable[Count]]] = {
        "http-1": lambda: http_door(server, 1, seconds),
        "http-10": lambda: http_door(server, 10, seconds),
        "mllp-1": lambda: mllp_door(server, 1, seconds),
        "mllp-10": lambda: mllp_door(server, 10, seconds),
        "mqtt": lambda: mqtt_door(server, seconds, window),
    }
    rates: dict[str, list[float]] = {name: [] for name in doors}
    refused = acknowledged = 0
    for round_ in range(rounds):
        order = list(doors) if round_ % 2 == 0 else list(reversed(doors))
        for name in order:
            began = time.perf_counter()
            count = await doors[name]()
            elapsed = time.perf_counter() - began
            rates[name].append(count.messages / elapsed)
            refused += count.refused
            acknowledged += count.messages
            print(
                f"  round {round_ + 1} {name:8} {count.messages / elapsed:8.0f} msg/s", flush=True
            )
    if refused:
        raise SystemExit(f"{refused} messages were refused; see the server's log")
    return rates, acknowledged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="per door and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--window", type=int, default=20, help="MQTT batches in flight")
    parser.add_argument("--quick", action="store_true", help="1 round of 3 s")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.rounds = 3.0, 1
    with tempfile.TemporaryDirectory() as directory, vigil(Path(directory)) as server:
        rates, acknowledged = asyncio.run(run(server, args.seconds, args.rounds, args.window))
        engine = create_engine(server.database_url)
        with engine.connect() as connection:
            rows = connection.scalar(select(func.count()).select_from(Sample)) or 0
        engine.dispose()
    print()
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, SQLite, "
        f"{args.rounds} × {args.seconds:g} s per door, {OBSERVATIONS_PER_MESSAGE} obs/message"
    )
    print()
    print("| door | connections | messages/s (median) | observations/s | rounds |")
    print("|---|---|---|---|---|")
    for name, values in rates.items():
        door, _, conns = name.partition("-")
        median = statistics.median(values)
        spread = ", ".join(f"{v:.0f}" for v in values)
        print(
            f"| {door.upper()} | {conns or '1 client'} | {median:.0f} | "
            f"{median * OBSERVATIONS_PER_MESSAGE:.0f} | {spread} |"
        )
    expected = acknowledged * OBSERVATIONS_PER_MESSAGE
    print(f"\nrows in samples: {rows}; acknowledged observations: {expected}")
    if rows != expected:
        raise SystemExit("row count differs from what was acknowledged")


if __name__ == "__main__":
    main()
