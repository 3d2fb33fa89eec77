"""Ingest under bad input, resends and faults (issue 15), over HTTP on both databases.

- one batch that cannot be stored is refused alone, never its neighbours in a group commit;
- a resent batch is acknowledged without a second row, and shown and evaluated once;
- the answer depends on the commit only: what the live view or the alarm engine does
  afterwards cannot fail a stored batch;
- a full writer queue refuses new batches at once (503, Retry-After) and loses nothing it took.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from websockets.sync.client import connect

import app.events
from app.events import Fanout, Observation, StoredBatch
from app.ingest.repository import PendingBatch, store_batches
from app.ingest.service import IngestService
from app.main import create_app
from app.settings import Settings
from app.sites.demo import seed_demo
from app.storage import migrate
from app.storage.db import Database
from app.storage.models import Device, Sample
from app.timeutil import utcnow
from monitor.vitals import SampleQuality, Vital
from tests.conftest import REPO, Clinic, LiveServer
from tests.test_group_commit import write_lock_held
from tests.test_live_server import next_of, site_url

URL = "/api/v1/observations"
# A time Python cannot convert to UTC: the year would be 0. Pydantic takes it as aware.
UNSTORABLE_TIME = "0001-01-01T00:00:00+16:00"
POISON_VALUE = 123.25  # a plausible heart rate that the test's own constraint refuses


def reading(vital: str, value: float, unit: str, at: datetime) -> dict[str, Any]:
    return {"vital": vital, "value": value, "unit": unit, "device_time": at.isoformat()}


def heart_rate(device: str, value: float, at: datetime) -> dict[str, Any]:
    return {"device_id": device, "observations": [reading("hr", value, "/min", at)]}


def stored_rows(url: str) -> list[tuple[str, str, float, datetime]]:
    """(device, vital, value, device time) of every committed sample, in insertion order."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                select(Device.identifier, Sample.vital, Sample.value, Sample.device_time)
                .join(Device, Sample.device_id == Device.id)
                .order_by(Sample.id)
            ).all()
    finally:
        engine.dispose()
    return [(device, vital, value, at) for device, vital, value, at in rows]


def refuse_poison_in_the_database(url: str) -> None:
    """Make the database itself refuse a heart rate of POISON_VALUE: a constraint failure
    that only the INSERT can meet (SQLite: a trigger; PostgreSQL: a CHECK constraint)."""
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            if make_url(url).get_backend_name() == "sqlite":
                connection.execute(
                    text(
                        "CREATE TRIGGER test_poison BEFORE INSERT ON samples"
                        f" WHEN NEW.value = {POISON_VALUE}"
                        " BEGIN SELECT RAISE(ABORT, 'poisoned sample'); END"
                    )
                )
            else:
                connection.execute(
                    text(
                        "ALTER TABLE samples ADD CONSTRAINT test_poison"
                        f" CHECK (value <> {POISON_VALUE})"
                    )
                )
    finally:
        engine.dispose()


# --- the schema: one sample per device, vital and device time -------------------------


def test_the_migration_keeps_the_first_of_samples_stored_twice(database_url: str) -> None:
    """Rows stored twice before the unique index existed (resends) are resolved as ingest
    now resolves them: the earliest row of a moment stays, and the index is built."""
    # The revision just before the unique index (0009), where the ORM's other tables match.
    migrate.upgrade(database_url, REPO / "alembic", "0008")
    at = datetime(2026, 11, 25, 10, 15, 30, tzinfo=UTC)
    db = Database(database_url)
    try:
        with db.session() as session:
            seed_demo(session, chairs=2)
            devices = session.scalars(select(Device.id).order_by(Device.id)).all()
            for device_id, vital, value, moment in [
                (devices[0], "hr", 70, at),
                (devices[0], "hr", 71, at),  # a second value for the same moment
                (devices[0], "hr", 70, at),  # a resend
                (devices[0], "hr", 80, at + timedelta(seconds=1)),
                (devices[0], "spo2", 97, at),
                (devices[1], "hr", 70, at),
            ]:
                unit = "%" if vital == "spo2" else "/min"
                session.add(
                    Sample(
                        device_id=device_id,
                        vital=vital,
                        value=value,
                        unit=unit,
                        device_time=moment,
                        received_time=moment,
                        quality=0,
                    )
                )
            session.commit()
    finally:
        db.close()
    migrate.upgrade(database_url, REPO / "alembic")
    assert [(vital, value, moment) for _, vital, value, moment in stored_rows(database_url)] == [
        ("hr", 70, at),
        ("hr", 80, at + timedelta(seconds=1)),
        ("spo2", 97, at),
        ("hr", 70, at),
    ]
    engine = create_engine(database_url)
    try:
        with pytest.raises(IntegrityError), engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO samples (device_id, vital, value, unit, device_time,"
                    " received_time, quality) SELECT device_id, vital, 99, unit, device_time,"
                    " received_time, quality FROM samples WHERE value = 80"
                )
            )
    finally:
        engine.dispose()


