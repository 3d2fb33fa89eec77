"""GET /api/v1/adapters: each configured adapter and its link state; POST /api/v1/alerts:
a device's own alert, the HTTP door for what HL7 gateways send as ORU^R40."""

from __future__ import annotations

from fastapi import APIRouter, Request

from app.adapters.alerts import AlertAccepted, DeviceAlertIn
from app.adapters.runtime import AdapterRuntime, AdapterStatus
from app.auth.deps import Admin, DeviceToken

router = APIRouter(prefix="/api/v1", tags=["adapters"])

HTTP_ADAPTER = "http"  # the `adapter` of alerts that came through POST /api/v1/alerts


@router.get("/adapters", response_model=list[AdapterStatus])
async def adapter_status(_: Admin, request: Request) -> list[AdapterStatus]:
    """Each configured adapter and its link state; a failed one says why."""
    runtime: AdapterRuntime = request.app.state.adapters
    return runtime.status()


@router.post(
    "/alerts",
    response_model=AlertAccepted,
    tags=["ingest"],
    responses={
        401: {"description": "No device credential, or an unknown or revoked one."},
        403: {"description": "The credential may not send for this device."},
        404: {"description": "The device id is not registered."},
        422: {"description": "A field is malformed; `detail` names each one."},
    },
)
async def post_alert(alert: DeviceAlertIn, token: DeviceToken, request: Request) -> AlertAccepted:
    """A device's own alert: an NIBP cycle that failed, the SpO2 probe off, an equipment
    fault (and each one's end). Vigil raises the documented technical alarm on the chair
    the device is bound to before it answers (docs/ALARMS.md, "From the wire"). Needs the
    device's own credential, or its site's gateway credential."""
    runtime: AdapterRuntime = request.app.state.adapters
    event = await runtime.context.submit_alert(alert, credential=token, adapter=HTTP_ADAPTER)
    return AlertAccepted.of(event)
