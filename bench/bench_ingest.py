"""Ingest → websocket latency and ingest throughput: Vigil against a bare relay, same run.

For each chair count (default 30 and 300) the script starts, as real uvicorn
subprocesses on free loopback ports, ``vigil serve`` on a fresh scratch database
seeded with that many demo chairs, and ``bench/bare_relay.py`` (same POST and
websocket paths, no validation, no storage). One asyncio process (uvloop) then drives
both with the same load over real sockets (a lean HTTP/1.1 client or httpx, + websockets):

1. latency: every chair posts hr/spo2/pr once a second at its own phase (chair i at
   i/N into each second), open loop (a slow answer never delays the next send); one
   websocket client on the site matches each sample by (device, device_time) and
   records receipt time minus the time just before the POST was sent. The first
   ``--warmup`` seconds of each segment are discarded. Relay and Vigil alternate in
   ``--rounds`` segments so that other load on the machine hits both alike;
2. throughput: ``--clients`` concurrent clients post ``--batch`` observations per
   request back to back for ``--throughput-seconds``, with a websocket client
   connected; samples/s = acknowledged observations / elapsed time;
3. after Vigil's phases, the rows in ``samples`` must equal the 201 answers times the
   observations per post, and (latency phase) chair 1's samples are looked up in the
   database right after each 201: both say "committed before acknowledged".

Vigil needs credentials (docs/SECURITY.md), as in a clinic: every post carries the site's
gateway credential (``Authorization: Bearer vgd_…``, checked on every batch) and the
websocket client is a nurse of the site with an API token (``vgu_…``); both are written
into the seeded database (bench/_credentials.py). The relay gets the very same requests
and ignores the header: the credential check is part of what Vigil's side pays for.

The generator watches itself: sends more than 10 ms behind schedule, event-loop lag,
and its own CPU; server and "other processes" CPU come from /proc. Its default HTTP
client (``--client raw``) is a minimal keep-alive HTTP/1.1 client on asyncio streams.
``--client httpx`` uses httpx.AsyncClient (pool of 32): it costs about 1 ms of generator
CPU per request on a 2-core EPYC VM, six times the raw client. At 300 chairs on a shared
machine it then falls behind its schedule (and spirals, so the run takes minutes longer),
and at any load it adds its own time to every measured latency, flattering the ratio.

    .venv/bin/python bench/bench_ingest.py                  # 30 and 300 chairs, SQLite
    .venv/bin/python bench/bench_ingest.py --client httpx   # the same through httpx
    .venv/bin/python bench/bench_ingest.py --quick          # ~20 s smoke run
    .venv/bin/python bench/bench_ingest.py \\
        --database-url postgresql+psycopg://root@127.0.0.1:5432/test

With ``--database-url`` (PostgreSQL) a scratch database ``vigil_bench_<pid>_<chairs>``
is created on that server and dropped afterwards; the named database is only used
to connect. Without it, SQLite in a temporary directory.

Exit status 0 when every post was answered 201 and the row count matches, 1 otherwise
(latency targets are reported, not enforced: this machine is shared).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib.util
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, TypeVar

import httpx
from sqlalchemy import Engine, create_engine, func, select, text
from sqlalchemy.engine import make_url
from websockets.asyncio.client import ClientConnection, connect

# httpcore runs `import sniffio` on every request; sniffio is not installed here, so each
# request paid for a failed import (a search of sys.path: ~20% of the generator's CPU at
# 300 chairs). A None entry makes that import fail at once; httpcore then assumes asyncio.
if importlib.util.find_spec("sniffio") is None:
    sys.modules["sniffio"] = None  # type: ignore[assignment]

REPO = Path(__file__).resolve().parent.parent
RELAY_SCRIPT = REPO / "bench" / "bare_relay.py"
INGEST_PATH = "/api/v1/observations"
JSON_HEADERS = {"content-type": "application/json"}
LATE_S = 0.010  # a send this far behind its schedule counts as late
# httpcore scans its whole pool for every request (O(connections x queued)): a pool as
# large as 300 chairs costs the generator more than the relay costs the server.
POOL_SIZE = 32
KEEPALIVE_S = 4.0  # below uvicorn's 5 s keep-alive timeout
TIMEOUT_S = 30.0
RAW_MAX_CONNECTIONS = 512
P95_TARGET_RATIO = 3.0

T = TypeVar("T")
ServerKind = Literal["relay", "vigil"]
KINDS: tuple[ServerKind, ServerKind] = ("relay", "vigil")
SpotCheck = Callable[[str, datetime], bool]


@dataclass(frozen=True)
class Credentials:
    """What the generator sends: a device credential with each post, a person's token on
    the websocket handshake. The relay ignores both."""

    device: str  # vgd_…: the site's gateway credential
    viewer: str  # vgu_…: a nurse of the site


# --------------------------------------------------------------------------- results


@dataclass
class CpuUse:
    """Percent of one core over a phase (so up to 100 x nproc)."""

    server: float = 0.0
    generator: float = 0.0
    others: float = 0.0


@dataclass
class LatencyResult:
    server: ServerKind
    chairs: int
    measured_s: float = 0.0  # after warm-up
    wall_s: float = 0.0  # including warm-up and drain, what `cpu` covers
    posts: int = 0
    acked: int = 0
    refused: int = 0
    transport_errors: int = 0
    latencies_ms: list[float] = field(default_factory=list)  # after warm-up only
    lost: int = 0  # acknowledged but never seen on the websocket (after warm-up)
    resyncs: int = 0
    in_flight_max: int = 0  # posts awaiting an answer at once: grows without bound on overload
    late: int = 0
    lateness_p99_ms: float = 0.0
    lateness_max_ms: float = 0.0
    loop_lag_max_ms: float = 0.0
    spot_checks: int = 0
    spot_check_misses: int = 0
    cpu: CpuUse = field(default_factory=CpuUse)

    def pct(self, q: float) -> float:
        return percentile(self.latencies_ms, q)


@dataclass
class ThroughputResult:
    server: ServerKind
    chairs: int
    batch: int
    clients: int
    elapsed_s: float = 0.0
    warmup_acked: int = 0  # one untimed post per client first
    acked: int = 0
    refused: int = 0
    transport_errors: int = 0
    ws_samples: int = 0
    resyncs: int = 0
    post_p50_ms: float = 0.0
    post_p95_ms: float = 0.0
    cpu: CpuUse = field(default_factory=CpuUse)

    @property
    def samples_per_s(self) -> float:
        return self.acked * self.batch / self.elapsed_s if self.elapsed_s else 0.0


@dataclass
class CommitCheck:
    chairs: int
    latency_201: int
    latency_obs_per_post: int
    batch_201: int
    batch_obs_per_post: int
    rows: int

    @property
    def expected(self) -> int:
        return (
            self.latency_201 * self.latency_obs_per_post + self.batch_201 * self.batch_obs_per_post
        )

    @property
    def ok(self) -> bool:
        return self.rows == self.expected


@dataclass
class ChairsRun:
    chairs: int
    latency: dict[ServerKind, LatencyResult]
    throughput: dict[ServerKind, ThroughputResult]
    commit: CommitCheck


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, round(q / 100 * len(ordered) + 0.5 - 1e-9))
    return ordered[min(rank, len(ordered)) - 1]


# --------------------------------------------------------------------------- machine


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def system_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return total - idle, total


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU used over a phase by the measured server, this generator, and everything else
    (other processes on the machine; the benchmark's idle second server is not counted)."""

    def __init__(self, server_pid: int, idle_pids: list[int]) -> None:
        self._pid = server_pid
        self._idle = [pid for pid in idle_pids if pid != server_pid]
        self._clk = os.sysconf("SC_CLK_TCK")
        self._start = self._read()

    def _read(self) -> tuple[float, float, float, float, float]:
        busy, _ = system_jiffies()
        return (
            time.perf_counter(),
            process_cpu_s(self._pid),
            time.process_time(),
            sum(process_cpu_s(pid) for pid in self._idle),
            busy / self._clk,
        )

    def stop(self) -> CpuUse:
        end = self._read()
        wall, server, generator, idle, busy = (b - a for a, b in zip(self._start, end, strict=True))
        if wall <= 0:
            return CpuUse()
        return CpuUse(
            server=100 * server / wall,
            generator=100 * generator / wall,
            others=max(0.0, 100 * (busy - server - generator - idle) / wall),
        )