# --- 1. isolation -------------------------------------------------------------------------


def test_the_writer_refuses_a_time_it_cannot_store_for_that_batch_alone(clinic: Clinic) -> None:
    """Straight at the writer, whatever the door checked: the batch whose time has no UTC
    value is refused naming that observation, the batches around it are stored."""
    now = utcnow()

    def batch(device: int, at: datetime, value: float = 70) -> PendingBatch:
        return PendingBatch(
            clinic.device(device),
            [Observation(Vital.HR, value, at, SampleQuality.NONE)],
            now,
            None,
        )

    far_east = timezone(timedelta(hours=16))
    poisoned = PendingBatch(
        clinic.device(2),
        [
            Observation(Vital.HR, 71, now, SampleQuality.NONE),
            Observation(Vital.SPO2, 97, datetime(1, 1, 1, tzinfo=far_east), SampleQuality.NONE),
        ],
        now,
        None,
    )
    group = [
        batch(1, now - timedelta(seconds=1), 60),
        poisoned,
        batch(3, now - timedelta(seconds=2), 62),
    ]
    db = Database(clinic.url)
    try:
        results = asyncio.run(db.run_held(store_batches, group))
    finally:
        db.close()
    first, refused, last = results
    assert isinstance(first, StoredBatch)
    assert isinstance(last, StoredBatch)
    assert not isinstance(refused, StoredBatch)
    assert refused.status_code == 422
    assert refused.body()["detail"][0]["loc"] == ["body", "observations", 1, "device_time"]
    assert [(d, v) for d, _, v, _ in stored_rows(clinic.url)] == [
        (clinic.device(1), 60),
        (clinic.device(3), 62),
    ], "the poisoned batch stored nothing, not even its good observation"


