"""The live view of every site, kept current by ingest and served to websocket clients."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from fastapi import Request

from app.events import AlarmPublished, AlarmStored, StoredBatch
from app.live import messages
from app.live.hub import Hub, Subscription
from app.live.repository import load_site_view
from app.live.views import LatestValue, SessionView, SiteView
from app.observability.metrics import samples_published
from app.storage.db import Database
from app.timeutil import iso, utcnow
from monitor.lifecycle import AlarmState
from monitor.protocol import Protocol


def encode(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"))


@dataclass(slots=True)
class _Unstored:
    """An alarm with transitions shown but not yet in the database (the alarm outbox)."""

    site_id: int
    chair_id: int
    body: dict[str, Any] | None  # as last sent; None once cleared
    pending: int = 0


class LiveService:
    """Owns the in-memory site views and the hub; all methods run on the event loop."""

    def __init__(self, db: Database, hub: Hub, protocol: Protocol) -> None:
        self._db = db
        self.hub = hub
        self._sites: dict[int, SiteView] = {}
        self._display = messages.display_facts(protocol)  # the protocol is fixed per process
        # A view read from the database lacks what the alarm outbox has not written yet:
        # these are put back into it, so no screen loses a live alarm to a reload.
        self._unstored: dict[str, _Unstored] = {}

    async def site(self, site_id: int) -> SiteView | None:
        """The site's view, loaded from the database the first time it is needed."""
        view = self._sites.get(site_id)
        if view is None:
            view = await self._db.run(load_site_view, site_id)
            if view is not None:
                self._sites[site_id] = self._with_unstored(view)
        return view

    async def reload_site(self, site_id: int) -> None:
        """Re-read a site after its chairs, devices or sessions changed; clients resync."""
        view = await self._db.run(load_site_view, site_id)
        if view is None:
            self._sites.pop(site_id, None)
        else:
            self._sites[site_id] = self._with_unstored(view)
        self.hub.resync_all(site_id)

    def _with_unstored(self, view: SiteView) -> SiteView:
        for alarm_id, unstored in self._unstored.items():
            chair = view.chairs.get(unstored.chair_id)
            if unstored.site_id != view.site_id or chair is None:
                continue
            if unstored.body is None:
                chair.alarms.pop(alarm_id, None)
            else:
                chair.alarms[alarm_id] = unstored.body
        return view

    async def session_changed(
        self, site_id: int, chair_id: int, session: SessionView | None, event: str
    ) -> None:
        """A session event, stored: that chair's view changes in memory and the site's
        screens get a `session` delta. Nothing is read from the database, and no screen
        resyncs, unless the chair is new to the view (then the site is reloaded)."""
        site = self._sites.get(site_id)
        if site is None:
            return  # no screen shows the site: the first one to open it loads it fresh
        chair = site.chairs.get(chair_id)
        if chair is None:
            await self.reload_site(site_id)
            return
        chair.session = session
        self.hub.publish(site_id, messages.session(site_id, chair_id, event, session, utcnow()))

    def subscribe(self, site: SiteView) -> tuple[Subscription, str]:
        """Subscribe and take the matching snapshot in one step (no await between them)."""
        subscription = self.hub.subscribe(site.site_id)
        return subscription, self.snapshot_text(site)

    def snapshot_text(self, site: SiteView) -> str:
        return encode(messages.snapshot(site, self.hub.seq(site.site_id), utcnow(), self._display))

    def heartbeat_text(self, site_id: int) -> str:
        return encode(messages.heartbeat(site_id, self.hub.seq(site_id), utcnow()))

    async def publish_alarm(self, published: AlarmPublished | AlarmStored) -> None:
        """Keep the site's live alarms current and send the transition to every screen (or
        the news that a transition sent before is now stored)."""
        if isinstance(published, AlarmStored):
            self._stored(published)
            return
        alarm = published.alarm
        body = alarm.model_dump(mode="json")
        if not published.stored:
            unstored = self._unstored.setdefault(
                alarm.alarm_id, _Unstored(published.site_id, alarm.chair_id, None)
            )
            unstored.pending += 1
            unstored.body = None if alarm.state is AlarmState.CLEARED else body
        site = self._sites.get(published.site_id)
        chair = site.chairs.get(alarm.chair_id) if site else None
        if chair is not None:
            if alarm.state is AlarmState.CLEARED:
                chair.alarms.pop(alarm.alarm_id, None)
            else:
                chair.alarms[alarm.alarm_id] = body
        message = messages.alarm(
            published.site_id, published.event.value, published.actor, body, utcnow()
        )
        if published.audio_paused_until is not None:
            message["audio_paused_until"] = iso(published.audio_paused_until)
        if not published.stored:
            message["stored"] = False
        self.hub.publish(published.site_id, message)

    def _stored(self, stored: AlarmStored) -> None:
        unstored = self._unstored.get(stored.alarm_id)
        if unstored is not None:
            unstored.pending -= 1
            if unstored.pending <= 0:
                del self._unstored[stored.alarm_id]
        self.hub.publish(
            stored.site_id,
            messages.alarm_stored(
                stored.site_id,
                stored.chair_id,
                stored.session_id,
                stored.alarm_id,
                stored.event.value,
                stored.at,
            ),
        )

    async def publish_batch(self, batch: StoredBatch) -> None:
        if batch.site_id is None or batch.chair_id is None:
            return  # an unbound device: stored and flagged, but on no nurse's screen
        site = await self.site(batch.site_id)
        chair = site.chairs.get(batch.chair_id) if site else None
        if chair is None or chair.session_id != batch.session_id:
            # The chair or its session changed since the view was loaded. The reload
            # reads this batch too (it is committed), and every client resyncs.
            await self.reload_site(batch.site_id)
            return
        for observation in batch.observations:
            code = observation.vital.value
            current = chair.vitals.get(code)
            if current is None or current.is_older_than(
                batch.received_time, observation.device_time
            ):
                chair.vitals[code] = LatestValue(
                    observation.value,
                    observation.unit,
                    observation.device_time,
                    batch.received_time,
                    int(observation.quality),
                )
        seq = self.hub.publish(batch.site_id, messages.samples(batch, utcnow()))
        samples_published(batch.site_id, seq, batch.received_time)


async def get_live(request: Request) -> LiveService:
    """The app's LiveService (built by `create_app`), as a FastAPI dependency."""
    service: LiveService = request.app.state.live
    return service
