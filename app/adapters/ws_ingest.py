"""WS /ws/ingest: streaming ingest for devices that keep one connection open.

The handshake carries the device's (or its site gateway's) credential,
`Authorization: Bearer vgd_…`; without one the connection is refused. Each text message
is one batch, the same JSON as `POST /api/v1/observations`, with an optional `ref` the
server echoes; the credential is checked on every batch, so a revoked one stops at once.
Every batch gets one answer, in order:

    {"type": "accepted", "ref": 7, "status": 201, "device_id": "...", "accepted": 4,
     "stored": 4, "duplicates": 0, "chair_id": 1, "session_id": 7, "received_time": "..."}
    {"type": "error", "ref": 7, "status": 422, "detail": [...], "code": "invalid_request"}
    {"type": "error", "ref": 7, "status": 503, "detail": "Vigil is busy: ...",
     "code": "overloaded", "retry_after_s": 1}

A device's own alert goes on the same connection as a message of type `alert`, the
JSON of `POST /api/v1/alerts` plus `"type": "alert"` and an optional `ref`:

    {"type": "alert_accepted", "ref": 8, "status": 200, "device_id": "...",
     "kind": "probe_off", "active": true, "chair_id": 1, "received_time": "..."}

A batch sent again is answered with its samples in `duplicates` and stored once; a 503
took nothing, send it again after `retry_after_s`. A bad batch never closes the connection.
When the connection ends, each device that sent on it is reported disconnected on the
adapter event bus (technical alarm).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from app.adapters.alerts import AlertAccepted, validate_alert
from app.adapters.base import (
    AdapterContext,
    DeviceRef,
    accepted_reply,
    error_reply,
    validate_batch,
)
from app.adapters.events import ConnectionState, LinkEvent
from app.errors import FieldProblem, InvalidRequest, NotAuthenticated, VigilError
from app.observability.metrics import door_answered
from app.timeutil import utcnow

ADAPTER_NAME = "websocket"

router = APIRouter(tags=["ingest"])
log = logging.getLogger(__name__)


@router.websocket("/ws/ingest")
async def ingest_stream(websocket: WebSocket) -> None:
    context: AdapterContext = websocket.app.state.adapters.context
    scheme, _, token = websocket.headers.get("authorization", "").partition(" ")
    try:
        if scheme.lower() != "bearer":
            raise NotAuthenticated("send Authorization: Bearer <device credential>")
        await context.credentials.device_caller(token.strip())
    except NotAuthenticated as exc:
        # Refused at the handshake (HTTP 403): a device must say who it is before sending.
        await websocket.close(code=4401, reason=exc.message[:120])
        return
    await websocket.accept()
    client = websocket.client
    peer = f"{client.host}:{client.port}" if client else None
    devices: dict[str, DeviceRef] = {}
    try:
        while True:
            text = await websocket.receive_text()
            reply = await _handle(context, token.strip(), text, devices, peer)
            door_answered("ws", reply["status"])
            await websocket.send_text(json.dumps(reply, separators=(",", ":")))
    except WebSocketDisconnect:
        pass
    except Exception:
        # Whatever went wrong, this connection alone ends; its devices are reported lost.
        log.exception("websocket ingest from %s failed", peer)
    finally:
        for device in devices.values():
            await context.events.publish(
                LinkEvent(
                    ADAPTER_NAME,
                    ConnectionState.DISCONNECTED,
                    utcnow(),
                    device.identifier,
                    device.chair_id,
                    device.site_id,
                    peer,
                    "websocket closed",
                )
            )


async def _handle(
    context: AdapterContext,
    token: str,
    text: str,
    devices: dict[str, DeviceRef],
    peer: str | None,
) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except ValueError:
        return {
            "type": "error",
            "ref": None,
            "status": 400,
            "detail": "not JSON: send one batch per text message",
            "code": "invalid_json",
        }
    ref = data.pop("ref", None) if isinstance(data, dict) else None
    kind = data.pop("type", "observations") if isinstance(data, dict) else "observations"
    try:
        if kind == "alert":
            alert = await context.submit_alert(
                validate_alert(data),
                credential=token,
                adapter=ADAPTER_NAME,
                reference="" if ref is None else str(ref),
            )
            device = DeviceRef(alert.device_identifier, alert.chair_id, alert.site_id)
            reply = {"type": "alert_accepted", "ref": ref, "status": 200}
            reply |= AlertAccepted.of(alert).model_dump(mode="json")
        elif kind == "observations":
            stored = await context.submit_with_credential(token, validate_batch(data))
            device = DeviceRef(stored.device_identifier, stored.chair_id, stored.site_id)
            reply = {"type": "accepted", "ref": ref, **accepted_reply(stored)}
        else:
            raise InvalidRequest(
                [FieldProblem(("body", "type"), f"unknown type {kind!r}: observations or alert")]
            )
    except VigilError as exc:
        return {"type": "error", "ref": ref, **error_reply(exc)}
    await _seen(context, device, devices, peer)
    return reply


async def _seen(
    context: AdapterContext, device: DeviceRef, devices: dict[str, DeviceRef], peer: str | None
) -> None:
    if devices.get(device.identifier) != device:
        # First batch from this device here, or its binding changed: say where it now is.
        devices[device.identifier] = device
        await context.events.publish(
            LinkEvent(
                ADAPTER_NAME,
                ConnectionState.CONNECTED,
                utcnow(),
                device.identifier,
                device.chair_id,
                device.site_id,
                peer,
            )
        )