# --------------------------------------------------------------------------- databases


@contextlib.contextmanager
def scratch_database(database_url: str | None, chairs: int) -> Iterator[tuple[str, dict[str, str]]]:
    """A fresh database for one chair count: its URL and the environment for `vigil serve`."""
    if database_url is None:
        directory = tempfile.mkdtemp(prefix=f"vigil-bench-{chairs}-")
        try:
            yield f"sqlite:///{directory}/vigil.sqlite", {"VIGIL_DATA_DIR": directory}
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        return
    server = make_url(database_url)
    name = f"vigil_bench_{os.getpid()}_{chairs}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        url = server.set(database=name).render_as_string(hide_password=False)
        try:
            yield url, {"VIGIL_DATABASE_URL": url}
        finally:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def prepare_database(url: str, chairs: int) -> tuple[int, Credentials]:
    """Migrate and seed `chairs` demo chairs, a gateway credential for them and a nurse;
    the site id and the credentials."""
    from _credentials import add_gateway_credential, add_person

    from app.sites.demo import seed_demo
    from app.storage import migrate
    from app.storage.db import Database
    from app.storage.models import Role

    migrate.upgrade(url, REPO / "alembic")
    db = Database(url)
    try:
        with db.session() as session:
            site_id = seed_demo(session, chairs=chairs)
            device = add_gateway_credential(session, site_id)
            viewer = add_person(session, "bench.nurse", Role.NURSE, [site_id])
            return site_id, Credentials(device, viewer)
    finally:
        db.close()


def count_samples(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text("SELECT count(*) FROM samples")).scalar_one())


def make_spot_check(engine: Engine) -> SpotCheck:
    """Is a device's sample with this device time in the database (another connection)?"""
    from app.storage.models import Device, Sample

    def check(device: str, device_time: datetime) -> bool:
        query = (
            select(func.count())
            .select_from(Sample)
            .join(Device, Sample.device_id == Device.id)
            .where(Device.identifier == device, Sample.device_time == device_time)
        )
        with engine.connect() as connection:
            return int(connection.execute(query).scalar_one()) > 0

    return check


