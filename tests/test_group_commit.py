"""Group commit: batches that arrive while a commit is under way share the next transaction,
yet each is answered for itself and only once stored.

The test holds the database's write lock from a connection of its own, so the writer's
first transaction waits inside the database while the other posts arrive; then it lets
go. Which transaction stored each sample is read from the database's side: PostgreSQL
stamps every row with the id of the transaction that wrote it (`xmin`); SQLite keeps no
such stamp, so there the server's own driver connections are traced (BEGIN, INSERTs,
COMMIT) and sample ids, which grow in insertion order, are matched to that trace.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import Engine, create_engine, event, select, text
from sqlalchemy.engine import make_url

from app.storage.models import Sample
from tests.conftest import Clinic, LiveServer

LEAD_S = 0.5  # the first post's head start: its transaction is under way when others come
HOLD_S = 2.0  # how long the others have to arrive (SQLite's writer gives up at 5 s)
POSTS = 60


@contextmanager
def write_lock_held(url: str) -> Iterator[Callable[[], None]]:
    """Hold the lock that inserting a sample needs, from a connection of the test's own;
    yields the function that lets it go (also called on the way out)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        raw = sqlite3.connect(str(parsed.database), isolation_level=None)
        raw.execute("BEGIN IMMEDIATE")  # the one write lock; readers carry on (WAL)

        def release() -> None:
            if raw.in_transaction:
                raw.execute("ROLLBACK")

        try:
            yield release
        finally:
            release()
            raw.close()
        return
    engine = create_engine(url)
    connection = engine.connect()
    # SHARE conflicts with the ROW EXCLUSIVE lock an INSERT takes; reads are not blocked.
    connection.execute(text("LOCK TABLE samples IN SHARE MODE"))
    try:
        yield connection.rollback
    finally:
        connection.rollback()
        connection.close()
        engine.dispose()


class SqliteTrace:
    """Every statement the server's SQLite connections run, in order (the driver's trace)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._lock = threading.Lock()
        self.statements: list[tuple[int, str]] = []  # (connection, statement)

    def _checkout(self, dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        def record(statement: str, connection: int = id(dbapi_connection)) -> None:
            with self._lock:
                self.statements.append((connection, statement))

        dbapi_connection.set_trace_callback(record)

    def __enter__(self) -> SqliteTrace:
        event.listen(self._engine, "checkout", self._checkout)
        return self

    def __exit__(self, *_: object) -> None:
        event.remove(self._engine, "checkout", self._checkout)

    def sample_rows_per_transaction(self) -> list[int]:
        """How many samples each committed transaction inserted, in commit order."""
        open_rows: dict[int, int] = {}
        committed: list[int] = []
        for connection, statement in self.statements:
            words = statement.lstrip().upper()
            if words.startswith("BEGIN"):
                open_rows[connection] = 0
            elif words.startswith("INSERT INTO SAMPLES"):
                open_rows[connection] = open_rows.get(connection, 0) + 1
            elif words.startswith("COMMIT"):
                if rows := open_rows.pop(connection, 0):
                    committed.append(rows)
            elif words.startswith("ROLLBACK"):
                open_rows.pop(connection, None)
        return committed


@dataclass(frozen=True)
class StoredHeartRate:
    value: float
    received_time: datetime
    transaction: str


def stored_heart_rates(url: str, trace: SqliteTrace | None) -> list[StoredHeartRate]:
    """Every stored heart rate (one per accepted batch), with the transaction that wrote it."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            if trace is None:  # PostgreSQL: the row's own transaction id
                rows = connection.execute(text("SELECT id, xmin::text FROM samples")).all()
                transaction_of = {sample_id: xid for sample_id, xid in rows}
            else:
                ids = connection.scalars(select(Sample.id).order_by(Sample.id)).all()
                per_transaction = trace.sample_rows_per_transaction()
                assert sum(per_transaction) == len(ids), "the trace saw every stored sample"
                owners = [
                    f"commit {number}"
                    for number, rows in enumerate(per_transaction)
                    for _ in range(rows)
                ]
                transaction_of = dict(zip(ids, owners, strict=True))
            heart_rates = connection.execute(
                select(Sample.id, Sample.value, Sample.received_time).where(Sample.vital == "hr")
            ).all()
    finally:
        engine.dispose()
    return [
        StoredHeartRate(value, received, transaction_of[sample_id])
        for sample_id, value, received in heart_rates
    ]


