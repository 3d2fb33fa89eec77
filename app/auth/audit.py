"""The audit trail: who did what, when, to what, from where. Append-only.

Details hold identifiers and settings (a rule id, a pause length, an export format),
never vital values, patient initials or free text a person typed about a patient.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.auth.principal import DeviceCaller, Principal
from app.storage.db import Database
from app.storage.models import AuditEvent
from app.timeutil import iso, utcnow

log = logging.getLogger(__name__)

Actor = Principal | DeviceCaller | str

CSV_COLUMNS = (
    "id",
    "at",
    "actor",
    "action",
    "outcome",
    "target_type",
    "target_id",
    "site_id",
    "source",
    "detail",
)


@dataclass(frozen=True)
class AuditQuery:
    since: datetime | None = None
    until: datetime | None = None
    actor: str | None = None
    action: str | None = None
    site_id: int | None = None
    limit: int = 500
    before_id: int | None = None  # paging: events older than this one


def _actor_fields(actor: Actor) -> tuple[str, int | None]:
    if isinstance(actor, Principal):
        return actor.username, actor.user_id
    if isinstance(actor, DeviceCaller):
        return actor.actor, None
    return actor, None


class AuditTrail:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def record(
        self,
        actor: Actor,
        action: str,
        *,
        outcome: str = "ok",
        target_type: str | None = None,
        target_id: object = None,
        site_id: int | None = None,
        source: str | None = None,
        detail: Mapping[str, object] | None = None,
    ) -> None:
        event = _event(actor, action, outcome, target_type, target_id, site_id, source, detail)
        await self._db.run(_insert, event)
        _log(event)

    def record_now(
        self,
        actor: Actor,
        action: str,
        *,
        target_type: str | None = None,
        target_id: object = None,
        site_id: int | None = None,
        detail: Mapping[str, object] | None = None,
    ) -> None:
        """`record` for code outside the event loop (the Dash callbacks' threads)."""
        event = _event(actor, action, "ok", target_type, target_id, site_id, None, detail)
        self._db.run_blocking(_insert, event)  # through the one writer, like every write
        _log(event)

    async def events(self, query: AuditQuery) -> list[AuditEvent]:
        return await self._db.read(_select, query)

    async def csv_rows(self, query: AuditQuery) -> str:
        events = await self.events(query)
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(CSV_COLUMNS)
        writer.writerows(_csv_row(event) for event in events)
        return out.getvalue()


def _event(
    actor: Actor,
    action: str,
    outcome: str,
    target_type: str | None,
    target_id: object,
    site_id: int | None,
    source: str | None,
    detail: Mapping[str, object] | None,
) -> AuditEvent:
    name, user_id = _actor_fields(actor)
    return AuditEvent(
        at=utcnow(),
        actor=name[:80],
        actor_user_id=user_id,
        action=action,
        outcome=outcome,
        target_type=target_type,
        target_id=None if target_id is None else str(target_id)[:128],
        site_id=site_id,
        source=(source or "")[:64] or None,
        detail=json.dumps(dict(detail or {}), separators=(",", ":"), default=str),
    )


def _log(event: AuditEvent) -> None:
    # The log line carries the act, never health data; the row is the record.
    log.info(
        "audit %s %s by %s (%s)",
        event.action,
        event.outcome,
        event.actor,
        event.target_type or "-",
    )


def _insert(session: Session, event: AuditEvent) -> None:
    session.add(event)
    session.commit()


def _select(session: Session, query: AuditQuery) -> list[AuditEvent]:
    stmt = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(query.limit)
    if query.since:
        stmt = stmt.where(AuditEvent.at >= query.since)
    if query.until:
        stmt = stmt.where(AuditEvent.at < query.until)
    if query.actor:
        stmt = stmt.where(AuditEvent.actor == query.actor)
    if query.action:
        stmt = stmt.where(AuditEvent.action == query.action)
    if query.site_id is not None:
        stmt = stmt.where(AuditEvent.site_id == query.site_id)
    if query.before_id is not None:
        stmt = stmt.where(AuditEvent.id < query.before_id)
    events = list(session.scalars(stmt))
    session.expunge_all()
    return events


def _csv_row(event: AuditEvent) -> Iterator[object]:
    yield event.id
    yield iso(event.at)
    yield event.actor
    yield event.action
    yield event.outcome
    yield event.target_type or ""
    yield event.target_id or ""
    yield "" if event.site_id is None else event.site_id
    yield event.source or ""
    yield event.detail