# --------------------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ServerProcess:
    """A server subprocess with its output in a log file; stopped by terminate, then kill."""

    running: ClassVar[set[int]] = set()  # pids of the benchmark's live servers

    def __init__(self, kind: ServerKind, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.kind = kind
        self.port = free_port()
        self.argv = [*argv, "--host", "127.0.0.1", "--port", str(self.port)]
        self.env = env
        self.log_path = log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws_url(self, site_id: int) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/sites/{site_id}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=REPO,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        ServerProcess.running.add(self.proc.pid)

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.kind} exited with {self.proc.returncode}:\n{self.tail()}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.base_url}/healthz", timeout=2.0).status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"{self.kind} not ready after {timeout_s:.0f} s:\n{self.tail()}")

    def tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self) -> None:
        if self.proc is None:
            return
        ServerProcess.running.discard(self.proc.pid)
        if self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def vigil_argv() -> list[str]:
    script = Path(sys.executable).with_name("vigil")
    if script.exists():
        return [str(script), "serve"]
    return [sys.executable, "-c", "from vigil.cli import main; main()", "serve"]


# --------------------------------------------------------------------------- load


def device_name(index: int) -> str:
    return f"demo-monitor-{index:02d}"


def iso_ms(moment: datetime) -> str:
    """UTC, millisecond precision, Z: exactly how Vigil echoes a device time."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def vitals_body(device: str, stamp: str, tick: int) -> bytes:
    hr = 70 + tick % 7
    observations = [
        {"vital": "hr", "value": hr, "unit": "/min", "device_time": stamp},
        {"vital": "spo2", "value": 97, "unit": "%", "device_time": stamp},
        {"vital": "pr", "value": hr + 1, "unit": "/min", "device_time": stamp},
    ]
    return json.dumps({"device_id": device, "observations": observations}).encode()


LATENCY_OBS_PER_POST = 3
_BATCH_VITALS = (("hr", "/min", 72.0), ("spo2", "%", 97.0), ("pr", "/min", 73.0), ("pi", "%", 2.5))


# Where each device's catch-up stands: its next post goes on from there. Vigil stores one
# sample per device, vital and device time (a resend is answered as duplicates), so posts
# whose seconds overlapped would not all be stored, and the row count would not add up.
_CATCH_UP: dict[str, datetime] = {}


def batch_body(device: str, size: int, now: datetime) -> bytes:
    """`size` observations: a gateway catching up, four vitals per past second, each post
    of a device on from where its last one ended (starting a day back)."""
    ticks = -(-size // len(_BATCH_VITALS))
    start = _CATCH_UP.get(device, now - timedelta(days=1))
    _CATCH_UP[device] = start + timedelta(seconds=ticks)
    observations = []
    for k in range(size):
        vital, unit, value = _BATCH_VITALS[k % len(_BATCH_VITALS)]
        stamp = iso_ms(start + timedelta(seconds=k // len(_BATCH_VITALS)))
        observations.append({"vital": vital, "value": value, "unit": unit, "device_time": stamp})
    return json.dumps({"device_id": device, "observations": observations}).encode()


ClientKind = Literal["httpx", "raw"]


class TransportError(Exception):
    """The post got no HTTP answer (connection refused, reset, timed out)."""


class Poster(Protocol):
    async def post(self, body: bytes) -> int:
        """POST `body` to the ingest path; the HTTP status. Raises TransportError."""
        ...

    async def aclose(self) -> None: ...


class HttpxPoster:
    """httpx.AsyncClient with a bounded keep-alive pool."""

    def __init__(self, base_url: str, pool: int, token: str) -> None:
        limits = httpx.Limits(
            max_connections=pool, max_keepalive_connections=pool, keepalive_expiry=KEEPALIVE_S
        )
        self._client = httpx.AsyncClient(base_url=base_url, limits=limits, timeout=TIMEOUT_S)
        self._headers = {**JSON_HEADERS, "authorization": f"Bearer {token}"}

    async def post(self, body: bytes) -> int:
        try:
            response = await self._client.post(INGEST_PATH, content=body, headers=self._headers)
        except httpx.HTTPError as exc:
            raise TransportError(repr(exc)) from exc
        return response.status_code

    async def aclose(self) -> None:
        await self._client.aclose()


class RawPoster:
    """A minimal HTTP/1.1 keep-alive client on asyncio streams: about a sixth of httpx's CPU
    per request, so that one process keeps a 300-chair schedule on a small shared machine.

    A connection per concurrent post up to RAW_MAX_CONNECTIONS (devices each have their
    own), reused newest first; connections idle for KEEPALIVE_S are dropped before
    uvicorn's 5 s keep-alive timeout can close them under a request. Answers must carry
    Content-Length (uvicorn's do).
    """

    def __init__(self, base_url: str, token: str) -> None:
        parsed = httpx.URL(base_url)
        self._host, self._port = parsed.host, parsed.port or 80
        self._head = (
            f"POST {INGEST_PATH} HTTP/1.1\r\nhost: {self._host}:{self._port}\r\n"
            f"authorization: Bearer {token}\r\n"
            "content-type: application/json\r\ncontent-length: "
        ).encode()
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []
        self._slots = asyncio.Semaphore(RAW_MAX_CONNECTIONS)

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        now = time.monotonic()
        while self._idle:
            reader, writer, used = self._idle.pop()
            if now - used < KEEPALIVE_S and not reader.at_eof():
                return reader, writer
            writer.close()
        try:
            return await asyncio.open_connection(self._host, self._port)
        except OSError as exc:
            raise TransportError(repr(exc)) from exc

    async def post(self, body: bytes) -> int:
        async with self._slots:
            return await self._post(body)

    async def _post(self, body: bytes) -> int:
        reader, writer = await self._connection()
        try:
            async with asyncio.timeout(TIMEOUT_S):
                writer.write(b"%s%d\r\n\r\n%s" % (self._head, len(body), body))
                head = await reader.readuntil(b"\r\n\r\n")
                status, length, keep = int(head[9:12]), 0, True
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    name = name.strip().lower()
                    if name == b"content-length":
                        length = int(value)
                    elif name == b"connection" and value.strip().lower() == b"close":
                        keep = False
                await reader.readexactly(length)
        except (OSError, EOFError, TimeoutError, ValueError, asyncio.LimitOverrunError) as exc:
            writer.close()  # IncompleteReadError is an EOFError
            raise TransportError(repr(exc)) from exc
        if keep:
            self._idle.append((reader, writer, time.monotonic()))
        else:
            writer.close()
        return status

    async def aclose(self) -> None:
        writers = [writer for _, writer, _ in self._idle]
        self._idle.clear()
        for writer in writers:
            writer.close()
        for writer in writers:
            with contextlib.suppress(OSError):
                await writer.wait_closed()


def make_poster(client: ClientKind, base_url: str, pool: int, token: str) -> Poster:
    """A poster whose every request carries `token` (a device credential)."""
    if client == "httpx":
        return HttpxPoster(base_url, pool, token)
    return RawPoster(base_url, token)


async def poll(condition: Callable[[], bool], timeout_s: float) -> bool:
    """Check `condition` every 20 ms for up to `timeout_s`; whether it became true."""
    for _ in range(max(1, int(timeout_s / 0.02))):
        if condition():
            return True
        await asyncio.sleep(0.02)
    return condition()


class LoopLag:
    """How late the event loop wakes a 10 ms sleeper: the generator's own congestion."""

    def __init__(self) -> None:
        self.max_s = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _watch(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(0.01)
            self.max_s = max(self.max_s, time.perf_counter() - before - 0.01)

    def reset(self) -> None:
        self.max_s = 0.0

    def __enter__(self) -> LoopLag:
        self._task = asyncio.create_task(self._watch())
        return self

    def __exit__(self, *_: object) -> None:
        if self._task is not None:
            self._task.cancel()


async def ws_connect_snapshot(url: str, token: str) -> tuple[ClientConnection, dict[str, Any]]:
    """Open a site's feed as the person of `token`; the connection and its snapshot."""
    ws = await connect(
        url,
        max_size=None,
        open_timeout=30,
        additional_headers={"authorization": f"Bearer {token}"},
    )
    first = json.loads(await ws.recv())
    if first.get("type") != "snapshot":
        await ws.close()
        raise RuntimeError(f"expected a snapshot first, got {first.get('type')!r}")
    return ws, first


def chair_devices(snapshot: dict[str, Any]) -> dict[int, str]:
    """chair_id → its (first) device identifier, from a Vigil snapshot."""
    return {c["chair_id"]: c["devices"][0] for c in snapshot.get("chairs", []) if c["devices"]}


async def latency_segment(
    server: ServerProcess,
    site_id: int,
    chairs: int,
    seconds: float,
    warmup: float,
    result: LatencyResult,
    spot_check: SpotCheck | None,
    client: ClientKind,
    credentials: Credentials,
) -> None:
    """One open-loop segment at 1 Hz per chair; adds to `result`."""
    ws, snapshot = await ws_connect_snapshot(server.ws_url(site_id), credentials.viewer)
    devices_by_chair = chair_devices(snapshot)
    sent: dict[tuple[str, str], tuple[float, bool]] = {}  # key → (send time, after warm-up)
    acked: set[tuple[str, str]] = set()
    seen: set[tuple[str, str]] = set()
    lateness: list[float] = []
    waiting = [0]  # posts sent and not yet answered

    def on_message(message: dict[str, Any], received: float) -> None:
        kind = message.get("type")
        if kind == "resync":
            result.resyncs += 1
            return
        if kind != "samples":
            return
        if "post" in message:  # the relay forwards the post verbatim
            device = message["post"]["device_id"]
            stamp = message["post"]["observations"][0]["device_time"]
        else:
            device = devices_by_chair.get(message["chair_id"], "")
            stamp = message["samples"][0]["device_time"]
        key = (device, stamp)
        entry = sent.get(key)
        if entry is None:
            return
        seen.add(key)
        if entry[1]:
            result.latencies_ms.append(1000 * (received - entry[0]))

    async def receive() -> None:
        async for raw in ws:
            received = time.perf_counter()
            on_message(json.loads(raw), received)

    poster = make_poster(client, server.base_url, min(chairs, POOL_SIZE), credentials.device)
    try:

        async def post(index: int, tick: int, scheduled: float, measured: bool) -> None:
            device = device_name(index)
            stamp = iso_ms(datetime.now(UTC))
            body = vitals_body(device, stamp, tick)
            key = (device, stamp)
            start = time.perf_counter()
            if measured:
                lateness.append(start - scheduled)
            sent[key] = (start, measured)
            result.posts += 1
            waiting[0] += 1
            result.in_flight_max = max(result.in_flight_max, waiting[0])
            try:
                status = await poster.post(body)
            except TransportError:
                result.transport_errors += 1
                return
            finally:
                waiting[0] -= 1
            if status != 201:
                result.refused += 1
                return
            result.acked += 1
            if measured:
                acked.add(key)
            if spot_check is not None and index == 1:
                result.spot_checks += 1
                stored_time = datetime.fromisoformat(stamp)  # as sent: milliseconds
                if not await asyncio.to_thread(spot_check, device, stored_time):
                    result.spot_check_misses += 1

        receiver = asyncio.create_task(receive())
        in_flight: set[asyncio.Task[None]] = set()
        cpu = CpuMeter(server.pid, list(ServerProcess.running))
        begin = time.perf_counter() + 0.05
        warmup_ticks = round(warmup)
        ticks = warmup_ticks + max(1, round(seconds))
        with LoopLag() as lag:
            for tick in range(ticks):
                if tick == warmup_ticks:
                    lag.reset()
                for index in range(1, chairs + 1):
                    scheduled = begin + tick + (index - 1) / chairs
                    delay = scheduled - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    task = asyncio.create_task(post(index, tick, scheduled, tick >= warmup_ticks))
                    in_flight.add(task)
                    task.add_done_callback(in_flight.discard)
            if in_flight:
                await asyncio.wait(in_flight)
            await poll(lambda: acked <= seen, timeout_s=3.0)  # stragglers on the websocket
        segment_cpu, segment_wall = cpu.stop(), time.perf_counter() - begin
        result.cpu = _merge_cpu(result.cpu, segment_cpu, result.wall_s, segment_wall)
        result.wall_s += segment_wall
        result.measured_s += ticks - warmup_ticks
        receiver.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await receiver
    finally:
        await poster.aclose()
        await ws.close()
    result.lost += len(acked - seen)
    result.late += sum(1 for x in lateness if x > LATE_S)
    result.lateness_p99_ms = max(result.lateness_p99_ms, 1000 * percentile(lateness, 99))
    result.lateness_max_ms = max(result.lateness_max_ms, 1000 * max(lateness, default=0.0))
    result.loop_lag_max_ms = max(result.loop_lag_max_ms, 1000 * lag.max_s)


def _merge_cpu(before: CpuUse, new: CpuUse, before_s: float, new_s: float) -> CpuUse:
    """Time-weighted mean of two phases' CPU use."""
    total = before_s + new_s
    return CpuUse(
        *(
            (a * before_s + b * new_s) / total
            for a, b in zip(asdict(before).values(), asdict(new).values(), strict=True)
        )
    )


async def throughput_phase(
    server: ServerProcess,
    site_id: int,
    chairs: int,
    batch: int,
    clients: int,
    seconds: float,
    client: ClientKind,
    credentials: Credentials,
) -> ThroughputResult:
    """Closed loop: `clients` posters, back to back, `batch` observations per post."""
    result = ThroughputResult(server.kind, chairs, batch, clients)
    ws, _ = await ws_connect_snapshot(server.ws_url(site_id), credentials.viewer)
    post_times: list[float] = []
    counting = False

    async def receive() -> None:
        # Counted without parsing (both servers put "type" first): the generator stays light.
        async for raw in ws:
            head = raw[:24] if isinstance(raw, str) else raw[:24].decode()
            if head.startswith('{"type":"samples"'):
                result.ws_samples += batch if counting else 0
            elif head.startswith('{"type":"resync"'):
                result.resyncs += 1

    async def send(poster: Poster, device: str) -> bool | None:
        """True: 201; False: refused; None: transport error."""
        body = batch_body(device, batch, datetime.now(UTC))
        try:
            return await poster.post(body) == 201
        except TransportError:
            return None

    def tally(outcome: bool | None, warmup: bool) -> None:
        if outcome is None:
            result.transport_errors += 1
        elif not outcome:
            result.refused += 1
        elif warmup:
            result.warmup_acked += 1
        else:
            result.acked += 1

    poster = make_poster(client, server.base_url, clients, credentials.device)
    try:

        async def worker(number: int, deadline: float) -> None:
            device = device_name(1 + number % chairs)
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                outcome = await send(poster, device)
                post_times.append(time.perf_counter() - start)
                tally(outcome, warmup=False)

        receiver = asyncio.create_task(receive())
        # One untimed post per client first: connections open, code paths warm.
        devices = [device_name(1 + n % chairs) for n in range(clients)]
        for outcome in await asyncio.gather(*(send(poster, d) for d in devices)):
            tally(outcome, warmup=True)
        await asyncio.sleep(0.2)
        counting = True
        cpu = CpuMeter(server.pid, list(ServerProcess.running))
        start = time.perf_counter()
        await asyncio.gather(*(worker(n, start + seconds) for n in range(clients)))
        result.elapsed_s = time.perf_counter() - start
        result.cpu = cpu.stop()
        await poll(lambda: result.ws_samples >= result.acked * batch, timeout_s=3.0)
        receiver.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await receiver
    finally:
        await poster.aclose()
        await ws.close()
    result.post_p50_ms = 1000 * percentile(post_times, 50)
    result.post_p95_ms = 1000 * percentile(post_times, 95)
    return result


# --------------------------------------------------------------------------- orchestration


@dataclass(frozen=True)
class Options:
    chairs: list[int]
    seconds: float
    warmup: float
    rounds: int
    throughput_seconds: float
    batch: int
    clients: int
    database_url: str | None
    json_path: Path | None
    client: ClientKind = "raw"


async def measure(
    servers: dict[ServerKind, ServerProcess],
    site_ids: dict[ServerKind, int],
    chairs: int,
    options: Options,
    spot_check: SpotCheck,
    credentials: Credentials,
) -> tuple[dict[ServerKind, LatencyResult], dict[ServerKind, ThroughputResult]]:
    latency = {kind: LatencyResult(kind, chairs) for kind in KINDS}
    segment = options.seconds / options.rounds
    for round_ in range(options.rounds):
        # Alternate who goes first, so slow drifts in background load hit both alike.
        for kind in KINDS if round_ % 2 == 0 else KINDS[::-1]:
            print(f"  latency  {chairs:>4} chairs  {kind:<5} round {round_ + 1}/{options.rounds}")
            await latency_segment(
                servers[kind],
                site_ids[kind],
                chairs,
                segment,
                options.warmup,
                latency[kind],
                spot_check if kind == "vigil" else None,
                options.client,
                credentials,
            )
    throughput: dict[ServerKind, ThroughputResult] = {}
    for kind in KINDS:
        print(f"  batches  {chairs:>4} chairs  {kind:<5} {options.throughput_seconds:g} s")
        throughput[kind] = await throughput_phase(
            servers[kind],
            site_ids[kind],
            chairs,
            options.batch,
            options.clients,
            options.throughput_seconds,
            options.client,
            credentials,
        )
    return latency, throughput


def run_chairs(chairs: int, options: Options, workdir: Path) -> ChairsRun:
    with contextlib.ExitStack() as stack:
        url, db_env = stack.enter_context(scratch_database(options.database_url, chairs))
        site_id, credentials = prepare_database(url, chairs)
        env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}
        env.update(db_env)
        env["PYTHONUNBUFFERED"] = "1"
        servers: dict[ServerKind, ServerProcess] = {
            "vigil": ServerProcess("vigil", vigil_argv(), env, workdir / f"vigil-{chairs}.log"),
            "relay": ServerProcess(
                "relay", [sys.executable, str(RELAY_SCRIPT)], env, workdir / f"relay-{chairs}.log"
            ),
        }
        for server in servers.values():
            stack.callback(server.stop)
            server.start()
        for server in servers.values():
            server.wait_ready()
        engine = create_engine(url) if not url.startswith("sqlite") else _sqlite_reader(url)
        stack.callback(engine.dispose)
        before = count_samples(engine)
        latency, throughput = _run_async(
            measure(
                servers,
                {"vigil": site_id, "relay": 1},
                chairs,
                options,
                make_spot_check(engine),
                credentials,
            )
        )
        rows = count_samples(engine) - before
        vigil_batches = throughput["vigil"]
        commit = CommitCheck(
            chairs=chairs,
            latency_201=latency["vigil"].acked,
            latency_obs_per_post=LATENCY_OBS_PER_POST,
            batch_201=vigil_batches.acked + vigil_batches.warmup_acked,
            batch_obs_per_post=options.batch,
            rows=rows,
        )
        return ChairsRun(chairs, latency, throughput, commit)


def _sqlite_reader(url: str) -> Engine:
    from app.storage.db import make_engine

    return make_engine(url)  # same pragmas (WAL) as the server


def _run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop when available (as uvicorn does): a lighter generator.

    What the generator imported and built to seed the database is frozen first, as
    `vigil serve` freezes its own start-up (vigil/cli.py): a full collection over it would
    stall the generator's loop for about 100 ms and make its sends late.
    """
    gc.collect()
    gc.freeze()
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


# --------------------------------------------------------------------------- report


def database_label(database_url: str | None) -> str:
    if database_url is None:
        import sqlite3

        return f"SQLite {sqlite3.sqlite_version} (WAL, synchronous=FULL), temporary file"
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            version = str(connection.execute(text("SHOW server_version")).scalar_one())
    finally:
        engine.dispose()
    safe = make_url(database_url).render_as_string(hide_password=True)
    return f"PostgreSQL {version.split()[0]} at {safe} (scratch database per chair count)"


def _ms(value: float) -> str:
    return "n/a" if value != value else f"{value:.1f}"  # NaN check


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b and a == a and b == b else "n/a"


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def fell_behind(lat: LatencyResult) -> bool:
    """More than 1 % of sends late, or the generator's loop stalled for over 50 ms."""
    return lat.late > 0.01 * max(lat.posts, 1) or lat.loop_lag_max_ms > 50


def verdict(run: ChairsRun) -> str:
    """MET / NOT MET, or no verdict when the generator's own lag could decide it.

    Generator lag only ever adds to a measured latency: a slow baseline voids the
    ratio, a slow Vigil round voids only a NOT MET that its lag could explain.
    """
    relay, vigil = run.latency["relay"], run.latency["vigil"]
    limit = P95_TARGET_RATIO * relay.pct(95)
    if fell_behind(relay):
        return "NO VERDICT (generator fell behind during the relay baseline; try --client raw)"
    if vigil.pct(95) <= limit:
        return "MET"
    if not fell_behind(vigil) or vigil.pct(95) - vigil.loop_lag_max_ms > limit:
        return "NOT MET"
    return "NO VERDICT (generator fell behind during Vigil's rounds)"


def render(runs: list[ChairsRun], options: Options, context: dict[str, str]) -> str:
    from websockets.version import version as websockets_version

    out = [
        "Vigil ingest -> websocket benchmark (bench/bench_ingest.py)",
        f"  command:   {context['command']}",
        f"  date:      {context['date']}",
        f"  machine:   nproc {context['nproc']}, {context['cpu']}, {context['platform']}",
        f"  python:    {context['python']}",
        f"  database:  {context['database']}",
        f"  load avg:  before {context['load_before']}, after {context['load_after']}",
        f"  latency:   1 Hz per chair, {LATENCY_OBS_PER_POST} observations per post, chair i "
        f"at i/N s; {options.seconds:g} s measured per server in {options.rounds} alternating "
        f"round(s), first {options.warmup:g} s of each discarded",
        f"  generator: one asyncio process (uvloop), HTTP client {options.client}, websockets "
        f"{websockets_version}",
        f"  batches:   {options.clients} clients back to back, {options.batch} observations "
        f"per post, {options.throughput_seconds:g} s",
        "",
    ]
    rows = []
    for run in runs:
        relay_l, vigil_l = run.latency["relay"], run.latency["vigil"]
        relay_t, vigil_t = run.throughput["relay"], run.throughput["vigil"]
        for kind in KINDS:
            lat, thr = run.latency[kind], run.throughput[kind]
            is_vigil = kind == "vigil"
            rows.append(
                [
                    str(run.chairs),
                    kind,
                    _ms(lat.pct(50)),
                    _ms(lat.pct(95)),
                    _ms(lat.pct(99)),
                    f"{thr.samples_per_s:,.0f}",
                    _ratio(vigil_l.pct(95), relay_l.pct(95)) if is_vigil else "",
                    _ratio(vigil_l.pct(99), relay_l.pct(99)) if is_vigil else "",
                    _ratio(vigil_t.samples_per_s, relay_t.samples_per_s) if is_vigil else "",
                ]
            )
    out.append(
        _table(
            [
                "chairs",
                "server",
                "p50 ms",
                "p95 ms",
                "p99 ms",
                "samples/s",
                "p95 v/r",
                "p99 v/r",
                "samples/s v/r",
            ],
            rows,
        )
    )
    out += ["", "Latency phase: load and generator health (CPU in % of one core)"]
    rows = []
    for run in runs:
        for kind in KINDS:
            lat = run.latency[kind]
            rows.append(
                [
                    str(run.chairs),
                    kind,
                    str(len(lat.latencies_ms)),
                    f"{lat.acked}/{lat.posts}",
                    str(lat.refused + lat.transport_errors),
                    str(lat.lost),
                    str(lat.resyncs),
                    str(lat.in_flight_max),
                    f"{lat.late} ({_ms(lat.lateness_p99_ms)}/{_ms(lat.lateness_max_ms)})",
                    _ms(lat.loop_lag_max_ms),
                    f"{lat.cpu.server:.0f}/{lat.cpu.generator:.0f}/{lat.cpu.others:.0f}",
                ]
            )
    out.append(
        _table(
            [
                "chairs",
                "server",
                "measured",
                "201/posts",
                "errors",
                "lost",
                "resyncs",
                "in flight max",
                "late>10ms (p99/max ms)",
                "loop lag max ms",
                "CPU srv/gen/other",
            ],
            rows,
        )
    )
    out += ["", "Batch phase"]
    rows = []
    for run in runs:
        for kind in KINDS:
            thr = run.throughput[kind]
            rows.append(
                [
                    str(run.chairs),
                    kind,
                    str(thr.acked),
                    str(thr.refused + thr.transport_errors),
                    f"{_ms(thr.post_p50_ms)}/{_ms(thr.post_p95_ms)}",
                    f"{thr.ws_samples}/{thr.acked * thr.batch}",
                    str(thr.resyncs),
                    f"{thr.cpu.server:.0f}/{thr.cpu.generator:.0f}/{thr.cpu.others:.0f}",
                ]
            )
    out.append(
        _table(
            [
                "chairs",
                "server",
                "201s",
                "errors",
                "post p50/p95 ms",
                "ws samples/acked",
                "resyncs",
                "CPU srv/gen/other",
            ],
            rows,
        )
    )
    out += ["", "Checks"]
    for run in runs:
        c, lat = run.commit, run.latency["vigil"]
        rows_ok = "OK" if c.ok else "MISMATCH"
        out.append(
            f"  {run.chairs:>4} chairs: rows in samples {c.rows} = {c.latency_201} x "
            f"{c.latency_obs_per_post} + {c.batch_201} x {c.batch_obs_per_post} "
            f"(201 answers x observations per post) = {c.expected}: {rows_ok}; "
            f"chair 1 visible right after its 201: "
            f"{lat.spot_checks - lat.spot_check_misses}/{lat.spot_checks}"
        )
    for run in runs:
        limit = P95_TARGET_RATIO * run.latency["relay"].pct(95)
        out.append(
            f"  {run.chairs:>4} chairs: target p95 <= {P95_TARGET_RATIO:g}x relay "
            f"({_ms(limit)} ms): vigil {_ms(run.latency['vigil'].pct(95))} ms -> {verdict(run)}"
        )
    for run in runs:
        for kind, lat in run.latency.items():
            if fell_behind(lat):
                out.append(
                    f"  WARNING {run.chairs} chairs {kind}: generator fell behind "
                    f"({lat.late} late sends, loop lag up to {lat.loop_lag_max_ms:.0f} ms)"
                )
    return "\n".join(out)


def parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        description="Vigil ingest -> websocket latency and throughput against a bare relay."
    )
    parser.add_argument("--chairs", type=int, nargs="+", default=[30, 300])
    parser.add_argument(
        "--seconds",
        type=float,
        default=20.0,
        help="latency seconds measured per server and chair count",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=2.0,
        help="seconds discarded at the start of each latency round",
    )
    parser.add_argument(
        "--rounds", type=int, default=2, help="alternating relay/vigil latency rounds"
    )
    parser.add_argument("--throughput-seconds", type=float, default=8.0)
    parser.add_argument("--batch", type=int, default=100, help="observations per batch post")
    parser.add_argument("--clients", type=int, default=4, help="concurrent batch posters")
    parser.add_argument(
        "--database-url",
        default=None,
        help="PostgreSQL server to create scratch databases on (default SQLite)",
    )
    parser.add_argument(
        "--client",
        choices=["raw", "httpx"],
        default="raw",
        help="HTTP client of the load generator: raw (default), a minimal keep-alive "
        "HTTP/1.1 client; or httpx.AsyncClient (pool of 32), at six times the CPU per post",
    )
    parser.add_argument(
        "--json", dest="json_path", type=Path, default=None, help="also write the results here"
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run, about 20 s: 30 chairs, short phases"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.chairs, args.seconds, args.warmup, args.rounds = [30], 4.0, 1.0, 1
        args.throughput_seconds = 2.0
    if args.rounds < 1 or args.seconds <= 0 or args.batch < 1 or args.clients < 1:
        parser.error("--rounds, --seconds, --batch and --clients must be positive")
    return Options(
        chairs=args.chairs,
        seconds=args.seconds,
        warmup=args.warmup,
        rounds=args.rounds,
        throughput_seconds=args.throughput_seconds,
        batch=args.batch,
        clients=args.clients,
        database_url=args.database_url,
        json_path=args.json_path,
        client=args.client,
    )


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    # SIGTERM (a CI timeout, `kill`) unwinds like Ctrl-C, so the servers are still stopped.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return _main(parse_args(argv), argv)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _main(options: Options, argv: list[str] | None) -> int:
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    context = {
        "command": " ".join(["python", *sys.argv]) if argv is None else " ".join(argv),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": str(os.cpu_count()),
        "cpu": cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "database": database_label(options.database_url),
        "load_before": load,
    }
    runs = []
    with tempfile.TemporaryDirectory(prefix="vigil-bench-logs-") as tmp:
        for chairs in options.chairs:
            print(f"{chairs} chairs: starting vigil and the relay", flush=True)
            runs.append(run_chairs(chairs, options, Path(tmp)))
    context["load_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print()
    print(render(runs, options, context))
    if options.json_path is not None:
        payload = {
            "context": context,
            "options": {**asdict(options), "json_path": str(options.json_path)},
            "runs": [
                {
                    "chairs": run.chairs,
                    "latency": {
                        k: {
                            **asdict(v),
                            "latencies_ms": None,
                            "p50_ms": v.pct(50),
                            "p95_ms": v.pct(95),
                            "p99_ms": v.pct(99),
                        }
                        for k, v in run.latency.items()
                    },
                    "throughput": {
                        k: {**asdict(v), "samples_per_s": v.samples_per_s}
                        for k, v in run.throughput.items()
                    },
                    "commit": {
                        **asdict(run.commit),
                        "expected": run.commit.expected,
                        "ok": run.commit.ok,
                    },
                }
                for run in runs
            ],
        }
        options.json_path.write_text(json.dumps(payload, indent=2))
    failed = any(
        not run.commit.ok
        or run.latency["vigil"].spot_check_misses
        or any(r.refused or r.transport_errors for r in run.latency.values())
        or any(r.refused or r.transport_errors for r in run.throughput.values())
        for run in runs
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
