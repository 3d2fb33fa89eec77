"""Session review routes under /api/v1/review: lists, figures, trace, alarm log, reports,
annotations. Clinicians and admins only, and only for the sites they may see; looking at a
session, exporting it and annotating it are recorded in the audit trail."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response, status
from fastapi.responses import HTMLResponse

from app.auth import repository as auth_repository
from app.auth.deps import (
    Clinician,
    ClinicianAtSite,
    ClinicianOnSession,
    check_site,
    record_act,
    record_session_export,
)
from app.auth.principal import Principal
from app.deps import get_db
from app.errors import FieldProblem, Forbidden, InvalidRequest
from app.params import MAX_ID, SessionId, SiteId, check_moment
from app.review import repository, service
from app.review.rendering import renderer
from app.review.schemas import AlarmLogSort, AnnotationIn, SortOrder
from app.storage.db import Database
from app.timeutil import iso, utcnow
from contracts.review import (
    AlarmLogEntry,
    AnnotationRequest,
    AnnotationView,
    PatientSessionRow,
    SessionListQuery,
    SessionPage,
    SessionSummary,
    SessionTrace,
)
from monitor.protocol import PRIORITIES, Protocol

router = APIRouter(prefix="/api/v1/review", tags=["review"])
Db = Annotated[Database, Depends(get_db)]
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "Unknown session."}}
REPORT_MAX_POINTS = 1600
# Pages beyond this would skip more sessions than any clinic stores (and overflow OFFSET).
MAX_PAGE = 1_000_000
ALARM_LOG_COLUMNS = (
    "alarm_id",
    "rule_id",
    "kind",
    "priority",
    "text",
    "value",
    "limit",
    "state",
    "raised_at",
    "acknowledged_at",
    "acknowledged_by",
    "time_to_ack_s",
    "cleared_at",
    "actionable",
    "marked_by",
    "marked_at",
)
_PRIORITY_RANK = {priority.value: priority.rank for priority in PRIORITIES}


async def _viewed(request: Request, who: Principal, session_id: int, what: str) -> None:
    await record_act(
        request,
        who,
        "session_viewed",
        target_type="session",
        target_id=session_id,
        detail={"view": what},
    )


def _protocol(request: Request) -> Protocol:
    protocol: Protocol = request.app.state.alarms.engine.protocol
    return protocol


def parse_moment(field: str, raw: str | None, *, end_of_day: bool = False) -> datetime | None:
    """A date (whole day, UTC) or an ISO 8601 time with offset; refused with the field named."""
    if raw is None or raw == "":
        return None
    try:
        day = date.fromisoformat(raw)
    except ValueError:
        pass
    else:
        moment = check_moment(("query", field), datetime.combine(day, time(), UTC))
        return moment + timedelta(days=1) if end_of_day else moment
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise InvalidRequest(
            [FieldProblem(("query", field), f"{raw!r} is neither a date nor an ISO 8601 time")]
        ) from None
    return check_moment(("query", field), moment)


def _range(start: datetime | None, end: datetime | None) -> None:
    if start is not None and end is not None and end <= start:
        raise InvalidRequest([FieldProblem(("query", "to"), "must be later than from")])


@router.get("/sessions", response_model=SessionPage)
async def list_sessions(
    who: Clinician,
    db: Db,
    request: Request,
    site_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    chair_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    patient: Annotated[str | None, Query(max_length=64, description="Pseudonym.")] = None,
    start: Annotated[str | None, Query(alias="from", description="Date or time.")] = None,
    end: Annotated[str | None, Query(alias="to", description="Date (inclusive) or time.")] = None,
    high_alarm: Annotated[bool | None, Query(description="Had a high-priority alarm.")] = None,
    page: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 1,
    page_size: Annotated[int, Query(ge=1, le=500)] = 50,
) -> SessionPage:
    """Stored sessions of the sites the caller may see, newest first, filtered and paged."""
    if site_id is not None:
        await check_site(request, who, site_id)
    if chair_id is not None:
        await check_site(request, who, await db.read(auth_repository.site_of_chair, chair_id))
    query = SessionListQuery(
        site_id=site_id,
        site_ids=who.site_ids,
        chair_id=chair_id,
        patient=patient,
        start=parse_moment("from", start),
        end=parse_moment("to", end, end_of_day=True),
        high_alarm=high_alarm,
        page=page,
        page_size=page_size,
    )
    _range(query.start, query.end)
    return await db.read(repository.list_sessions, query)


@router.get("/sessions/{session_id}", response_model=SessionSummary, responses=_NOT_FOUND)
async def session_summary(
    session_id: SessionId, who: ClinicianOnSession, db: Db, request: Request
) -> SessionSummary:
    """The session's summary figures (definitions in docs/REVIEW.md)."""
    summary = await db.read(service.summary, session_id, _protocol(request))
    await _viewed(request, who, session_id, "summary")
    return summary