def test_a_poisoned_batch_in_a_group_commit_fails_alone(
    live_server: LiveServer, clinic: Clinic
) -> None:
    """20 devices' batches wait for one commit with three bad ones among them: a time with
    no UTC value, a row the database's own constraint refuses, a resend of a good batch.
    Every good batch gets its 201 and its rows; each bad one its own 422."""
    refuse_poison_in_the_database(clinic.url)
    start = datetime.now(UTC)
    goods = [
        heart_rate(clinic.device(1 + n % 3), 60 + n, start - timedelta(milliseconds=10 * n))
        for n in range(20)
    ]
    constraint_poison = {
        "device_id": clinic.device(2),
        "observations": [
            reading("spo2", 96, "%", start),
            reading("hr", POISON_VALUE, "/min", start),
        ],
    }
    time_poison = {
        "device_id": clinic.device(3),
        "observations": [
            {"vital": "hr", "value": 80, "unit": "/min", "device_time": UNSTORABLE_TIME}
        ],
    }

    async def post_all(release: Callable[[], None]) -> list[httpx.Response]:
        async with httpx.AsyncClient(
            base_url=live_server.http_url, timeout=30, headers=clinic.device_auth
        ) as client:
            first = asyncio.ensure_future(client.post(URL, json=goods[0]))
            await asyncio.sleep(0.3)  # its transaction waits in the database; the rest queue
            bodies = [*goods[1:10], constraint_poison, *goods[10:15], time_poison]
            bodies += [*goods[15:], goods[5]]  # the last one: a resend of a good batch
            rest = [asyncio.ensure_future(client.post(URL, json=body)) for body in bodies]
            await asyncio.sleep(1.0)
            # The unstorable time is refused at the door (its bounds, app/params.py) without
            # waiting for the writer; every other batch waits for its commit.
            door_refused = rest[bodies.index(time_poison)]
            waiting = [first, *(answer for answer in rest if answer is not door_refused)]
            assert not any(answer.done() for answer in waiting), "answered uncommitted"
            release()
            return [await first, *[await answer for answer in rest]]

    with write_lock_held(clinic.url) as release:
        responses = asyncio.run(post_all(release))

    statuses = [r.status_code for r in responses]
    assert statuses.count(201) == 21, statuses  # 20 good batches and the resend
    constraint = responses[10]
    assert constraint.status_code == 422, constraint.text
    assert constraint.json()["detail"][0]["type"] == "not_storable"
    assert str(POISON_VALUE) not in constraint.text, "the database's message is not echoed"
    unstorable = responses[16]
    assert unstorable.status_code == 422, unstorable.text
    assert any("device_time" in map(str, d["loc"]) for d in unstorable.json()["detail"])
    # goods[5] and its resend arrive in either order; the first in the group stores it.
    twins = sorted(
        (r.json()["accepted"], r.json()["stored"], r.json()["duplicates"])
        for r in (responses[5], responses[-1])
    )
    assert twins == [(1, 0, 1), (1, 1, 0)]
    assert responses[0].json()["stored"] == 1

    rows = stored_rows(clinic.url)
    assert sorted(value for _, vital, value, _ in rows if vital == "hr") == [
        60.0 + n for n in range(20)
    ], "every good batch stored once, nothing of the bad ones (not even the spo2)"
    assert [row for row in rows if row[1] == "spo2"] == []


# --- 2. idempotent ingest -----------------------------------------------------------------


@pytest.fixture
def client(app: FastAPI, clinic: Clinic) -> Iterator[TestClient]:
    with TestClient(app, headers=clinic.device_auth) as test_client:
        yield test_client


def test_a_resent_batch_is_acknowledged_without_a_second_row(
    client: TestClient, clinic: Clinic
) -> None:
    at = datetime.now(UTC) - timedelta(seconds=3)
    device = clinic.device(1)
    batch = {
        "device_id": device,
        "observations": [reading("hr", 72, "/min", at), reading("spo2", 97, "%", at)],
    }
    first = client.post(URL, json=batch)
    again = client.post(URL, json=batch)
    assert (first.status_code, again.status_code) == (201, 201)
    counts = [
        (a.json()["accepted"], a.json()["stored"], a.json()["duplicates"]) for a in (first, again)
    ]
    assert counts == [(2, 2, 0), (2, 0, 2)]
    assert again.json()["session_id"] == first.json()["session_id"]

    # Part old, part new; and a different value for a moment already stored: the first wins.
    later = at + timedelta(seconds=1)
    mixed = {
        "device_id": device,
        "observations": [
            reading("hr", 99, "/min", at),
            reading("hr", 73, "/min", later),
            reading("spo2", 97, "%", at),
        ],
    }
    answer = client.post(URL, json=mixed).json()
    assert (answer["accepted"], answer["stored"], answer["duplicates"]) == (3, 1, 2)
    assert [
        (vital, value, stored_at) for _, vital, value, stored_at in stored_rows(clinic.url)
    ] == [
        ("hr", 72, at),
        ("spo2", 97, at),
        ("hr", 73, later),
    ]
    # The same moment given with another UTC offset is the same moment.
    east = at.astimezone(timezone(timedelta(hours=5, minutes=30)))
    shifted = client.post(URL, json=heart_rate(device, 72, east)).json()
    assert (shifted["stored"], shifted["duplicates"]) == (0, 1)
    # Another device's sample at that moment is its own.
    other = client.post(URL, json=heart_rate(clinic.device(2), 72, at)).json()
    assert (other["stored"], other["duplicates"]) == (1, 0)
    assert len(stored_rows(clinic.url)) == 4


