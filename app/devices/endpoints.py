"""/api/v1/devices: register devices, bind them to chairs, and see what unbound ones sent."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, status

from app.devices.schemas import BindingIn, DeviceIn, DeviceOut, UnboundSampleOut
from app.devices.service import DeviceService

router = APIRouter(prefix="/api/v1", tags=["devices"])

# Identifiers may hold slashes (`bed:HO Surgery/OR/1`), hence the `path` converter; the
# routes with a suffix come first so that they win over the bare identifier.
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"description": "No device (or chair) with that id."}
}


def get_device_service(request: Request) -> DeviceService:
    return DeviceService(request.app.state.db, request.app.state.live)


Service = Annotated[DeviceService, Depends(get_device_service)]


@router.post(
    "/devices",
    status_code=status.HTTP_201_CREATED,
    response_model=DeviceOut,
    responses={**_NOT_FOUND, 409: {"description": "That identifier is already registered."}},
)
async def register_device(device: DeviceIn, service: Service) -> DeviceOut:
    """Register a device, optionally bound to a chair at once."""
    return await service.register(device)


@router.get("/devices", response_model=list[DeviceOut])
async def list_devices(
    service: Service,
    unbound: Annotated[bool, Query(description="Only devices bound to no chair.")] = False,
) -> list[DeviceOut]:
    """Every registered device with its binding, last sample time and unbound sample count."""
    return await service.list_devices(unbound)


@router.get("/unbound-samples", response_model=list[UnboundSampleOut])
async def list_unbound_samples(
    service: Service,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before_id: Annotated[int | None, Query(description="Page: samples older than this id.")] = None,
) -> list[UnboundSampleOut]:
    """Samples kept from devices bound to no chair, newest first: for an admin to review."""
    return await service.unbound_samples(None, limit, before_id)


@router.put("/devices/{identifier:path}/binding", response_model=DeviceOut, responses=_NOT_FOUND)
async def bind_device(identifier: str, binding: BindingIn, service: Service) -> DeviceOut:
    """Bind the device to a chair: its next samples join that chair's open session."""
    return await service.bind(identifier, binding.chair_id)


@router.delete("/devices/{identifier:path}/binding", response_model=DeviceOut, responses=_NOT_FOUND)
async def unbind_device(identifier: str, service: Service) -> DeviceOut:
    """Unbind the device: its next samples are kept, flagged `unbound`, on no screen."""
    return await service.bind(identifier, None)


@router.get(
    "/devices/{identifier:path}/unbound-samples",
    response_model=list[UnboundSampleOut],
    responses=_NOT_FOUND,
)
async def list_device_unbound_samples(
    identifier: str,
    service: Service,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before_id: Annotated[int | None, Query()] = None,
) -> list[UnboundSampleOut]:
    """One device's unbound samples, newest first."""
    return await service.unbound_samples(identifier, limit, before_id)


@router.get("/devices/{identifier:path}", response_model=DeviceOut, responses=_NOT_FOUND)
async def get_device(identifier: str, service: Service) -> DeviceOut:
    return await service.get(identifier)
