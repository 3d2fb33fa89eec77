"""Concurrent posts share commits, yet each is answered for itself and only once stored."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import httpx
from sqlalchemy import create_engine, func, select

from app.storage.models import Sample
from tests.conftest import Clinic, LiveServer


def test_concurrent_batches_each_get_their_own_answer(
    live_server: LiveServer, clinic: Clinic
) -> None:
    async def post_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(
            base_url=live_server.http_url, timeout=30, headers=clinic.device_auth
        ) as client:
            stamp = datetime.now(UTC).isoformat()

            def body(device: str, value: int) -> dict[str, object]:
                return {
                    "device_id": device,
                    "observations": [
                        {"vital": "hr", "value": value, "unit": "/min", "device_time": stamp},
                        {"vital": "spo2", "value": 97, "unit": "%", "device_time": stamp},
                    ],
                }

            requests = [
                client.post("/api/v1/observations", json=body(clinic.device(1 + n % 3), 60 + n))
                for n in range(60)
            ]
            requests.insert(30, client.post("/api/v1/observations", json=body("ghost", 70)))
            # A forged credential in the same group is refused on its own (checked with
            # the write, in the group's one transaction).
            forged = {"Authorization": "Bearer vgd_forged"}
            requests.insert(
                45,
                client.post(
                    "/api/v1/observations", json=body(clinic.device(1), 99), headers=forged
                ),
            )
            return await asyncio.gather(*requests)

    responses = asyncio.run(post_all())
    statuses = [response.status_code for response in responses]
    assert statuses.count(201) == 60
    assert statuses[30] == 404
    assert "ghost" in responses[30].json()["detail"]
    assert statuses[45] == 401
    engine = create_engine(clinic.url)
    with engine.connect() as connection:
        stored = connection.scalar(select(func.count()).select_from(Sample))
        heart_rates = set(connection.scalars(select(Sample.value).where(Sample.vital == "hr")))
    engine.dispose()
    assert stored == 120, "every acknowledged observation is stored, the refused ones are not"
    assert heart_rates == {60.0 + n for n in range(60)}
