"""The FastAPI dependency every package shares: the database built by `create_app`.

Each service's own dependency lives beside the service (`app.alarms.service.get_alarm_service`
and so on), so this module imports no domain package and sits at the bottom of app/.
"""

from __future__ import annotations

from fastapi import Request

from app.storage.db import Database


async def get_db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db