@router.get("/sessions/{session_id}/trace", response_model=SessionTrace, responses=_NOT_FOUND)
async def session_trace(
    session_id: SessionId,
    who: ClinicianOnSession,
    db: Db,
    request: Request,
    max_points: Annotated[int, Query(ge=20, le=20000, description="Per vital.")] = 2000,
) -> SessionTrace:
    """The session for plotting, each vital down-sampled to min/max per column."""
    trace = await db.read(service.trace, session_id, _protocol(request), max_points)
    await _viewed(request, who, session_id, "trace")
    return trace


def sort_alarm_log(
    entries: list[AlarmLogEntry], sort: AlarmLogSort, order: SortOrder
) -> list[AlarmLogEntry]:
    """Sorted by one column; entries without a value for it come last either way."""

    def key(entry: AlarmLogEntry) -> Any:
        if sort == "priority":
            return _PRIORITY_RANK.get(entry.priority, -1)
        return getattr(entry, sort)

    present = [e for e in entries if key(e) is not None]
    missing = [e for e in entries if key(e) is None]
    return sorted(present, key=key, reverse=order == "desc") + missing


@router.get(
    "/sessions/{session_id}/alarm-log", response_model=list[AlarmLogEntry], responses=_NOT_FOUND
)
async def alarm_log(
    session_id: SessionId,
    who: ClinicianOnSession,
    db: Db,
    request: Request,
    sort: AlarmLogSort = "raised_at",
    order: SortOrder = "asc",
) -> list[AlarmLogEntry]:
    """Every alarm of the session with raise, acknowledge and clear times."""
    entries = sort_alarm_log(await db.read(service.alarm_log, session_id), sort, order)
    await _viewed(request, who, session_id, "alarm log")
    return entries


