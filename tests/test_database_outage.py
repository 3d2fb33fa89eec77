"""A database outage under load: 503 with Retry-After and a JSON body naming the database,
one log line per change of state, the screens told (their sockets kept), and every sample
sent, acknowledged, stored and shown with none lost and none twice (issue 15 point 4).

The database is a PostgreSQL cluster of the test's own (tests/scratch_postgres.py), stopped
and started under a real uvicorn server while simulated devices post over HTTP and a
websocket client watches the site.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect
from sqlalchemy import create_engine, select
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from app.auth.tokens import USER_TOKEN_PREFIX
from app.main import create_app
from app.settings import Settings
from app.storage.models import Sample
from app.timeutil import iso
from tests.browser_kit import browser, open_station, page
from tests.conftest import Clinic, LiveServer
from tests.scratch_postgres import (
    ScratchPostgres,
    running_scratch_postgres,
    scratch_postgres,
    seeded_clinic,
)
from vigil.server import create_server

__all__ = ["browser", "page", "running_scratch_postgres", "scratch_postgres"]  # fixtures

DEVICES = 3
PERIOD_S = 0.3  # each device sends a batch this often: 10 batches a second in all
BEFORE_S, OUTAGE_S, AFTER_S = 3.0, 6.0, 4.0

Key = tuple[int, str, str]  # chair id, vital, device time (as the wire gives it, to the ms)


@pytest.fixture
def outage_clinic(running_scratch_postgres: ScratchPostgres) -> Clinic:
    url = running_scratch_postgres.create_database(f"vigil_{uuid.uuid4().hex[:10]}")
    return seeded_clinic(url, chairs=DEVICES)


def now_to_the_ms() -> datetime:
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


@dataclass
class Device:
    """A bedside monitor: a batch every PERIOD_S, kept and sent again, in order, until it is
    acknowledged; a 503 is obeyed (it waits Retry-After)."""

    server: LiveServer
    clinic: Clinic
    position: int
    chair_id: int
    sent: list[Key] = field(default_factory=list)  # every observation made
    acknowledged: list[Key] = field(default_factory=list)
    refusals: list[httpx.Response] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    backlog: deque[dict[str, Any]] = field(default_factory=deque)

    def run(self, producing: threading.Event, deadline: float) -> None:
        retry_at = next_batch = time.monotonic()
        with httpx.Client(base_url=self.server.http_url, timeout=10) as client:
            while time.monotonic() < deadline and (producing.is_set() or self.backlog):
                now = time.monotonic()
                if producing.is_set() and now >= next_batch:
                    self.backlog.append(self._batch(len(self.sent)))
                    next_batch += PERIOD_S
                if self.backlog and now >= retry_at:
                    retry_at = now + self._send(client, self.backlog[0])
                time.sleep(0.005)

    def _batch(self, n: int) -> dict[str, Any]:
        stamp = now_to_the_ms()
        observations = [
            {"vital": "hr", "value": 70 + n % 7, "unit": "/min", "device_time": stamp.isoformat()},
            {"vital": "spo2", "value": 97, "unit": "%", "device_time": stamp.isoformat()},
        ]
        self.sent += [(self.chair_id, o["vital"], iso(stamp)) for o in observations]
        return {"device_id": self.clinic.device(self.position), "observations": observations}

    def _send(self, client: httpx.Client, batch: dict[str, Any]) -> float:
        """Post the oldest batch; returns how long to wait before the next post."""
        try:
            response = client.post(
                "/api/v1/observations", json=batch, headers=self.clinic.device_auth
            )
        except httpx.HTTPError as exc:
            self.unexpected.append(repr(exc))
            return 0.5
        if response.status_code == 201:
            self.backlog.popleft()
            self.acknowledged += [
                (self.chair_id, o["vital"], iso(datetime.fromisoformat(o["device_time"])))
                for o in batch["observations"]
            ]
            return 0.0
        if response.status_code == 503:
            self.refusals.append(response)
            return float(response.headers["Retry-After"])
        self.unexpected.append(f"{response.status_code} {response.text[:200]}")
        return 0.5


class Screen:
    """A websocket client on the site, keeping every message, for as long as it is open."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.messages: list[dict[str, Any]] = []
        self.closed_by_server: str | None = None
        self._opened = contextlib.ExitStack()
        self._ws = self._opened.enter_context(connect(url, additional_headers=headers))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                self.messages.append(json.loads(self._ws.recv(timeout=0.2)))
            except TimeoutError:
                continue
            except ConnectionClosed as exc:
                self.closed_by_server = repr(exc)
                return

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._opened.close()

    def shown(self) -> list[Key]:
        return [
            (m["chair_id"], s["vital"], s["device_time"])
            for m in self.messages
            if m["type"] == "samples"
            for s in m["samples"]
        ]


