"""Ingest latency while a clinician draws reports and lists sessions (issue 13), beside the
same ingest alone, in one run on one server.

``vigil serve`` runs as a real uvicorn subprocess on a scratch SQLite database seeded with
``--chairs`` demo chairs (bench_ingest.prepare_database) and, written straight through the
storage models, one discharged two-hour session as a monitor records it: HR, PR, SpO2 and
PI each second, NIBP every 5 minutes (bench_review.add_recorded_session, ~29,000 samples).

Every chair posts HR, SpO2 and PR once a second at its own phase (chair i at i/N into each
second), open loop, with the site's gateway credential; the latency is device POST -> 201
(the samples are committed before the answer). In the "alone" segments nothing else
happens; in the "reviews" segments a clinician, signed in with an API token, meanwhile
fetches the two-hour session's PDF report and then the site's review session list, back to
back, for the whole segment. The two kinds of segment alternate (alone, reviews, reviews,
alone, ...) so that slow drifts in the machine's other load hit both alike; the first
``--warmup`` seconds of each segment are discarded. Before the first segment one report
and one list are fetched and thrown away (the report's worker process starts then).

    .venv/bin/python bench/bench_review_load.py                 # 30 chairs, 2 x 2 x 30 s
    .venv/bin/python bench/bench_review_load.py --seconds 20    # shorter

Exit status 0 when every post was answered 201, every report and list 200, and the rows in
``samples`` match the 201 answers; 1 otherwise (the latencies are reported, not judged).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import httpx
from _credentials import add_person
from bench_ingest import (
    LATENCY_OBS_PER_POST,
    LoopLag,
    Poster,
    ServerProcess,
    TransportError,
    _ms,
    _ratio,
    _run_async,
    _sqlite_reader,
    _table,
    count_samples,
    cpu_model,
    device_name,
    iso_ms,
    make_poster,
    percentile,
    prepare_database,
    process_cpu_s,
    scratch_database,
    vigil_argv,
    vitals_body,
)
from bench_review import add_recorded_session
from sqlalchemy import select

Condition = Literal["alone", "reviews"]
CONDITIONS: tuple[Condition, Condition] = ("alone", "reviews")
REPORT_PATH = "/api/v1/review/sessions/{}/report.pdf"
LIST_PATH = "/api/v1/review/sessions"
CLIENT_TIMEOUT_S = 120.0


@dataclass
class Seeded:
    site_id: int
    long_session_id: int
    long_session_samples: int
    device_token: str
    clinician_token: str


@dataclass
class Measured:
    """One condition over all its segments."""

    condition: Condition
    posts: int = 0
    acked: int = 0
    failed: list[str] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)  # after warm-up only
    late_sends: int = 0  # more than 10 ms behind schedule: the generator's own lag
    loop_lag_max_ms: float = 0.0
    reports_s: list[float] = field(default_factory=list)
    lists_s: list[float] = field(default_factory=list)
    server_cpu: list[float] = field(default_factory=list)  # % of one core, per segment
    worker_cpu: list[float] = field(default_factory=list)  # the server's child processes

    def pct(self, q: float) -> float:
        return percentile(self.latencies_ms, q)


def seed(url: str, chairs: int) -> Seeded:
    """The demo clinic with credentials (bench_ingest), a clinician of its site, and a
    two-hour session on its first chair."""
    from app.storage.db import Database
    from app.storage.models import Chair, Device, InfusionSession, Role

    site_id, credentials = prepare_database(url, chairs)
    db = Database(url)
    try:
        with db.session() as session:
            chair_id, device_id = session.execute(
                select(Chair.id, Device.id)
                .join(Device, Device.chair_id == Chair.id)
                .where(Chair.site_id == site_id, Chair.position == 1)
            ).one()
            patient_id = session.scalars(
                select(InfusionSession.patient_id).where(InfusionSession.chair_id == chair_id)
            ).first()
            assert patient_id is not None, "the demo chair has no patient"
            start = datetime.now(UTC) - timedelta(hours=3)
            session_id, samples = add_recorded_session(
                session, chair_id, device_id, patient_id, start, seed=3
            )
            session.commit()
            clinician = add_person(session, "bench.clinician", Role.CLINICIAN, [site_id])
    finally:
        db.close()
    return Seeded(site_id, session_id, samples, credentials.device, clinician)


def descendants(pid: int) -> list[int]:
    """The processes under `pid` (the server's fork server and report worker), from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: list[int] = []
    frontier = [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


class ServerCpu:
    """CPU of the server's own process and of its children over a segment, in % of a core."""

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self._start = self._read()

    def _read(self) -> tuple[float, float, float]:
        workers = sum(process_cpu_s(child) for child in descendants(self._pid))
        return time.perf_counter(), process_cpu_s(self._pid), workers

    def stop(self) -> tuple[float, float]:
        wall, server, workers = (b - a for a, b in zip(self._start, self._read(), strict=True))
        return 100 * server / wall, 100 * workers / wall


async def ingest_segment(
    poster: Poster, chairs: int, seconds: float, warmup: float, result: Measured
) -> None:
    """Every chair posts once a second at its own phase, open loop; adds to `result`."""
    in_flight: set[asyncio.Task[None]] = set()

    async def post(index: int, tick: int, scheduled: float, measured: bool) -> None:
        body = vitals_body(device_name(index), iso_ms(datetime.now(UTC)), tick)
        start = time.perf_counter()
        if measured and start - scheduled > 0.010:
            result.late_sends += 1
        result.posts += 1
        try:
            status = await poster.post(body)
        except TransportError as exc:
            result.failed.append(f"post: {exc}")
            return
        if status != 201:
            result.failed.append(f"post: HTTP {status}")
            return
        result.acked += 1
        if measured:
            result.latencies_ms.append(1000 * (time.perf_counter() - start))

    warmup_ticks = round(warmup)
    ticks = warmup_ticks + max(1, round(seconds))
    begin = time.perf_counter() + 0.05
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
    result.loop_lag_max_ms = max(result.loop_lag_max_ms, 1000 * lag.max_s)


async def review_once(client: httpx.AsyncClient, seeded: Seeded, result: Measured | None) -> None:
    """The clinician's round: the two-hour session's PDF, then the site's session list."""
    for path, params, into in (
        (REPORT_PATH.format(seeded.long_session_id), None, "reports_s"),
        (LIST_PATH, {"site_id": seeded.site_id, "page_size": 50}, "lists_s"),
    ):
        began = time.perf_counter()
        response = await client.get(path, params=params)
        took = time.perf_counter() - began
        if response.status_code != 200:
            message = f"{path}: HTTP {response.status_code} {response.text[:200]}"
            if result is None:
                raise RuntimeError(message)
            result.failed.append(message)
        elif result is not None:
            getattr(result, into).append(took)


async def clinician(
    client: httpx.AsyncClient, seeded: Seeded, result: Measured, stop: asyncio.Event
) -> None:
    while not stop.is_set():
        await review_once(client, seeded, result)


async def measure(
    server: ServerProcess, seeded: Seeded, options: Options
) -> dict[Condition, Measured]:
    results = {condition: Measured(condition) for condition in CONDITIONS}
    headers = {"authorization": f"Bearer {seeded.clinician_token}"}
    poster = make_poster("raw", server.base_url, options.chairs, seeded.device_token)
    async with httpx.AsyncClient(
        base_url=server.base_url, headers=headers, timeout=CLIENT_TIMEOUT_S
    ) as client:
        try:
            print("  warm-up: one report and one list (the report's worker starts)", flush=True)
            await review_once(client, seeded, None)
            for round_ in range(options.rounds):
                for condition in CONDITIONS if round_ % 2 == 0 else CONDITIONS[::-1]:
                    print(f"  {condition:<7} round {round_ + 1}/{options.rounds}", flush=True)
                    result = results[condition]
                    stop = asyncio.Event()
                    reviewer = None
                    if condition == "reviews":
                        reviewer = asyncio.create_task(clinician(client, seeded, result, stop))
                    cpu = ServerCpu(server.pid)
                    await ingest_segment(
                        poster, options.chairs, options.seconds / options.rounds,
                        options.warmup, result,
                    )  # fmt: skip
                    server_cpu, worker_cpu = cpu.stop()
                    result.server_cpu.append(server_cpu)
                    result.worker_cpu.append(worker_cpu)
                    stop.set()
                    if reviewer is not None:
                        await reviewer  # the round under way finishes, outside the segment
        finally:
            await poster.aclose()
    return results


@dataclass(frozen=True)
class Options:
    chairs: int
    seconds: float
    warmup: float
    rounds: int
    json_path: Path | None


def run(options: Options, logs: Path) -> tuple[Seeded, dict[Condition, Measured], int, int]:
    """Seed, serve, measure; the seeded data, the results, and the rows that the run added
    to `samples` beside the rows its 201 answers account for."""
    with contextlib.ExitStack() as stack:
        url, db_env = stack.enter_context(scratch_database(None, options.chairs))
        seeded = seed(url, options.chairs)
        env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}
        env.update(db_env)
        env["PYTHONUNBUFFERED"] = "1"
        server = ServerProcess("vigil", vigil_argv(), env, logs / "vigil.log")
        stack.callback(server.stop)
        server.start()
        server.wait_ready()
        engine = _sqlite_reader(url)
        stack.callback(engine.dispose)
        before = count_samples(engine)
        results = _run_async(measure(server, seeded, options))
        added = count_samples(engine) - before
        expected = sum(r.acked for r in results.values()) * LATENCY_OBS_PER_POST
        return seeded, results, added, expected


def _median_s(values: list[float]) -> str:
    return f"{statistics.median(values):.2f}" if values else "n/a"


def render(
    options: Options,
    seeded: Seeded,
    results: dict[Condition, Measured],
    context: dict[str, str],
    rows: tuple[int, int],
) -> str:
    alone, reviews = results["alone"], results["reviews"]
    out = [
        "Vigil ingest while reports and reviews run (bench/bench_review_load.py, issue 13)",
        f"  command:  {context['command']}",
        f"  date:     {context['date']}",
        f"  machine:  nproc {context['nproc']}, {context['machine']}, {context['cpu']}",
        f"  python:   {context['python']}; SQLite {sqlite3.sqlite_version} (WAL, FULL)",
        f"  load avg: before {context['load_before']}, after {context['load_after']}",
        f"  ingest:   {options.chairs} chairs, 1 post/s each ({LATENCY_OBS_PER_POST} "
        f"observations), chair i at i/N s; latency = POST -> 201",
        f"  segments: {options.rounds} per condition, alternating, "
        f"{options.seconds / options.rounds:g} s measured each after {options.warmup:g} s "
        "discarded",
        f"  reviews:  a clinician loops: PDF report of a 2-hour session "
        f"({seeded.long_session_samples} samples), then the site's session list",
        "",
    ]
    table = []
    for result in (alone, reviews):
        table.append(
            [
                result.condition,
                f"{len(result.latencies_ms)}",
                _ms(result.pct(50)),
                _ms(result.pct(95)),
                _ms(result.pct(99)),
                _ms(max(result.latencies_ms, default=float("nan"))),
                f"{len(result.reports_s)} ({_median_s(result.reports_s)} s)",
                f"{len(result.lists_s)} ({_median_s(result.lists_s)} s)",
                f"{statistics.mean(result.server_cpu):.0f}/{statistics.mean(result.worker_cpu):.0f}"
                if result.server_cpu
                else "n/a",
            ]
        )
    table.append(
        [
            "ratio",
            "",
            _ratio(reviews.pct(50), alone.pct(50)),
            _ratio(reviews.pct(95), alone.pct(95)),
            _ratio(reviews.pct(99), alone.pct(99)),
            "",
            "",
            "",
            "",
        ]
    )
    header = ["condition", "posts", "p50 ms", "p95 ms", "p99 ms", "max ms"]
    header += ["reports (median)", "lists (median)", "CPU % server/worker"]
    out.append(_table(header, table))
    out += ["", "Checks"]
    added, expected = rows
    out.append(
        f"  rows added to samples {added} = 201 answers x {LATENCY_OBS_PER_POST} = {expected}: "
        f"{'OK' if added == expected else 'MISMATCH'}"
    )
    for result in (alone, reviews):
        out.append(
            f"  {result.condition}: {result.acked}/{result.posts} posts answered 201, "
            f"{len(result.failed)} failures, generator: {result.late_sends} late sends, "
            f"loop lag max {result.loop_lag_max_ms:.0f} ms"
        )
        out += [f"    {failure}" for failure in result.failed[:5]]
    return "\n".join(out)


def parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--chairs", type=int, default=30)
    parser.add_argument(
        "--seconds", type=float, default=60.0, help="measured seconds per condition"
    )
    parser.add_argument("--warmup", type=float, default=2.0, help="discarded per segment")
    parser.add_argument("--rounds", type=int, default=2, help="segments per condition")
    parser.add_argument("--json", dest="json_path", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.chairs < 1 or args.seconds <= 0 or args.rounds < 1:
        parser.error("--chairs, --seconds and --rounds must be positive")
    return Options(args.chairs, args.seconds, args.warmup, args.rounds, args.json_path)


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    context = {
        "command": " ".join(["python", *sys.argv]) if argv is None else " ".join(argv),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": str(os.cpu_count()),
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "load_before": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
    print(f"{options.chairs} chairs: seeding, then starting vigil", flush=True)
    with tempfile.TemporaryDirectory(prefix="vigil-bench-logs-") as logs:
        seeded, results, added, expected = run(options, Path(logs))
    context["load_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print()
    print(render(options, seeded, results, context, (added, expected)))
    if options.json_path is not None:
        payload = {
            "context": context,
            "rows": {"added": added, "expected": expected},
            "results": {
                condition: {
                    "posts": r.posts,
                    "acked": r.acked,
                    "failed": r.failed,
                    "p50_ms": r.pct(50),
                    "p95_ms": r.pct(95),
                    "p99_ms": r.pct(99),
                    "reports_s": r.reports_s,
                    "lists_s": r.lists_s,
                    "server_cpu": r.server_cpu,
                    "worker_cpu": r.worker_cpu,
                }
                for condition, r in results.items()
            },
        }
        options.json_path.write_text(json.dumps(payload, indent=2))
    failed = added != expected or any(r.failed or r.acked != r.posts for r in results.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