def test_batches_waiting_for_a_commit_share_one_transaction_yet_each_gets_its_own_answer(
    live_server: LiveServer, clinic: Clinic
) -> None:
    engine: Engine = live_server.app.state.db.engine
    trace = SqliteTrace(engine) if engine.dialect.name == "sqlite" else None
    released_at: list[datetime] = []
    answered_before_commit: list[httpx.Response] = []

    def body(device: str, value: int, stamp: str) -> dict[str, object]:
        return {
            "device_id": device,
            "observations": [
                {"vital": "hr", "value": value, "unit": "/min", "device_time": stamp},
                {"vital": "spo2", "value": 97, "unit": "%", "device_time": stamp},
            ],
        }

    async def post_all(release: Callable[[], None]) -> list[httpx.Response]:
        async with httpx.AsyncClient(
            base_url=live_server.http_url, timeout=30, headers=clinic.device_auth
        ) as client:
            start = datetime.now(UTC)
            stamp = start.isoformat()
            # Each post is a measurement of its own (its own device time): the same moment
            # sent again would be a resend, stored once.
            posts = [
                client.post(
                    "/api/v1/observations",
                    json=body(
                        clinic.device(1 + n % 3),
                        60 + n,
                        (start - timedelta(milliseconds=1 + n)).isoformat(),
                    ),
                )
                for n in range(POSTS)
            ]
            posts.insert(30, client.post("/api/v1/observations", json=body("ghost", 70, stamp)))
            # A forged credential in the same group is refused on its own (checked with
            # the write, in the group's one transaction).
            forged = {"Authorization": "Bearer vgd_forged"}
            posts.insert(
                45,
                client.post(
                    "/api/v1/observations",
                    json=body(clinic.device(1), 99, stamp),
                    headers=forged,
                ),
            )
            # The first post starts the writer's first transaction, which then waits in the
            # database; the others arrive while it waits.
            first = asyncio.ensure_future(posts[0])
            await asyncio.sleep(LEAD_S)
            answers = [first, *(asyncio.ensure_future(post) for post in posts[1:])]
            await asyncio.sleep(HOLD_S)
            answered_before_commit.extend(a.result() for a in answers if a.done())
            released_at.append(datetime.now(UTC))
            release()
            return [await answer for answer in answers]

    with write_lock_held(clinic.url) as release, trace or nullcontext():
        responses = asyncio.run(post_all(release))

    assert answered_before_commit == [], "nothing is answered before its commit"
    statuses = [response.status_code for response in responses]
    assert statuses.count(201) == POSTS
    assert statuses[30] == 404
    assert "ghost" in responses[30].json()["detail"]
    assert statuses[45] == 401

    stored = stored_heart_rates(clinic.url, trace)
    assert sorted(s.value for s in stored) == [60.0 + n for n in range(POSTS)], (
        "every acknowledged batch is stored, the refused ones are not"
    )
    waited = sorted(
        (s for s in stored if s.received_time < released_at[0]), key=lambda s: s.received_time
    )
    # The first transaction took what was there when the writer started, and waited in the
    # database; everything that came meanwhile must go in the one transaction after it.
    came_meanwhile = [s for s in waited if s.transaction != waited[0].transaction]
    assert len(came_meanwhile) >= POSTS // 2, (
        f"only {len(came_meanwhile)} of {POSTS} posts reached the writer while its first "
        "commit was held"
    )
    transactions = {s.transaction for s in came_meanwhile}
    assert len(transactions) == 1, (
        f"{len(came_meanwhile)} batches that waited for one commit went into "
        f"{len(transactions)} transactions"
    )