class LogLines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def log_lines() -> Iterator[LogLines]:
    """Every log record of the server, uvicorn's own included (it does not propagate)."""
    handler = LogLines()
    loggers = [logging.getLogger(), logging.getLogger("uvicorn.error")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield handler
    finally:
        for logger in loggers:
            logger.removeHandler(handler)


def stored_samples(url: str) -> list[Key]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(select(Sample.chair_id, Sample.vital, Sample.device_time))
            return [(chair, vital, iso(moment)) for chair, vital, moment in rows]
    finally:
        engine.dispose()


def test_an_outage_under_load_loses_nothing_and_stores_nothing_twice(
    outage_clinic: Clinic,
    running_scratch_postgres: ScratchPostgres,
    tmp_path: Path,
    log_lines: LogLines,
) -> None:
    cluster = running_scratch_postgres
    server = LiveServer(create_app(Settings(database_url=outage_clinic.url, data_dir=tmp_path)))
    server.start()
    try:
        screen = Screen(f"{server.ws_url}/ws/sites/{outage_clinic.site_id}", outage_clinic.auth())
        deadline = time.monotonic() + 10
        while not screen.messages and time.monotonic() < deadline:
            time.sleep(0.01)
        chairs = screen.messages[0]["chairs"]
        devices = [
            Device(server, outage_clinic, position, chairs[position - 1]["chair_id"])
            for position in range(1, DEVICES + 1)
        ]
        producing = threading.Event()
        producing.set()
        end = time.monotonic() + BEFORE_S + OUTAGE_S + AFTER_S + 30
        threads = [
            threading.Thread(target=d.run, args=(producing, end), daemon=True) for d in devices
        ]
        for thread in threads:
            thread.start()
        time.sleep(BEFORE_S)
        cluster.stop("fast")
        time.sleep(OUTAGE_S)
        cluster.start()
        time.sleep(AFTER_S)
        producing.clear()
        for thread in threads:
            thread.join(timeout=40)
        time.sleep(1)  # the last samples' websocket messages
        screen.close()
    finally:
        server.stop()

    sent = [key for d in devices for key in d.sent]
    acknowledged = [key for d in devices for key in d.acknowledged]
    refusals = [r for d in devices for r in d.refusals]
    shown = screen.shown()
    stored = stored_samples(outage_clinic.url)
    print(  # for the record (pytest -s): the counts this run saw
        f"samples sent {len(sent)}, acknowledged {len(acknowledged)}, stored {len(stored)}, "
        f"shown {len(shown)}; 503 answers {len(refusals)}"
    )
    assert [u for d in devices for u in d.unexpected] == []
    assert refusals, "the outage refused nothing: it was not under load"
    for refused in refusals:
        assert refused.headers["content-type"] == "application/json"
        assert int(refused.headers["Retry-After"]) >= 1
        assert refused.json()["dependency"] == "database"
        assert refused.json()["code"] == "dependency_unavailable"
    # Every sample made was acknowledged once, is stored once and was shown once.
    assert len(sent) == len(set(sent)) > 200
    assert sorted(acknowledged) == sorted(sent)
    assert [key for key, n in Counter(stored).items() if n > 1] == []
    assert sorted(stored) == sorted(sent)
    assert [key for key, n in Counter(shown).items() if n > 1] == []
    assert sorted(shown) == sorted(sent)

    # The screen kept its socket and was told of the outage and of the return.
    assert screen.closed_by_server is None
    assert [m["database"] for m in screen.messages if m["type"] == "status"] == [
        "unreachable",
        "ok",
    ]
    assert [m["type"] for m in screen.messages].count("snapshot") == 1
    # One log line when the database was lost and one when it was back: no traceback per
    # refused request, nothing at error level.
    health = [r.getMessage() for r in log_lines.records if r.name == "app.storage.health"]
    assert len(health) == 2, health
    assert health[0].startswith("database unreachable")
    assert health[1].startswith("database reachable again")
    loud = [
        f"{r.name}: {r.getMessage()}"
        for r in log_lines.records
        if r.levelno >= logging.ERROR or r.exc_info
    ]
    assert loud == []


def test_a_screen_that_connects_during_an_outage_is_told_and_served_when_it_returns(
    outage_clinic: Clinic, running_scratch_postgres: ScratchPostgres, tmp_path: Path
) -> None:
    cluster = running_scratch_postgres
    server = LiveServer(create_app(Settings(database_url=outage_clinic.url, data_dir=tmp_path)))
    server.start()
    url = f"{server.ws_url}/ws/sites/{outage_clinic.site_id}"
    forged = {"Authorization": f"Bearer {USER_TOKEN_PREFIX}forged"}
    try:
        with connect(url, additional_headers=outage_clinic.auth()) as before:
            assert json.loads(before.recv(timeout=10))["type"] == "snapshot"
            cluster.stop("fast")
            status = json.loads(before.recv(timeout=10))
            while status["type"] == "heartbeat":
                status = json.loads(before.recv(timeout=10))
            assert (status["type"], status["database"]) == ("status", "unreachable")
            # A screen that asks for a fresh snapshot meanwhile gets the one in memory.
            before.send(json.dumps({"type": "resync"}))
            answers: list[dict[str, Any]] = []
            while not answers or answers[-1]["type"] != "snapshot":
                answer = json.loads(before.recv(timeout=10))
                if answer["type"] != "heartbeat":
                    answers.append(answer)
            assert [m["type"] for m in answers] == ["resync", "snapshot"]
            assert len(answers[1]["chairs"]) == DEVICES
        with (
            connect(url, additional_headers=outage_clinic.auth()) as ws,
            connect(url, additional_headers=forged) as stranger,
        ):
            # Neither credential can be checked yet: both are told why, and sent nothing else.
            for socket in (ws, stranger):
                first = json.loads(socket.recv(timeout=10))
                assert (first["type"], first["database"]) == ("status", "unreachable")
                with pytest.raises(TimeoutError):
                    socket.recv(timeout=0.5)
            cluster.start()
            snapshot = json.loads(ws.recv(timeout=15))
            assert snapshot["type"] == "snapshot"
            assert len(snapshot["chairs"]) == DEVICES
            # Once it can be checked, the forged one is refused, having seen no data.
            with pytest.raises(ConnectionClosed) as closed:
                stranger.recv(timeout=15)
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 4401
    finally:
        server.stop()


@pytest.mark.browser
def test_the_station_says_it_cannot_reach_the_database_until_it_can(
    outage_clinic: Clinic,
    running_scratch_postgres: ScratchPostgres,
    tmp_path: Path,
    browser: Browser,
    page: Page,
) -> None:
    cluster = running_scratch_postgres
    server = LiveServer(create_server(Settings(database_url=outage_clinic.url, data_dir=tmp_path)))
    server.start()
    try:
        open_station(page, server, outage_clinic)
        banner = page.locator("#database-banner")
        expect(banner).to_have_count(0)
        cluster.stop("fast")
        # The probe notices within its 2 s period; the screen hears it over its own socket.
        expect(banner).to_be_visible(timeout=10000)
        expect(banner).to_contain_text("Vigil cannot reach its database")
        box = banner.bounding_box()
        assert box is not None
        assert box["width"] > 1000
        assert box["height"] > 10  # full width, readable across the room
        expect(page.locator("#link-status")).to_have_text("live")  # the socket is kept
        cluster.start()
        expect(banner).to_be_hidden(timeout=15000)
        expect(page.locator("#link-status")).to_have_text("live")
    finally:
        server.stop()
