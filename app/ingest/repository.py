"""Database work for ingest: check the sender's credential, find the device's chair and
session, store the batch — for a whole group of batches in one transaction.

A sample is stored once: `samples` is unique on (device, vital, device time), and the insert
skips a row already there (`ON CONFLICT DO NOTHING`, SQLite ≥ 3.24 and PostgreSQL). A resend
is thus acknowledged without a second row, and the first value stored for a moment wins.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Dialect

from app.errors import (
    FieldProblem,
    Forbidden,
    InvalidRequest,
    NotAuthenticated,
    NotFoundError,
    VigilError,
)
from app.events import Observation, StoredBatch
from app.storage.types import UTCDateTime
from monitor.vitals import SampleQuality

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _WriterSql:
    """The writer's three statements as the database driver's own SQL.

    This is the one hot path that runs beneath SQLAlchemy's statement layer, on a driver
    connection the writer keeps open (`Database.run_held`): a device posts every second per
    chair, and at that pace the server is idle between posts, so every post runs on cold
    caches. Measured here with a 33 ms pause between calls (30 chairs at 1 Hz), storing a
    3-observation batch took 1.4 ms through SQLAlchemy Core and 0.7 ms this way (0.36 and
    0.18 ms back to back). Timestamps are still bound by `UTCDateTime`'s own processor,
    so what is stored is exactly what the ORM would store; everything else in Vigil uses
    the ORM. tests/test_ingest.py and test_group_commit.py run this on SQLite and PostgreSQL.
    """

    resolve_devices: str  # `{values}`: the group's device identifiers
    live_credentials: str  # `{values}`: the group's credential hashes
    insert_samples: str  # skips a sample already stored (same device, vital, device time)
    begin: str | None  # how to open a transaction by hand; None: the driver opens one itself
    parameter: str  # how the driver writes a named parameter, `{}` for its name
    bind_time: Callable[[datetime], Any]

    @staticmethod
    @functools.cache
    def of(dialect: Dialect) -> _WriterSql:
        # sqlite3 takes :name parameters as written; psycopg takes %(name)s.
        if dialect.name != "sqlite" and dialect.paramstyle != "pyformat":
            raise NotImplementedError(f"no ingest SQL for the {dialect.name} driver")
        parameter = ":{}" if dialect.name == "sqlite" else "%({})s"

        def driver(sql: str) -> str:
            return re.sub(r":(\w+)", lambda name: parameter.format(name[1]), sql)

        bind = UTCDateTime().bind_processor(dialect)
        assert bind is not None  # UTCDateTime always converts (aware → UTC)
        return _WriterSql(
            resolve_devices=(
                "SELECT d.identifier, d.id, d.chair_id, c.site_id, s.id FROM devices d"
                " LEFT JOIN chairs c ON c.id = d.chair_id"
                " LEFT JOIN sessions s ON s.chair_id = d.chair_id AND s.ended_at IS NULL"
                " WHERE d.identifier IN ({values}) ORDER BY s.started_at"
            ),
            live_credentials=(
                "SELECT token_hash, device_id, site_id FROM device_credentials"
                " WHERE token_hash IN ({values}) AND revoked_at IS NULL"
            ),
            insert_samples=driver(
                "INSERT INTO samples (session_id, device_id, chair_id, vital, value, unit,"
                " device_time, received_time, quality) VALUES (:session_id, :device_id,"
                " :chair_id, :vital, :value, :unit, :device_time, :received_time, :quality)"
                " ON CONFLICT (device_id, vital, device_time) DO NOTHING"
            ),
            # Python's sqlite3 opens a transaction only before an INSERT; a SAVEPOINT outside
            # one would open its own, and releasing it would commit. psycopg always opens one.
            begin="BEGIN" if dialect.name == "sqlite" else None,
            parameter=parameter,
            bind_time=bind,
        )

    def lookup(self, template: str, values: set[str]) -> tuple[str, dict[str, str]]:
        """`template` for these values, one parameter each: one round trip for a group."""
        params = {f"v{index}": value for index, value in enumerate(sorted(values))}
        marks = ", ".join(self.parameter.format(name) for name in params)
        return template.format(values=marks), params


@dataclass(frozen=True, slots=True)
class PendingBatch:
    """A validated batch waiting for the writer."""

    device_identifier: str
    observations: list[Observation]
    received_time: datetime
    # The hash of the sender's device credential, checked with the batch, so a revocation
    # stops the next batch; None only for a door that vouches otherwise (MLLP, by address).
    credential_hash: str | None


@dataclass(slots=True)
class _Planned:
    """A batch that may be stored: where it goes, and its rows as the driver takes them."""

    position: int  # in the group
    batch: PendingBatch
    site_id: int | None
    chair_id: int | None
    session_id: int | None
    rows: list[dict[str, object]]

    def outcome(self, fate: list[bool] | Exception) -> StoredBatch | VigilError:
        """Its answer, given which rows were new, or why the database refused it."""
        if isinstance(fate, Exception):
            return _not_stored(self.batch, fate)
        observations = self.batch.observations
        new = (
            observations
            if all(fate)
            else [
                observation
                for observation, is_new in zip(observations, fate, strict=True)
                if is_new
            ]
        )
        return StoredBatch(
            self.batch.device_identifier,
            self.site_id,
            self.chair_id,
            self.session_id,
            self.batch.received_time,
            new,
            duplicates=len(observations) - len(new),
        )


def store_batches(
    connection: Any, dialect: Dialect, pending: list[PendingBatch]
) -> list[StoredBatch | VigilError]:
    """Store every batch whose device is known, in one transaction, on the database
    driver's own `connection`; the caller commits (`Database.run_held`).

    Each batch is all-or-nothing and keeps its own fate: an unknown device, a time that
    cannot be stored or a row the database refuses fails only its own batch; only a failure
    of the database itself (or of the commit) fails them all. One query finds every device
    of the group (its chair, site and open session), one every credential, then one insert
    stores the whole group.
    """
    sql = _WriterSql.of(dialect)
    cursor = connection.cursor()
    try:
        devices, open_sessions = _devices(cursor, sql, {b.device_identifier for b in pending})
        credentials = _live_credentials(
            cursor, sql, {b.credential_hash for b in pending if b.credential_hash is not None}
        )
        results: list[StoredBatch | VigilError | None] = []  # None: planned, not yet stored
        planned: list[_Planned] = []
        for batch in pending:
            device = devices.get(batch.device_identifier)
            refusal = _refusal(batch, credentials, device)
            if refusal is not None:
                results.append(refusal)
                continue
            if device is None:
                results.append(
                    NotFoundError(
                        f"unknown device {batch.device_identifier!r}: "
                        "no device is registered under that id"
                    )
                )
                continue
            device_id, chair_id, site_id = device
            session_id = open_sessions.get(chair_id) if chair_id is not None else None
            try:
                rows = _sample_rows(sql, batch, device_id, chair_id, session_id)
            except InvalidRequest as exc:  # a time the database cannot hold: this batch only
                results.append(exc)
                continue
            planned.append(_Planned(len(results), batch, site_id, chair_id, session_id, rows))
            results.append(None)
        fates = _insert(connection, cursor, dialect, sql, planned)
        for plan, fate in zip(planned, fates, strict=True):
            results[plan.position] = plan.outcome(fate)
    finally:
        cursor.close()
    answered = [result for result in results if result is not None]
    assert len(answered) == len(pending), "every batch of the group has its answer"
    return answered


# Errors that belong to the rows that caused them (a constraint, a value the database or its
# driver cannot take), unlike a lost connection or a lock timeout, which would fail any batch.
def _batch_errors(dialect: Dialect) -> tuple[type[Exception], ...]:
    dbapi = dialect.loaded_dbapi
    return (dbapi.IntegrityError, dbapi.DataError, OverflowError, ValueError, TypeError)


def _insert(
    connection: Any, cursor: Any, dialect: Dialect, sql: _WriterSql, planned: list[_Planned]
) -> list[list[bool] | Exception]:
    """Insert the planned batches; for each, which of its rows were new, or the error that
    refused it.

    The group goes in as one statement. Only when that skipped a row (a resend) or failed
    on a batch's rows is the insert undone and done again batch by batch, each behind a
    savepoint and row by row: each batch then learns which rows were new, and a refusal
    stays its own. The hot path costs nothing more than the one insert.
    """
    rows = [row for plan in planned for row in plan.rows]
    if not rows:
        return [[] for _ in planned]
    batch_errors = _batch_errors(dialect)
    try:
        cursor.executemany(sql.insert_samples, rows)
        if cursor.rowcount == len(rows):
            return [[True] * len(plan.rows) for plan in planned]
    except batch_errors:
        pass
    # Undo the group's insert (the lookups before it only read) and store it batch by batch.
    connection.rollback()
    if sql.begin is not None:
        cursor.execute(sql.begin)
    fates: list[list[bool] | Exception] = []
    for plan in planned:
        cursor.execute("SAVEPOINT vigil_batch")
        try:
            new = []
            for row in plan.rows:
                cursor.execute(sql.insert_samples, row)
                new.append(cursor.rowcount == 1)
            fates.append(new)
        except batch_errors as exc:
            cursor.execute("ROLLBACK TO SAVEPOINT vigil_batch")
            fates.append(exc)
        cursor.execute("RELEASE SAVEPOINT vigil_batch")
    return fates


def _not_stored(batch: PendingBatch, exc: Exception) -> VigilError:
    """The answer for a batch the database refused. The driver's own message is not passed
    on, nor logged: it may quote the row, and the row holds health data."""
    state = getattr(exc, "sqlstate", None)
    cause = type(exc).__name__ + (f", SQLSTATE {state}" if state else "")
    log.warning("ingest: the database refused a batch of %r (%s)", batch.device_identifier, cause)
    return InvalidRequest(
        [
            FieldProblem(
                ("body", "observations"),
                f"the database refused this batch ({cause}); none of it was stored",
                "not_storable",
            )
        ]
    )


def _devices(
    cursor: Any, sql: _WriterSql, identifiers: set[str]
) -> tuple[dict[str, tuple[int, int | None, int | None]], dict[int, int]]:
    """Identifier → (device id, chair id, site id), and chair id → its open session."""
    devices: dict[str, tuple[int, int | None, int | None]] = {}
    open_sessions: dict[int, int] = {}
    cursor.execute(*sql.lookup(sql.resolve_devices, identifiers))
    for identifier, device_id, chair_id, site_id, session_id in cursor.fetchall():
        devices[identifier] = (device_id, chair_id, site_id)
        if chair_id is not None and session_id is not None:
            open_sessions[chair_id] = session_id  # the latest open one wins
    return devices, open_sessions


def _live_credentials(
    cursor: Any, sql: _WriterSql, hashes: set[str]
) -> dict[str, tuple[int | None, int | None]]:
    """Unrevoked credentials among the group's: hash → (device id, site id) it covers."""
    if not hashes:
        return {}
    cursor.execute(*sql.lookup(sql.live_credentials, hashes))
    return {hashed: (device_id, site_id) for hashed, device_id, site_id in cursor.fetchall()}


