"""The audit trail: who did what, when, to what, from where. Append-only.

Details hold identifiers and settings (a rule id, a pause length, an export format),
never vital values, patient initials or free text a person typed about a patient.
"""

from __future__ import annotations

import csv
import enum
import io
import json
import logging
import re
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from app.auth.principal import DeviceCaller, Principal
from app.storage.db import Database
from app.storage.models import AuditEvent, AuditPrunePermit
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

    async def export(self, span: ExportRange, export_format: ExportFormat) -> AsyncIterator[str]:
        """Every event in `span`, oldest first, as text in `export_format`, a page at a time:
        a year's trail is never held in memory at once."""
        after_id: int | None = None
        first = True
        while True:
            events = await self._db.read(export_page, span, after_id)
            if first or events:
                yield encode(events, export_format, header=first)
            first = False
            if len(events) < EXPORT_PAGE:
                return
            after_id = events[-1].id

    async def prune(self, actor: Actor, retention_days: int) -> PruneResult:
        """Delete the events older than `retention_days` and record, in the trail itself,
        that it was done, by whom, with which cutoff and how many went."""
        cutoff = utcnow() - timedelta(days=retention_days)
        event = _event(actor, "audit_pruned", "ok", "audit_trail", None, None, None, None)
        deleted = await self._db.run(_prune, cutoff, event, retention_days)
        _log(event)
        return PruneResult(cutoff, deleted)


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


# --- export and retention, for the clinic's compliance records ---------------------------------


class ExportFormat(enum.StrEnum):
    CSV = "csv"
    JSONL = "jsonl"  # one JSON object per line


EXPORT_MEDIA_TYPES = {
    ExportFormat.CSV: "text/csv; charset=utf-8",
    ExportFormat.JSONL: "application/jsonl",
}
EXPORT_PAGE = 1000


@dataclass(frozen=True)
class ExportRange:
    """Events at or after `since` and before `until`; either end may be open."""

    since: datetime | None = None
    until: datetime | None = None

    def as_detail(self) -> dict[str, str | None]:
        return {
            "from": None if self.since is None else iso(self.since),
            "to": None if self.until is None else iso(self.until),
        }


@dataclass(frozen=True)
class PruneResult:
    cutoff: datetime
    deleted: int


_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def parse_bound(text: str, *, end: bool) -> datetime:
    """One end of an export range: a date (YYYY-MM-DD, in UTC) or an ISO 8601 time (UTC
    when it names no offset). A date as the end includes that whole day, so
    `--from 2026-01-01 --to 2026-01-31` is all of January. ValueError when it is neither."""
    text = text.strip()
    if _DATE.fullmatch(text):
        day = date.fromisoformat(text) + timedelta(days=1 if end else 0)
        return datetime(day.year, day.month, day.day, tzinfo=UTC)
    moment = datetime.fromisoformat(text)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def export_page(
    session: Session, span: ExportRange, after_id: int | None, size: int = EXPORT_PAGE
) -> list[AuditEvent]:
    """The next `size` events of `span` after the event `after_id`, oldest first."""
    stmt = select(AuditEvent).order_by(AuditEvent.id).limit(size)
    if span.since is not None:
        stmt = stmt.where(AuditEvent.at >= span.since)
    if span.until is not None:
        stmt = stmt.where(AuditEvent.at < span.until)
    if after_id is not None:
        stmt = stmt.where(AuditEvent.id > after_id)
    events = list(session.scalars(stmt))
    session.expunge_all()
    return events


def export_text(session: Session, span: ExportRange, export_format: ExportFormat) -> Iterator[str]:
    """`AuditTrail.export` for a caller outside the event loop (the command line)."""
    after_id: int | None = None
    first = True
    while True:
        events = export_page(session, span, after_id)
        if first or events:
            yield encode(events, export_format, header=first)
        first = False
        if len(events) < EXPORT_PAGE:
            return
        after_id = events[-1].id


def encode(events: Sequence[AuditEvent], export_format: ExportFormat, *, header: bool) -> str:
    """A page of events as CSV rows (after the header row, when `header`) or JSON lines."""
    if export_format is ExportFormat.JSONL:
        return "".join(
            json.dumps(_json_record(event), ensure_ascii=False, separators=(",", ":")) + "\n"
            for event in events
        )
    out = io.StringIO()
    writer = csv.writer(out)
    if header:
        writer.writerow(CSV_COLUMNS)
    writer.writerows(_csv_row(event) for event in events)
    return out.getvalue()


def _json_record(event: AuditEvent) -> dict[str, object]:
    return {
        "id": event.id,
        "at": iso(event.at),
        "actor": event.actor,
        "action": event.action,
        "outcome": event.outcome,
        "target_type": event.target_type,
        "target_id": event.target_id,
        "site_id": event.site_id,
        "source": event.source,
        "detail": json.loads(event.detail or "{}"),
    }


def _prune(session: Session, cutoff: datetime, event: AuditEvent, retention_days: int) -> int:
    # The permit, the deletes, the permit's removal and the record of the prune commit
    # together: the database lets these deletes (and only these) through, and no other
    # connection ever sees the permit.
    permit = AuditPrunePermit(cutoff=cutoff)
    session.add(permit)
    session.flush()
    result = session.execute(
        delete(AuditEvent).where(AuditEvent.at < cutoff),
        execution_options={"synchronize_session": False},
    )
    deleted = int(getattr(result, "rowcount", 0))
    session.delete(permit)
    event.detail = json.dumps(
        {"retention_days": retention_days, "cutoff": iso(cutoff), "deleted": deleted},
        separators=(",", ":"),
    )
    session.add(event)
    session.commit()
    return deleted
