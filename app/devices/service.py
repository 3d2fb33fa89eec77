"""The device registry's operations, and the device lookup adapters use."""

from __future__ import annotations

from collections.abc import Sequence

from app.devices import repository
from app.devices.schemas import DeviceIn, DeviceOut, DeviceRef, UnboundSampleOut
from app.live.service import LiveService
from app.storage.db import Database
from app.timeutil import utcnow


class DeviceService:
    """Registry operations; a binding change makes the affected sites' screens resync."""

    def __init__(self, db: Database, live: LiveService) -> None:
        self._db = db
        self._live = live

    async def register(self, device: DeviceIn) -> DeviceOut:
        out = await self._db.run(
            repository.register, device.identifier, device.kind, device.chair_id, utcnow()
        )
        if out.site_id is not None:
            await self._live.reload_site(out.site_id)
        return out

    async def list_devices(self, unbound_only: bool = False) -> list[DeviceOut]:
        return await self._db.read(repository.list_devices, unbound_only)

    async def get(self, identifier: str) -> DeviceOut:
        return await self._db.read(repository.get_device, identifier)

    async def bind(self, identifier: str, chair_id: int | None) -> DeviceOut:
        """Bind to `chair_id`, or unbind with None; later samples follow the new binding."""
        out, sites = await self._db.run(repository.bind, identifier, chair_id)
        for site_id in sorted(sites):
            await self._live.reload_site(site_id)
        return out

    async def unbound_samples(
        self, identifier: str | None, limit: int, before_id: int | None
    ) -> list[UnboundSampleOut]:
        return await self._db.read(repository.unbound_samples, identifier, limit, before_id)


class DatabaseDeviceDirectory:
    """`DeviceDirectory` for adapters: one indexed query per lookup, always current."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def find(self, candidates: Sequence[str]) -> DeviceRef | None:
        return await self._db.read(repository.find_first, list(candidates))
