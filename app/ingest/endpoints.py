"""POST /api/v1/observations: the reference device door."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Response, status

from app.auth.deps import Auth, DeviceToken
from app.errors import InvalidRequest
from app.ingest.schemas import IngestAccepted, ObservationBatchIn
from app.ingest.service import IngestService, get_ingest_service
from app.observability.logs import bind_device_id

router = APIRouter(prefix="/api/v1", tags=["ingest"])


@router.post(
    "/observations",
    status_code=status.HTTP_201_CREATED,
    response_model=IngestAccepted,
    responses={
        401: {"description": "No device credential, or an unknown or revoked one."},
        403: {"description": "The credential may not send for this device."},
        404: {"description": "The device id is not registered."},
        422: {"description": "A field is malformed or implausible; `detail` names each one."},
        503: {
            "description": "Too many batches are waiting to be stored: nothing was taken; "
            "send it again after `Retry-After` seconds."
        },
    },
)
async def post_observations(
    batch: ObservationBatchIn,
    token: DeviceToken,
    ingest: Annotated[IngestService, Depends(get_ingest_service)],
    auth: Auth,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            min_length=1,
            max_length=128,
            description="Optional: the same key sent again with the same batch is answered "
            "as all duplicates, without storing anything again.",
        ),
    ] = None,
) -> Response:
    """Store a device's batch of observations, whole or not at all, then publish it live.
    Needs the device's own credential, or its site's gateway credential.

    Idempotent: observations already stored (same device, vital and device time) are
    counted in `duplicates` and not stored again, so a batch resent after a lost answer
    is safe; the first value stored for a moment is kept."""
    bind_device_id(batch.device_id)  # on this request's log lines
    try:
        stored = await ingest.ingest(batch, credential=token, idempotency_key=idempotency_key)
    except InvalidRequest:
        # The values were refused before the writer checked the credential: tell their
        # problems only to a live credential (a database round trip on this path alone).
        await auth.device_caller(token)
        raise
    accepted = IngestAccepted.of(stored)
    # Serialised here, once: a returned model would be validated again against
    # `response_model` (which stays, for the OpenAPI document) on every post.
    return Response(
        accepted.model_dump_json(),
        status_code=status.HTTP_201_CREATED,
        media_type="application/json",
    )
