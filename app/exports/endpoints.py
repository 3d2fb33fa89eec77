"""GET /api/v1/sessions/{id}/export/{csv,hl7v2,fhir}: a session's observations, for review,
replay and the hospital."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request, Response

from app.auth.deps import ClinicianOnSession, record_session_export
from app.exports.csv import session_csv
from app.exports.fhir import session_bundle
from app.exports.hl7v2 import session_oru
from app.exports.repository import SessionRecord, load_session
from app.params import SessionId
from app.storage.db import Database
from app.timeutil import utcnow

router = APIRouter(prefix="/api/v1/sessions", tags=["export"])
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "Unknown session."}}


async def _record(
    request: Request, session_id: int, who: ClinicianOnSession, export_format: str
) -> SessionRecord:
    db: Database = request.app.state.db
    record = await db.read(load_session, session_id)
    await record_session_export(request, who, session_id, export_format)
    return record


@router.get(
    "/{session_id}/export/hl7v2",
    response_class=Response,
    responses={**_NOT_FOUND, 200: {"content": {"x-application/hl7-v2+er7": {}}}},
)
async def export_hl7v2(
    session_id: SessionId, who: ClinicianOnSession, request: Request
) -> Response:
    """Every sample of the session as one HL7 v2.6 ORU^R01 (segments end in CR)."""
    record = await _record(request, session_id, who, "hl7v2")
    return Response(
        session_oru(record, utcnow()).encode("utf-8"),
        media_type="x-application/hl7-v2+er7; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="session-{session_id}.hl7"'},
    )


@router.get(
    "/{session_id}/export/fhir",
    response_class=Response,
    responses={**_NOT_FOUND, 200: {"content": {"application/fhir+json": {}}}},
)
async def export_fhir(session_id: SessionId, who: ClinicianOnSession, request: Request) -> Response:
    """The session as a FHIR R4 Bundle of vital-signs Observations (LOINC, UCUM)."""
    record = await _record(request, session_id, who, "fhir")
    return Response(
        json.dumps(session_bundle(record, utcnow()), separators=(",", ":")),
        media_type="application/fhir+json",
    )


@router.get(
    "/{session_id}/export/csv",
    response_class=Response,
    responses={**_NOT_FOUND, 200: {"content": {"text/csv": {}}}},
)
async def export_csv(session_id: SessionId, who: ClinicianOnSession, request: Request) -> Response:
    """Every sample of the session, one row each (docs/SIMULATION.md); `vigil replay` reads it."""
    record = await _record(request, session_id, who, "csv")
    return Response(
        session_csv(record),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="session-{session_id}.csv"'},
    )
