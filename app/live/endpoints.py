"""WS /ws/sites/{site_id}: a snapshot, then numbered deltas and heartbeats."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from app.auth.deps import get_auth, websocket_credential
from app.live import messages
from app.live.hub import Resync, Subscription
from app.live.service import LiveService, encode
from app.live.views import SiteView
from app.observability.metrics import delta_sent, screen_resynced
from app.params import SiteId

router = APIRouter(tags=["live"])
log = logging.getLogger(__name__)

CLOSE_NOT_AUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_UNKNOWN_SITE = 4404


@router.websocket("/ws/sites/{site_id}")
async def site_feed(websocket: WebSocket, site_id: SiteId) -> None:
    live: LiveService = websocket.app.state.live
    heartbeat_s: float = websocket.app.state.settings.heartbeat_s
    auth = get_auth(websocket)
    token, kind = websocket_credential(websocket)
    principal = await auth.authenticate(token, kind)
    # Refused before the handshake completes: the client sees HTTP 403, no data is sent.
    if principal is None:
        await websocket.close(code=CLOSE_NOT_AUTHENTICATED, reason="sign in first")
        return
    if not principal.may_see(site_id):
        await websocket.close(code=CLOSE_FORBIDDEN, reason=f"you may not see site {site_id}")
        return

    async def still_signed_in() -> bool:
        return await auth.authenticate(token, kind) is not None

    await websocket.accept()
    site = await live.site(site_id)
    if site is None:
        await websocket.close(code=CLOSE_UNKNOWN_SITE, reason=f"unknown site {site_id}")
        return
    subscription, snapshot = live.subscribe(site)
    channel = _Channel(websocket)
    try:
        await channel.send(snapshot)
        sender = asyncio.create_task(
            _send(channel, live, site, subscription, heartbeat_s, still_signed_in)
        )
        receiver = asyncio.create_task(_receive(channel, subscription))
        # Whichever ends first (client gone, send failed) ends the connection.
        done, pending = await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
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
                current = await live.site(site.site_id) or site
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