def test_an_idempotency_key_answers_a_resend_as_duplicates(
    client: TestClient, clinic: Clinic
) -> None:
    device = clinic.device(1)
    batch = heart_rate(device, 70, datetime.now(UTC))
    keyed = {"Idempotency-Key": "batch-0001"}
    first = client.post(URL, json=batch, headers=keyed)
    again = client.post(URL, json=batch, headers=keyed)
    assert (first.status_code, again.status_code) == (201, 201)
    assert (again.json()["stored"], again.json()["duplicates"]) == (0, 1)
    # The same key for other data is a mistake the device must hear about.
    other = client.post(URL, json=heart_rate(device, 71, datetime.now(UTC)), headers=keyed)
    assert other.status_code == 422
    assert other.json()["detail"][0]["loc"] == ["header", "Idempotency-Key"]
    # A key is the sender's and device's own: another device may use the same one.
    elsewhere = client.post(
        URL, json=heart_rate(clinic.device(2), 70, datetime.now(UTC)), headers=keyed
    )
    assert (elsewhere.status_code, elsewhere.json()["stored"]) == (201, 1)
    # A batch refused under a key does not burn the key.
    refused_key = {"Idempotency-Key": "batch-0002"}
    late = datetime.now(UTC) + timedelta(hours=2)
    assert (
        client.post(URL, json=heart_rate(device, 74, late), headers=refused_key).status_code == 422
    )
    fixed = client.post(URL, json=heart_rate(device, 74, late), headers=refused_key)
    assert fixed.status_code == 422, "the same refused batch is refused again, not replayed"
    assert [value for _, _, value, _ in stored_rows(clinic.url)] == [70, 70]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_live_view_shows_a_resent_batch_once(live_server: LiveServer, clinic: Clinic) -> None:
    device = clinic.device(1)
    at = datetime.now(UTC)
    first, second = heart_rate(device, 81, at), heart_rate(device, 82, at + timedelta(seconds=1))
    with connect(site_url(live_server, clinic), additional_headers=clinic.auth()) as ws:
        next_of(ws, "snapshot")
        for body in (first, first, second):
            answer = httpx.post(
                f"{live_server.http_url}{URL}", json=body, headers=clinic.device_auth, timeout=10
            )
            assert answer.status_code == 201, answer.text
        shown = [next_of(ws, "samples") for _ in range(2)]
    values = [[s["value"] for s in message["samples"]] for message in shown]
    assert values == [[81], [82]], "the resend was not shown again"


# --- 3. the answer depends on the commit only ---------------------------------------------


class Raiser:
    """A subscriber of committed batches that always fails, counting its calls."""

    def __init__(self) -> None:
        self.calls = 0
        self._lock = threading.Lock()

    async def __call__(self, batch: StoredBatch) -> None:
        with self._lock:
            self.calls += 1
        raise RuntimeError("a subscriber that breaks")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_failing_subscriber_does_not_change_the_answer_and_is_logged_and_retried(
    live_server: LiveServer, clinic: Clinic, caplog: pytest.LogCaptureFixture
) -> None:
    ingest: IngestService = live_server.app.state.ingest
    raiser = Raiser()
    ingest.committed.subscribe(raiser)  # after the live view and the alarm engine
    device = clinic.device(1)
    with (
        caplog.at_level(logging.WARNING, logger="app.events"),
        connect(site_url(live_server, clinic), additional_headers=clinic.auth()) as ws,
    ):
        next_of(ws, "snapshot")
        answer = httpx.post(
            f"{live_server.http_url}{URL}",
            json=heart_rate(device, 77, datetime.now(UTC)),
            headers=clinic.device_auth,
            timeout=10,
        )
        assert answer.status_code == 201, answer.text
        assert next_of(ws, "samples")["samples"][0]["value"] == 77
    deadline = time.monotonic() + 5
    while ingest.committed.given_up < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert raiser.calls == 1 + len(app.events.RETRY_DELAYS_S), "tried, then retried"
    assert (ingest.committed.failures, ingest.committed.given_up) == (raiser.calls, 1)
    failures = [r for r in caplog.records if "Raiser" in r.getMessage()]
    assert [r.levelno for r in failures] == [logging.ERROR, logging.ERROR], [
        r.getMessage() for r in failures
    ]
    assert failures[0].exc_info is not None, "the first failure is logged with its traceback"
    assert [value for _, _, value, _ in stored_rows(clinic.url)] == [77]


