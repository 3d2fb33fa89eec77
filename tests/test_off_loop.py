"""Slow work stays off the event loop, and reads stay off the writer (issue 13).

A real uvicorn server draws the report of a two-hour session while another thread hits
/healthz and posts samples every 20 ms: none of those may wait anywhere near as long as
the report takes. Beside it, the database's two paths: a read runs while the writer is
busy, sees one snapshot, and cannot write.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, insert, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from app.storage.db import Database
from app.storage.models import Device, InfusionSession, Patient, Sample, SessionPhase, Site
from app.timeutil import iso, utcnow
from tests.conftest import Clinic, LiveServer

PROBE_EVERY_S = 0.020
PROBE_LIMIT_S = 0.150  # far below what a report takes (0.3 s at the very least)
REPORT_AT_LEAST_S = 0.3


@pytest.fixture
def frozen_start_up() -> Iterator[None]:
    """What `vigil serve` does before serving: start-up objects are left out of every
    later garbage collection, which would otherwise walk them all and stop every thread
    (app/cli.py)."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def seed_two_hour_session(url: str) -> int:
    """A discharged two-hour session on the first demo chair, written through the storage
    models: HR, SpO2 and PI each second, a blood pressure every 5 minutes."""
    db = Database(url)
    try:
        with db.session() as session:
            chair_id, device_id = session.execute(
                select(Device.chair_id, Device.id).where(Device.identifier == "demo-monitor-01")
            ).one()
            patient_id = session.scalars(select(Patient.id)).first()
            start = utcnow() - timedelta(hours=3)
            infusion = InfusionSession(
                chair_id=chair_id,
                patient_id=patient_id,
                phase=SessionPhase.DISCHARGED,
                started_at=start,
                ended_at=start + timedelta(hours=2),
            )
            session.add(infusion)
            session.flush()
            rows: list[dict[str, Any]] = []
            for second in range(7200):
                values = [("hr", 70 + second % 9, "/min"), ("spo2", 97 - second % 3, "%")]
                values.append(("pi", 2.5, "%"))
                if second % 300 == 0:
                    values += [("nibp_sys", 124, "mm[Hg]"), ("nibp_dia", 82, "mm[Hg]")]
                    values.append(("nibp_mean", 96, "mm[Hg]"))
                at = start + timedelta(seconds=second)
                rows += [
                    {"session_id": infusion.id, "device_id": device_id, "chair_id": chair_id,
                     "vital": vital, "value": value, "unit": unit, "device_time": at,
                     "received_time": at + timedelta(milliseconds=200), "quality": 0}
                    for vital, value, unit in values
                ]  # fmt: skip
            session.execute(insert(Sample), rows)
            session.commit()
            return infusion.id
    finally:
        db.close()


@dataclass
class Probe:
    """Hits the server every 20 ms from its own thread: /healthz, and every third time a
    device's sample. Each request's wait is kept with the moment it was sent."""

    server: LiveServer
    clinic: Clinic
    waits: list[tuple[float, float, str]] = field(default_factory=list)  # sent, wait, what
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with httpx.Client(base_url=self.server.http_url, timeout=10) as client:
            tick = 0
            while not self._stop.is_set():
                tick += 1
                sent = time.perf_counter()
                if tick % 3:
                    response = client.get("/healthz")
                    what, expected = "healthz", 200
                else:
                    body = {"device_id": "demo-monitor-02", "observations": [
                        {"vital": "hr", "value": 72, "unit": "/min", "device_time": iso(utcnow())}
                    ]}  # fmt: skip
                    response = client.post(
                        "/api/v1/observations", json=body, headers=self.clinic.device_auth
                    )
                    what, expected = "sample", 201
                wait = time.perf_counter() - sent
                self.waits.append((sent, wait, what))
                if response.status_code != expected:
                    self.failures.append(f"{what}: {response.status_code} {response.text[:200]}")
                time.sleep(max(0.0, PROBE_EVERY_S - wait))

    def waits_between(self, begin: float, end: float) -> list[tuple[float, str]]:
        """Requests that were in flight at some moment between `begin` and `end`."""
        return [
            (wait, what) for sent, wait, what in self.waits if sent < end and sent + wait > begin
        ]

    def stop(self) -> None:
        self._stop.set()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_long_report_does_not_hold_up_samples_or_health_checks(
    frozen_start_up: None, live_server: LiveServer, clinic: Clinic
) -> None:
    session_id = seed_two_hour_session(clinic.url)
    report_url = f"{live_server.http_url}/api/v1/review/sessions/{session_id}/report.pdf"
    clinician = clinic.auth("clinician")
    # Once first: the worker process starts and the connections open; the second is timed.
    assert httpx.get(report_url, headers=clinician, timeout=60).status_code == 200

    probe = Probe(live_server, clinic)
    prober = threading.Thread(target=probe.run, daemon=True)
    prober.start()
    try:
        time.sleep(0.3)  # the probe's own first requests settle
        began = time.perf_counter()
        response = httpx.get(report_url, headers=clinician, timeout=60)
        ended = time.perf_counter()
        time.sleep(0.1)
    finally:
        probe.stop()
        prober.join(timeout=15)

    assert response.status_code == 200
    assert response.content.startswith(b"%PDF")
    assert not probe.failures, probe.failures
    report_s = ended - began
    assert report_s >= REPORT_AT_LEAST_S, f"the report took {report_s:.3f} s: too short to tell"
    during = probe.waits_between(began, ended)
    longest, what = max(during)
    assert longest < PROBE_LIMIT_S, (
        f"a {what} request waited {1000 * longest:.0f} ms while the {report_s:.2f} s report "
        f"was drawn: something blocked the event loop"
    )
    # The probe kept going: one request every 20 ms plus its own time, most of them at least.
    assert len(during) >= report_s / (PROBE_EVERY_S + 0.030) / 2, (len(during), report_s)
    assert {what for _, what in during} == {"healthz", "sample"}