def _sample_rows(
    sql: _WriterSql,
    batch: PendingBatch,
    device_id: int,
    chair_id: int | None,
    session_id: int | None,
) -> list[dict[str, object]]:
    """The batch's rows as the driver takes them; `InvalidRequest` naming the observation
    whose time cannot be stored (its UTC value would leave the years 1 to 9999)."""
    # Samples from a device bound to no chair are kept and flagged, never dropped.
    extra = SampleQuality.UNBOUND if chair_id is None else SampleQuality.NONE
    received = sql.bind_time(batch.received_time)
    rows: list[dict[str, object]] = []
    for index, observation in enumerate(batch.observations):
        try:
            device_time = sql.bind_time(observation.device_time)
        except (OverflowError, ValueError) as exc:
            raise InvalidRequest(
                [
                    FieldProblem(
                        ("body", "observations", index, "device_time"),
                        f"device_time {observation.device_time.isoformat()} cannot be stored: "
                        f"in UTC it falls outside the years 1 to 9999 ({type(exc).__name__})",
                    )
                ]
            ) from None
        rows.append(
            {
                "session_id": session_id,
                "device_id": device_id,
                "chair_id": chair_id,
                "vital": observation.vital.value,
                "value": observation.value,
                "unit": observation.unit,
                "device_time": device_time,
                "received_time": received,
                "quality": int(observation.quality | extra),
            }
        )
    return rows


def _refusal(
    batch: PendingBatch,
    credentials: dict[str, tuple[int | None, int | None]],
    device: tuple[int, int | None, int | None] | None,
) -> VigilError | None:
    """Why the sender may not store this batch, if it may not. An unknown device is left to
    the caller (a 404 naming it) once the credential itself is good."""
    if batch.credential_hash is None:
        return None
    covered = credentials.get(batch.credential_hash)
    if covered is None:
        return NotAuthenticated("the device credential is unknown or revoked")
    if device is None:
        return None
    bound_device, gateway_site = covered
    device_id, _chair_id, site_id = device
    allowed = (
        bound_device == device_id
        if bound_device is not None
        else site_id is not None and gateway_site == site_id
    )
    if allowed:
        return None
    return Forbidden(f"this credential may not send for device {batch.device_identifier!r}")
