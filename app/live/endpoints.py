"""WS /ws/sites/{site_id}: a snapshot, then numbered deltas and heartbeats.

A database outage never drops the socket: the screen gets a `status` message saying the
database cannot be reached, and another when it is back. A screen that connects during an
outage is accepted, told so, and served (signed in and given its snapshot) once the database
answers again; nothing about the site is sent before its credential has been checked.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from starlette.websockets import WebSocketState

from app.auth.deps import get_auth, websocket_credential
from app.errors import database_unreachable
from app.live import messages
from app.live.hub import Resync, Subscription
from app.live.service import LiveService, encode
from app.live.views import SiteView
from app.observability.metrics import delta_sent, screen_resynced
from app.params import SiteId
from app.storage.health import DatabaseHealth, Reachability
from app.timeutil import utcnow

router = APIRouter(tags=["live"])
log = logging.getLogger(__name__)

CLOSE_NOT_AUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_UNKNOWN_SITE = 4404

T = TypeVar("T")


class _ClientGone(Exception):
    """The client went away while the feed waited for the database."""


@router.websocket("/ws/sites/{site_id}")
async def site_feed(websocket: WebSocket, site_id: SiteId) -> None:
    live: LiveService = websocket.app.state.live
    health: DatabaseHealth = websocket.app.state.database_health
    heartbeat_s: float = websocket.app.state.settings.heartbeat_s
    auth = get_auth(websocket)
    token, kind = websocket_credential(websocket)
    try:
        principal = await _when_reachable(websocket, health, lambda: auth.authenticate(token, kind))
        # Refused before the handshake completes (the client sees HTTP 403), or, if the
        # database made the feed wait, with a close frame; either way no data is sent.
        if principal is None:
            await websocket.close(code=CLOSE_NOT_AUTHENTICATED, reason="sign in first")
            return
        if not principal.may_see(site_id):
            await websocket.close(code=CLOSE_FORBIDDEN, reason=f"you may not see site {site_id}")
            return
        if websocket.client_state is WebSocketState.CONNECTING:
            await websocket.accept()
        site = await _when_reachable(websocket, health, lambda: live.site(site_id))
    except _ClientGone:
        return
    if site is None:
        await websocket.close(code=CLOSE_UNKNOWN_SITE, reason=f"unknown site {site_id}")
        return

    async def still_signed_in() -> bool:
        try:
            return await auth.authenticate(token, kind) is not None
        except Exception as exc:
            if not database_unreachable(exc):
                raise
            # Nobody can sign out or be revoked while the database is down: the feed goes
            # on, and the credential is checked again once it is back.
            health.report_failure(exc)
            return True

    subscription, snapshot = live.subscribe(site)
    channel = _Channel(websocket)
    try:
        await channel.send(snapshot)
        seen = health.state
        if seen is Reachability.UNREACHABLE:
            await channel.send(encode(messages.status(seen.value, utcnow())))
        sender = asyncio.create_task(
            _send(channel, live, site, subscription, heartbeat_s, still_signed_in)
        )
        receiver = asyncio.create_task(_receive(channel, subscription))
        reporter = asyncio.create_task(_report_database(channel, health, seen))
        # Whichever ends first (client gone, send failed) ends the connection.
        done, pending = await asyncio.wait(
            {sender, receiver, reporter}, return_when=asyncio.FIRST_COMPLETED
        )
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for task in done:
            if (exc := task.exception()) and not isinstance(exc, WebSocketDisconnect):
                log.warning("websocket for site %s ended: %r", site_id, exc)
    except WebSocketDisconnect:
        pass
    finally:
        live.hub.unsubscribe(subscription)


async def _when_reachable(
    websocket: WebSocket, health: DatabaseHealth, call: Callable[[], Awaitable[T]]
) -> T:
    """`call()`; while it cannot reach the database, accept the socket, say so, and try
    again when the database is back. Raises `_ClientGone` if the client leaves meanwhile."""
    while True:
        try:
            return await call()
        except Exception as exc:
            if not database_unreachable(exc):
                raise
            health.report_failure(exc)
        if websocket.client_state is WebSocketState.CONNECTING:
            await websocket.accept()
        await websocket.send_text(encode(messages.status(health.state.value, utcnow())))
        back = asyncio.create_task(health.wait_until_reachable())
        gone = asyncio.create_task(_until_disconnected(websocket))
        done, pending = await asyncio.wait({back, gone}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if back not in done:
            raise _ClientGone


async def _until_disconnected(websocket: WebSocket) -> None:
    """Read (and ignore) whatever a waiting client sends, until it leaves."""
    with contextlib.suppress(WebSocketDisconnect):
        while (await websocket.receive())["type"] != "websocket.disconnect":
            pass


async def _report_database(channel: _Channel, health: DatabaseHealth, seen: Reachability) -> None:
    """Tell the screen each time the database is lost or back."""
    while True:
        seen = await health.wait_for_change(seen)
        await channel.send(encode(messages.status(seen.value, utcnow())))


class _Channel:
    """Serialises sends: the sender and the receiver loops both write to one socket."""

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket
        self._lock = asyncio.Lock()

    async def send(self, text: str) -> None:
        async with self._lock:
            await self.websocket.send_text(text)


async def _send(
    channel: _Channel,
    live: LiveService,
    site: SiteView,
    subscription: Subscription,
    heartbeat_s: float,
    still_signed_in: Callable[[], Awaitable[bool]],
) -> None:
    last_sent = live.hub.seq(site.site_id)
    checked_at = time.monotonic()
    while True:
        if time.monotonic() - checked_at >= heartbeat_s:
            # Every heartbeat period, busy or not: a revoked or expired credential ends the
            # feed within seconds.
            if not await still_signed_in():
                await channel.websocket.close(CLOSE_NOT_AUTHENTICATED, "signed out or revoked")
                return
            checked_at = time.monotonic()
        try:
            # asyncio.timeout, not wait_for: no extra task per message on a busy loop.
            async with asyncio.timeout(heartbeat_s):
                item = await subscription.get()
        except TimeoutError:
            await channel.send(live.heartbeat_text(site.site_id))
            continue
        # Send everything already queued before waiting again.
        for queued in [item, *subscription.drain()]:
            if isinstance(queued, Resync):
                screen_resynced()
                await channel.send(
                    encode(messages.resync(site.site_id, "fell behind or the site changed"))
                )
                try:
                    current = await live.site(site.site_id) or site
                except Exception as exc:
                    if not database_unreachable(exc):
                        raise
                    current = site  # the view in memory is the best there is meanwhile
                last_sent = live.hub.seq(site.site_id)
                await channel.send(live.snapshot_text(current))
                break  # whatever else was queued is in that snapshot
            seq, text = queued
            if seq > last_sent:  # deltas already folded into a resync snapshot are skipped
                await channel.send(text)
                delta_sent(site.site_id, seq)
                last_sent = seq


async def _receive(channel: _Channel, subscription: Subscription) -> None:
    """Notice disconnects, and honour a client's own request for a fresh snapshot."""
    while True:
        text = await channel.websocket.receive_text()
        try:
            request = json.loads(text)
            kind = request.get("type") if isinstance(request, dict) else None
        except json.JSONDecodeError:
            kind = None
        if kind == "resync":
            subscription.fall_behind()
        else:
            await channel.send(
                encode(
                    messages.error('unknown request; the only one accepted is {"type":"resync"}')
                )
            )