def alarm_log_csv(entries: list[AlarmLogEntry]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(ALARM_LOG_COLUMNS)
    for e in entries:
        writer.writerow(
            [
                e.alarm_id,
                e.rule_id,
                e.kind,
                e.priority,
                e.text,
                "" if e.value is None else f"{e.value:g}",
                "" if e.limit is None else f"{e.limit:g}",
                e.state,
                iso(e.raised_at),
                iso(e.acknowledged_at) if e.acknowledged_at else "",
                e.acknowledged_by or "",
                "" if e.time_to_ack_s is None else f"{e.time_to_ack_s:.3f}",
                iso(e.cleared_at) if e.cleared_at else "",
                {True: "yes", False: "no", None: ""}[e.actionable],
                e.marked_by or "",
                iso(e.marked_at) if e.marked_at else "",
            ]
        )
    return out.getvalue()


@router.get(
    "/sessions/{session_id}/alarm-log.csv",
    response_class=Response,
    responses={**_NOT_FOUND, 200: {"content": {"text/csv": {}}}},
)
async def alarm_log_export(
    session_id: SessionId,
    who: ClinicianOnSession,
    db: Db,
    request: Request,
    sort: AlarmLogSort = "raised_at",
    order: SortOrder = "asc",
) -> Response:
    """The alarm log as CSV (columns in docs/API.md)."""
    entries = sort_alarm_log(await db.read(service.alarm_log, session_id), sort, order)
    await record_session_export(request, who, session_id, "alarm log csv")
    return Response(
        alarm_log_csv(entries),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="session-{session_id}-alarms.csv"'},
    )


@router.get("/sessions/{session_id}/report.html", response_class=HTMLResponse, responses=_NOT_FOUND)
async def report_page(
    session_id: SessionId, who: ClinicianOnSession, db: Db, request: Request
) -> HTMLResponse:
    """The printable one-page report as HTML (print it from the browser)."""
    # Read on the reader pool, drawn in a worker process: never on the event loop.
    report = await db.read(service.review, session_id, _protocol(request), REPORT_MAX_POINTS)
    await record_session_export(request, who, session_id, "report html")
    return HTMLResponse(await renderer.html(report, utcnow()))


@router.get(
    "/sessions/{session_id}/report.pdf",
    response_class=Response,
    responses={**_NOT_FOUND, 200: {"content": {"application/pdf": {}}}},
)
async def report_document(
    session_id: SessionId, who: ClinicianOnSession, db: Db, request: Request
) -> Response:
    """The one-page report as a PDF."""
    report = await db.read(service.review, session_id, _protocol(request), REPORT_MAX_POINTS)
    await record_session_export(request, who, session_id, "report pdf")
    return Response(
        await renderer.pdf(report, utcnow()),
        media_type="application/pdf",
        headers={"Content-Disposition": f'inline; filename="session-{session_id}-report.pdf"'},
    )


@router.get(
    "/sessions/{session_id}/annotations", response_model=list[AnnotationView], responses=_NOT_FOUND
)
async def session_annotations(
    session_id: SessionId, _: ClinicianOnSession, db: Db
) -> list[AnnotationView]:
    """Every note and mark on the session, oldest first (nothing is ever changed in place)."""

    def read(session: Any) -> list[AnnotationView]:
        auth_repository.site_of_session(session, session_id)
        return repository.list_annotations(session, session_id)

    return await db.read(read)


@router.post(
    "/sessions/{session_id}/annotations",
    status_code=status.HTTP_201_CREATED,
    response_model=AnnotationView,
    responses={**_NOT_FOUND, 422: {}},
)
async def annotate(
    session_id: SessionId, body: AnnotationIn, who: ClinicianOnSession, db: Db, request: Request
) -> AnnotationView:
    """Add a note to the session, or mark one of its alarms actionable or not, as the
    signed-in clinician."""
    annotation = AnnotationRequest(who.username, body.note, body.alarm_id, body.actionable)
    added = await db.run(service.annotate, session_id, annotation, utcnow())
    await record_act(
        request,
        who,
        "session_annotated",
        target_type="session",
        target_id=session_id,
        detail={"kind": added.kind, "alarm_id": body.alarm_id},
    )
    return added


@router.get(
    "/patients/{patient_id}/sessions",
    response_model=list[PatientSessionRow],
    responses={404: {"description": "Unknown patient."}},
)
async def patient_course(
    patient_id: Annotated[int, Path(ge=1, le=MAX_ID)], who: Clinician, db: Db, request: Request
) -> list[PatientSessionRow]:
    """A patient's sessions side by side, oldest first: baseline and peak BP per session.
    Only sessions at sites the caller may see are listed."""
    rows = await db.read(service.patient_sessions, patient_id, _protocol(request))
    visible = [row for row in rows if who.may_see(row.site_id)]
    if rows and not visible:
        raise Forbidden(f"you may not see the sessions of patient {patient_id}")
    for row in visible:
        await _viewed(request, who, row.session_id, "patient course")
    return visible


@router.get(
    "/sites/{site_id}/figures",
    response_model=service.SiteFiguresOut,
    responses={404: {"description": "Unknown site."}},
)
async def site_figures(
    site_id: SiteId,
    _: ClinicianAtSite,
    db: Db,
    start: Annotated[str | None, Query(alias="from", description="Date or time.")] = None,
    end: Annotated[str | None, Query(alias="to", description="Date (inclusive) or time.")] = None,
) -> service.SiteFiguresOut:
    """Alarms per chair-hour and the share acknowledged within a minute, over a date range
    (default: the last 30 days)."""
    default_start, default_end = service.default_range(utcnow())
    begin = parse_moment("from", start) or default_start
    finish = parse_moment("to", end, end_of_day=True) or default_end
    _range(begin, finish)
    return await db.read(service.site_review, site_id, begin, finish)