def test_posted_events_reach_every_subscriber_in_order_whatever_another_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The fan-out, on its own: `post` returns before any delivery; a subscriber that fails
    (even the first) or is slow holds up no other; a failing one is retried, then given up
    on, and while it keeps failing it is not retried again."""
    monkeypatch.setattr(app.events, "RETRY_DELAYS_S", (0.01, 0.02))
    seen: list[int] = []
    slow_seen: list[int] = []
    failing_calls: list[int] = []

    async def failing(event: int) -> None:
        failing_calls.append(event)
        if event < 3:
            raise ValueError(f"cannot take {event}")

    async def slow(event: int) -> None:
        await asyncio.sleep(0.05)
        slow_seen.append(event)

    async def record(event: int) -> None:
        seen.append(event)

    async def run() -> tuple[list[int], bool]:
        fanout: Fanout[int] = Fanout(yield_between=True, name="test")
        for subscriber in (failing, slow, record):
            fanout.subscribe(subscriber)
        fanout.post([1, 2])
        fanout.post([3])
        before = list(seen)
        await asyncio.sleep(0.01)
        assert seen == [1, 2, 3], "a failing or slow subscriber holds up no other"
        assert slow_seen == []
        drained = await fanout.drain(timeout_s=5)
        assert (fanout.failures, fanout.given_up, fanout.pending) == (4, 2, 0)
        return before, drained

    before, drained = asyncio.run(run())
    assert before == [], "post returns before delivering anything"
    assert drained
    assert slow_seen == [1, 2, 3]
    # 1: tried 3 times and given up; 2: failing streak, tried once; 3: taken, streak over.
    assert failing_calls == [1, 1, 1, 2, 3]


# --- 5. back-pressure ---------------------------------------------------------------------


def test_a_full_writer_queue_refuses_at_once_and_loses_nothing_it_took(
    clinic: Clinic, tmp_path: Path
) -> None:
    server = LiveServer(
        create_app(Settings(database_url=clinic.url, data_dir=tmp_path, ingest_queue_limit=3))
    )
    server.start()
    ingest: IngestService = server.app.state.ingest
    start = datetime.now(UTC)
    bodies = [
        heart_rate(clinic.device(1 + n % 3), 60 + n, start - timedelta(milliseconds=n))
        for n in range(10)
    ]

    async def post_all(release: Callable[[], None]) -> tuple[list[httpx.Response], float]:
        async with httpx.AsyncClient(
            base_url=server.http_url, timeout=30, headers=clinic.device_auth
        ) as client:
            in_flight = asyncio.ensure_future(client.post(URL, json=bodies[0]))
            await asyncio.sleep(0.3)  # in the database, waiting for its lock
            waiting = [asyncio.ensure_future(client.post(URL, json=b)) for b in bodies[1:4]]
            for _ in range(500):  # the server's thread fills the queue; poll it, bounded
                if ingest.waiting >= 3:
                    break
                await asyncio.sleep(0.01)
            began = time.monotonic()
            refused = await asyncio.gather(*(client.post(URL, json=b) for b in bodies[4:]))
            refused_in = time.monotonic() - began
            release()
            return [await in_flight, *[await w for w in waiting], *refused], refused_in

    try:
        with write_lock_held(clinic.url) as release:
            responses, refused_in = asyncio.run(post_all(release))
        assert [r.status_code for r in responses] == [201] * 4 + [503] * 6
        assert refused_in < 1.0, "refused at once, not after waiting for the database"
        busy = responses[-1]
        assert busy.headers["retry-after"] == "1"
        assert busy.json()["code"] == "overloaded"
        assert sorted(value for _, _, value, _ in stored_rows(clinic.url)) == [60, 61, 62, 63]
        # Sent again once the queue has room, the refused batches are stored.
        for body in bodies[4:]:
            answer = httpx.post(
                f"{server.http_url}{URL}", json=body, headers=clinic.device_auth, timeout=10
            )
            assert answer.status_code == 201, answer.text
    finally:
        server.stop()
    assert sorted(value for _, _, value, _ in stored_rows(clinic.url)) == [
        60.0 + n for n in range(10)
    ]
