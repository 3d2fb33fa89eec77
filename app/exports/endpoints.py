"""GET /api/v1/sessions/{id}/export/{csv,hl7v2,fhir}: a session's observations, for review,
replay and the hospital.

A two-hour session is ~29,000 samples: 2 MB of CSV, 5 MB of HL7, 27 MB of FHIR JSON, and
seconds of CPU to write. None of it happens on the event loop, where every chair's post
and every alarm tick wait for it: the session is read on the database's reader pool, the
message is built in a worker thread, and the answer is streamed in pieces that are
encoded in worker threads too (Starlette iterates a plain iterator in its thread pool).
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Iterable, Iterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from app.auth.deps import ClinicianOnSession, record_session_export
from app.exports.csv import session_csv_chunks
from app.exports.fhir import bundle_entries, bundle_head
from app.exports.hl7v2 import session_oru
from app.exports.repository import SessionRecord, load_session
from app.params import SessionId
from app.storage.db import Database
from app.timeutil import utcnow

router = APIRouter(prefix="/api/v1/sessions", tags=["export"])
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "Unknown session."}}
CHARS_PER_PIECE = 256 * 1024  # of a finished text, per piece sent
ENTRIES_PER_PIECE = 256  # FHIR Bundle entries built and encoded per piece sent
_COMPACT = (",", ":")


async def _record(
    request: Request, session_id: int, who: ClinicianOnSession, export_format: str
) -> SessionRecord:
    db: Database = request.app.state.db
    record = await db.read(load_session, session_id)
    await record_session_export(request, who, session_id, export_format)
    return record


def text_pieces(text: str, size: int = CHARS_PER_PIECE) -> Iterator[bytes]:
    """A finished text as UTF-8, `size` characters at a time."""
    for start in range(0, len(text), size):
        yield text[start : start + size].encode("utf-8")


def json_pieces(
    head: dict[str, Any],
    list_key: str,
    items: Iterable[Any],
    per_piece: int = ENTRIES_PER_PIECE,
) -> Iterator[bytes]:
    """`json.dumps({**head, list_key: list(items)}, separators=(",", ":"))` in pieces,
    `per_piece` items at a time: only those items are ever held, and encoded, at once."""
    opening = json.dumps(head, separators=_COMPACT)[:-1]
    yield f"{opening}{',' if head else ''}{json.dumps(list_key)}:[".encode()
    remaining = iter(items)
    separator = ""
    while batch := list(itertools.islice(remaining, per_piece)):
        yield (separator + ",".join(json.dumps(i, separators=_COMPACT) for i in batch)).encode()
        separator = ","
    yield b"]}"


@router.get(
    "/{session_id}/export/hl7v2",
    response_class=StreamingResponse,
    responses={**_NOT_FOUND, 200: {"content": {"x-application/hl7-v2+er7": {}}}},
)
async def export_hl7v2(
    session_id: SessionId, who: ClinicianOnSession, request: Request
) -> StreamingResponse:
    """Every sample of the session as one HL7 v2.6 ORU^R01 (segments end in CR)."""
    record = await _record(request, session_id, who, "hl7v2")
    message = await asyncio.to_thread(session_oru, record, utcnow())
    return StreamingResponse(
        text_pieces(message),
        media_type="x-application/hl7-v2+er7; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="session-{session_id}.hl7"'},
    )


@router.get(
    "/{session_id}/export/fhir",
    response_class=StreamingResponse,
    responses={**_NOT_FOUND, 200: {"content": {"application/fhir+json": {}}}},
)
async def export_fhir(
    session_id: SessionId, who: ClinicianOnSession, request: Request
) -> StreamingResponse:
    """The session as a FHIR R4 Bundle of vital-signs Observations (LOINC, UCUM)."""
    record = await _record(request, session_id, who, "fhir")
    # Built as it is sent: the whole Bundle of a long session is about a million Python
    # objects, whose garbage collections would stop the event loop for 0.1-0.25 s each.
    pieces = json_pieces(bundle_head(record, utcnow()), "entry", bundle_entries(record))
    return StreamingResponse(pieces, media_type="application/fhir+json")


@router.get(
    "/{session_id}/export/csv",
    response_class=StreamingResponse,
    responses={**_NOT_FOUND, 200: {"content": {"text/csv": {}}}},
)
async def export_csv(
    session_id: SessionId, who: ClinicianOnSession, request: Request
) -> StreamingResponse:
    """Every sample of the session, one row each (docs/SIMULATION.md); `vigil replay` reads it."""
    record = await _record(request, session_id, who, "csv")
    return StreamingResponse(
        (chunk.encode("utf-8") for chunk in session_csv_chunks(record)),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="session-{session_id}.csv"'},
    )