@pytest.fixture
def db(migrated_url: str) -> Iterator[Database]:
    database = Database(migrated_url)
    try:
        yield database
    finally:
        database.close()


def add_site(session: Session, name: str) -> None:
    session.execute(
        text("INSERT INTO sites (name, created_at) VALUES (:name, CURRENT_TIMESTAMP)"),
        {"name": name},
    )
    session.commit()


def site_names(session: Session) -> list[str]:
    return sorted(session.scalars(select(Site.name)))


def test_a_read_cannot_write(db: Database) -> None:
    """A read callable that writes fails on its read-only connection, and nothing is kept."""
    with pytest.raises(DBAPIError, match=r"(?i)read-?only"):
        asyncio.run(db.read(add_site, "Written by a read"))
    with db.session() as session:
        assert site_names(session) == []


def test_reads_run_while_the_writer_is_busy(db: Database) -> None:
    """The writer holds an open write transaction; a read still answers, at once, with
    what was committed before it."""
    writing = threading.Event()
    finish = threading.Event()

    def slow_write(session: Session) -> None:
        session.execute(
            text("INSERT INTO sites (name, created_at) VALUES ('Uncommitted', CURRENT_TIMESTAMP)")
        )
        writing.set()
        assert finish.wait(10), "the test never let the writer finish"
        session.commit()

    async def scenario() -> list[str]:
        await db.run(add_site, "Committed")
        write = asyncio.create_task(db.run(slow_write))
        assert await asyncio.to_thread(writing.wait, 10)
        try:
            # Behind the writer, this would wait until the test gives up on it.
            return await asyncio.wait_for(db.read(site_names), timeout=3)
        finally:
            finish.set()
            await write

    assert asyncio.run(scenario()) == ["Committed"]
    with db.session() as session:
        assert site_names(session) == ["Committed", "Uncommitted"]


def test_a_read_sees_one_snapshot(db: Database) -> None:
    """A site committed while a read is under way is not seen half-way through it."""
    first_count_taken = threading.Event()
    committed = threading.Event()

    def count_twice(session: Session) -> tuple[int, int]:
        before = session.scalar(select(func.count()).select_from(Site)) or 0
        first_count_taken.set()
        assert committed.wait(10), "the writer never committed"
        after = session.scalar(select(func.count()).select_from(Site)) or 0
        return before, after

    async def scenario() -> tuple[int, int]:
        await db.run(add_site, "First")
        read = asyncio.create_task(db.read(count_twice))
        assert await asyncio.to_thread(first_count_taken.wait, 10)
        await db.run(add_site, "Second")
        committed.set()
        return await read

    assert asyncio.run(scenario()) == (1, 1)
    assert asyncio.run(db.read(lambda session: len(site_names(session)))) == 2


def test_waiting_for_the_writer_is_refused_on_the_event_loop(db: Database) -> None:
    """`run_blocking` is for the dashboard's threads: on the loop it would stall it."""

    async def on_the_loop() -> None:
        db.run_blocking(add_site, "From the loop")

    with pytest.raises(RuntimeError, match="event loop"):
        asyncio.run(on_the_loop())
    db.run_blocking(add_site, "From a thread")
    with db.session() as session:
        assert site_names(session) == ["From a thread"]
