"""/api/v1/devices: register devices, bind them to chairs, and see what unbound ones sent."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, status

from app.auth.deps import Admin, record_act
from app.auth.principal import Principal
from app.devices.schemas import BindingIn, DeviceIn, DeviceOut, UnboundSampleOut
from app.devices.service import DeviceService
from app.params import BeforeIdQuery

# Devices are the admin's: every route here needs the admin role.
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
async def register_device(
    device: DeviceIn, who: Admin, service: Service, request: Request
) -> DeviceOut:
    """Register a device, optionally bound to a chair at once."""
    out = await service.register(device)
    await _audit(request, who, "device_registered", out)
    return out


async def _audit(request: Request, who: Principal, action: str, device: DeviceOut) -> None:
    await record_act(
        request,
        who,
        action,
        target_type="device",
        target_id=device.identifier,
        detail={"chair_id": device.chair_id},
    )


@router.get("/devices", response_model=list[DeviceOut])
async def list_devices(
    _: Admin,
    service: Service,
    unbound: Annotated[bool, Query(description="Only devices bound to no chair.")] = False,
) -> list[DeviceOut]:
    """Every registered device with its binding, last sample time and unbound sample count."""
    return await service.list_devices(unbound)


@router.get("/unbound-samples", response_model=list[UnboundSampleOut])
async def list_unbound_samples(
    _: Admin,
    service: Service,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before_id: BeforeIdQuery = None,
) -> list[UnboundSampleOut]:
    """Samples kept from devices bound to no chair, newest first: for an admin to review."""
    return await service.unbound_samples(None, limit, before_id)


@router.put("/devices/{identifier:path}/binding", response_model=DeviceOut, responses=_NOT_FOUND)
async def bind_device(
    identifier: str, binding: BindingIn, who: Admin, service: Service, request: Request
) -> DeviceOut:
    """Bind the device to a chair: its next samples join that chair's open session."""
    out = await service.bind(identifier, binding.chair_id)
    await _audit(request, who, "device_bound", out)
    return out


@router.delete("/devices/{identifier:path}/binding", response_model=DeviceOut, responses=_NOT_FOUND)
async def unbind_device(
    identifier: str, who: Admin, service: Service, request: Request
) -> DeviceOut:
    """Unbind the device: its next samples are kept, flagged `unbound`, on no screen."""
    out = await service.bind(identifier, None)
    await _audit(request, who, "device_unbound", out)
    return out


@router.get(
    "/devices/{identifier:path}/unbound-samples",
    response_model=list[UnboundSampleOut],
    responses=_NOT_FOUND,
)
async def list_device_unbound_samples(
    identifier: str,
    _: Admin,
    service: Service,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before_id: BeforeIdQuery = None,
) -> list[UnboundSampleOut]:
    """One device's unbound samples, newest first."""
    return await service.unbound_samples(identifier, limit, before_id)


@router.get("/devices/{identifier:path}", response_model=DeviceOut, responses=_NOT_FOUND)
async def get_device(identifier: str, _: Admin, service: Service) -> DeviceOut:
    return await service.get(identifier)
