"""Typed FastAPI dependencies: the services built by `create_app`."""

from __future__ import annotations

from fastapi import Request

from app.alarms.service import AlarmService
from app.ingest.service import IngestService
from app.live.service import LiveService
from app.sessions.service import SessionService
from app.storage.db import Database


async def get_db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


async def get_live(request: Request) -> LiveService:
    live: LiveService = request.app.state.live
    return live


async def get_alarm_service(request: Request) -> AlarmService:
    alarms: AlarmService = request.app.state.alarms
    return alarms


async def get_session_service(request: Request) -> SessionService:
    sessions: SessionService = request.app.state.sessions
    return sessions


async def get_ingest_service(request: Request) -> IngestService:
    ingest: IngestService = request.app.state.ingest
    return ingest
