"""GET /api/v1/adapters: each configured adapter and its link state."""

from __future__ import annotations

from fastapi import APIRouter, Request

from app.adapters.runtime import AdapterRuntime, AdapterStatus
from app.auth.deps import Admin

router = APIRouter(prefix="/api/v1", tags=["adapters"])


@router.get("/adapters", response_model=list[AdapterStatus])
async def adapter_status(_: Admin, request: Request) -> list[AdapterStatus]:
    """Each configured adapter and its link state; a failed one says why."""
    runtime: AdapterRuntime = request.app.state.adapters
    return runtime.status()
