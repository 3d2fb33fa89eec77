"""Alarms are never lost: the outbox stores every transition in order, through a database
outage and a restart, exactly once (issue 14 point 5); and committed batches are evaluated
together, once per loop turn (point 6).

The outage tests stop a PostgreSQL cluster of their own (tests/scratch_postgres.py), never
the shared one, under a real uvicorn server, and watch a real websocket client.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, delete, select
from sqlalchemy.exc import IntegrityError
from websockets.sync.client import ClientConnection, connect

from app.alarms import repository
from app.alarms.outbox import JOURNAL_FILE, REJECTED_FILE, decode_write, encode_write, read_journal
from app.alarms.repository import BaselineWrite, TransitionWrite
from app.alarms.service import AlarmService
from app.events import AlarmPublished, AlarmStored, Observation, StoredBatch
from app.main import create_app
from app.settings import Settings
from app.storage.db import Database
from app.storage.models import Alarm, AlarmTransitionRecord, InfusionSession
from monitor.lifecycle import AlarmLifecycle, AlarmTransition, ConditionChange, TransitionEvent
from monitor.protocol import AlarmKind, Priority, default_protocol
from monitor.vitals import SampleQuality, Vital
from tests.conftest import REPO, Clinic, LiveServer
from tests.scratch_postgres import (
    ScratchPostgres,
    running_scratch_postgres,
    scratch_postgres,
    seeded_clinic,
)

__all__ = ["running_scratch_postgres", "scratch_postgres"]  # fixtures, used by name

SILENT_AFTER_S = 4  # this test protocol's device_silent window (the default's is 10 s)


def quick_silence_protocol(directory: Path) -> Path:
    """The default protocol with a shorter device-silent window, so a test need not wait."""
    text = (REPO / "monitor" / "default_protocol.toml").read_text(encoding="utf-8")
    marker = 'id = "device_silent"\nkind = "device_silent"  # no sample of any vital\nwindow_s = 10'
    assert marker in text, "the default protocol's device_silent check moved"
    path = directory / "protocol.toml"
    path.write_text(
        text.replace(marker, marker.replace("window_s = 10", f"window_s = {SILENT_AFTER_S}")),
        encoding="utf-8",
    )
    return path


@pytest.fixture
def outage_clinic(running_scratch_postgres: ScratchPostgres) -> Clinic:
    url = running_scratch_postgres.create_database(f"vigil_{uuid.uuid4().hex[:10]}")
    return seeded_clinic(url)


@pytest.fixture
def outage_settings(outage_clinic: Clinic, tmp_path: Path) -> Settings:
    return Settings(
        database_url=outage_clinic.url,
        data_dir=tmp_path / "data",
        protocol_file=quick_silence_protocol(tmp_path),
    )


@pytest.fixture
def server(outage_settings: Settings) -> Iterator[LiveServer]:
    live = LiveServer(create_app(outage_settings))
    live.start()
    try:
        yield live
    finally:
        live.stop()


def receive_until(
    ws: ClientConnection, wanted: Callable[[dict[str, Any]], bool], timeout: float
) -> list[dict[str, Any]]:
    """Every message up to and including the first `wanted` one."""
    deadline = time.monotonic() + timeout
    seen = []
    while True:
        message: dict[str, Any] = json.loads(
            ws.recv(timeout=max(0.01, deadline - time.monotonic()))
        )
        seen.append(message)
        if wanted(message):
            return seen


def is_silent_alarm(chair_id: int) -> Callable[[dict[str, Any]], bool]:
    return lambda m: (
        m["type"] == "alarm"
        and m["event"] == "raised"
        and m["chair_id"] == chair_id
        and m["alarm"]["rule_id"] == "device_silent"
    )


def post_heart_rate(server: LiveServer, clinic: Clinic, chair: int) -> None:
    response = httpx.post(
        f"{server.http_url}/api/v1/observations",
        json={
            "device_id": clinic.device(chair),
            "observations": [
                {
                    "vital": "hr",
                    "value": 72,
                    "unit": "/min",
                    "device_time": datetime.now(UTC).isoformat(),
                }
            ],
        },
        headers=clinic.device_auth,
    )
    assert response.status_code == 201, response.text


def transition_rows(url: str, alarm_id: str) -> list[tuple[str, datetime]]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                select(AlarmTransitionRecord.event, AlarmTransitionRecord.at)
                .where(AlarmTransitionRecord.alarm_id == alarm_id)
                .order_by(AlarmTransitionRecord.id)
            ).all()
    finally:
        engine.dispose()
    return [(event, at) for event, at in rows]


def raise_silence_during_an_outage(
    server: LiveServer, clinic: Clinic, cluster: ScratchPostgres, ws: ClientConnection
) -> dict[str, Any]:
    """Chair 1's monitor sends, then the database stops; chair 1 falls silent and its
    alarm is raised while the database is down. Returns the alarm message."""
    chair_1 = json.loads(ws.recv(timeout=10))["chairs"][0]["chair_id"]
    post_heart_rate(server, clinic, 1)
    cluster.stop("fast")
    stopped = datetime.now(UTC)

    def raised_after_the_stop(message: dict[str, Any]) -> bool:
        return is_silent_alarm(chair_1)(message) and (
            datetime.fromisoformat(message["alarm"]["raised_at"]) > stopped
        )

    raised = receive_until(ws, raised_after_the_stop, timeout=SILENT_AFTER_S + 10)[-1]
    assert raised["stored"] is False, "shown at once, and said to be not yet stored"
    return raised


def test_an_alarm_raised_during_an_outage_is_shown_then_stored_once_when_it_returns(
    server: LiveServer, outage_clinic: Clinic, running_scratch_postgres: ScratchPostgres
) -> None:
    cluster = running_scratch_postgres
    url = f"{server.ws_url}/ws/sites/{outage_clinic.site_id}"
    with connect(url, additional_headers=outage_clinic.auth()) as ws:
        raised = raise_silence_during_an_outage(server, outage_clinic, cluster, ws)
        alarm = raised["alarm"]
        # While the database is down nothing says "stored", and the API cannot say either.
        during = receive_until(ws, lambda m: m["type"] == "heartbeat", timeout=5)
        assert not [m for m in during if m["type"] == "alarm_stored"]
        refused = httpx.get(
            f"{server.http_url}/api/v1/sites/{outage_clinic.site_id}/alarms",
            headers=outage_clinic.auth(),
        )
        assert refused.status_code == 503
        assert refused.json()["dependency"] == "database"
        assert server.app.state.alarms.outbox.failing

        cluster.start()
        stored = receive_until(
            ws,
            lambda m: m["type"] == "alarm_stored" and m["alarm_id"] == alarm["alarm_id"],
            timeout=15,
        )[-1]
        assert (stored["event"], stored["at"]) == ("raised", alarm["raised_at"])

    # In the API, as the screen was shown it, and in the database exactly once.
    listed = httpx.get(
        f"{server.http_url}/api/v1/sites/{outage_clinic.site_id}/alarms",
        params={"active": True},
        headers=outage_clinic.auth(),
    )
    assert listed.status_code == 200, listed.text
    assert [a for a in listed.json() if a["alarm_id"] == alarm["alarm_id"]] == [alarm]
    assert [event for event, _ in transition_rows(outage_clinic.url, alarm["alarm_id"])] == [
        "raised"
    ]
    # A screen that opens now finds it in its snapshot.
    with connect(url, additional_headers=outage_clinic.auth()) as fresh:
        chairs = json.loads(fresh.recv(timeout=10))["chairs"]
        assert alarm["alarm_id"] in {a["alarm_id"] for c in chairs for a in c["alarms"]}
    assert not server.app.state.alarms.outbox.failing
    assert len(server.app.state.alarms.outbox) == 0


def test_alarms_kept_through_an_outage_and_a_restart_are_stored_once(
    server: LiveServer,
    outage_clinic: Clinic,
    outage_settings: Settings,
    running_scratch_postgres: ScratchPostgres,
    tmp_path: Path,
) -> None:
    cluster = running_scratch_postgres
    url = f"{server.ws_url}/ws/sites/{outage_clinic.site_id}"
    with connect(url, additional_headers=outage_clinic.auth()) as ws:
        alarm = raise_silence_during_an_outage(server, outage_clinic, cluster, ws)["alarm"]
    # The server stops while the database is still down: the alarm must be on disk.
    server.stop()
    journal = outage_settings.data_dir / JOURNAL_FILE
    kept = read_journal(journal)
    assert alarm["alarm_id"] in {
        w.transition.alarm_id for w in kept if isinstance(w, TransitionWrite)
    }
    copy = shutil.copy(journal, tmp_path / "journal-copy.jsonl")

    cluster.start()
    for attempt in ("replayed", "replayed again"):
        restarted = LiveServer(create_app(outage_settings))
        restarted.start()  # stores the journal before it answers anything
        try:
            assert not journal.exists(), f"{attempt}: the journal is emptied once stored"
            with connect(
                f"{restarted.ws_url}/ws/sites/{outage_clinic.site_id}",
                additional_headers=outage_clinic.auth(),
            ) as ws:
                chairs = json.loads(ws.recv(timeout=10))["chairs"]
            restored = {a["alarm_id"]: a for c in chairs for a in c["alarms"]}
            assert alarm["alarm_id"] in restored, attempt
            events = [e for e, _ in transition_rows(outage_clinic.url, alarm["alarm_id"])]
            assert events.count("raised") == 1, (attempt, events)
            # Skipped as already stored, not refused by the schema and set aside.
            assert not (outage_settings.data_dir / REJECTED_FILE).exists(), attempt
        finally:
            restarted.stop()
        # As if the process had died after storing and before emptying the journal.
        shutil.copy(copy, journal)


# --- without an outage: the journal's lines, idempotent writes, one engine call per turn ---


def lifecycle_transitions(session_key: str) -> list[AlarmTransition]:
    life = AlarmLifecycle(default_protocol().lifecycle, protocol_version="test-1")
    t0 = 1_767_225_600.0
    change = ConditionChange(
        session_key, "spo2_low_high", AlarmKind.PHYSIOLOGICAL, Priority.HIGH, True, t0,
        88.0, 90.0, "SpO2 88 ≤ 90",
    )  # fmt: skip
    out = life.apply(change)
    out += life.pause_audio(session_key, actor="rn.a", time=t0 + 2.000001)
    out += life.apply(replace(change, active=False, time=t0 + 5, value=95.0, text=""))
    out += life.acknowledge(out[0].alarm_id, actor="rn.b", time=t0 + 7.5)
    return out


def test_journal_lines_bring_back_every_field() -> None:
    writes = [TransitionWrite(t, 7, 3) for t in lifecycle_transitions("41")]
    writes.append(BaselineWrite(41, "nibp_sys", 131.5, datetime(2026, 12, 6, 3, 0, tzinfo=UTC)))
    assert [decode_write(json.loads(json.dumps(encode_write(w)))) for w in writes] == writes
    assert {w.transition.event for w in writes if isinstance(w, TransitionWrite)} >= {
        TransitionEvent.RAISED,
        TransitionEvent.AUDIO_PAUSED,
        TransitionEvent.ACKNOWLEDGED,
    }


def test_a_journal_cut_short_loses_only_its_last_line(tmp_path: Path) -> None:
    lines = [
        json.dumps(encode_write(TransitionWrite(t, 7, 3))) for t in lifecycle_transitions("41")
    ]
    journal = tmp_path / JOURNAL_FILE
    journal.write_text("\n".join(lines) + "\n" + lines[0][:40], encoding="utf-8")
    assert len(read_journal(journal)) == len(lines)
    journal.write_text(lines[0][:40] + "\n" + "\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=":1: not an alarm outbox line"):
        read_journal(journal)


def test_writing_the_same_transitions_again_adds_nothing(clinic: Clinic) -> None:
    db = Database(clinic.url)
    try:
        with db.session() as session:
            session_id, chair_id = session.execute(
                select(InfusionSession.id, InfusionSession.chair_id).limit(1)
            ).one()
        transitions = lifecycle_transitions(str(session_id))
        writes = [TransitionWrite(t, chair_id, clinic.site_id) for t in transitions]
        for written in (writes[:2], writes, writes):  # a retry, then a whole replay
            with db.session() as session:
                repository.store_writes(session, written)
        with db.session() as session:
            rows = session.scalars(
                select(AlarmTransitionRecord.event).order_by(AlarmTransitionRecord.id)
            ).all()
            assert rows == [t.event.value for t in transitions]
            alarm = session.get(Alarm, transitions[0].alarm_id)
            assert alarm is not None
            assert alarm.state == transitions[-1].state.value
            # The schema itself refuses a second row of one transition.
            first = session.scalars(select(AlarmTransitionRecord).limit(1)).one()
            session.add(
                AlarmTransitionRecord(
                    alarm_id=first.alarm_id, rule_id=first.rule_id, event=first.event,
                    state=first.state,
                    priority=first.priority, at=first.at, value=None, limit_value=None,
                    text="again", actor=None, condition_active=True, audio_paused=False,
                )
            )  # fmt: skip
            with pytest.raises(IntegrityError):
                session.commit()
    finally:
        db.close()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_batches_committed_together_are_evaluated_in_one_engine_call(
    clinic: Clinic, tmp_path: Path
) -> None:
    """Three posts of two sessions queued in one loop turn: one engine call, and the same
    alarms, in the same order, as three calls one post at a time."""
    db = Database(clinic.url)
    with db.session() as session:
        placed = session.execute(
            select(InfusionSession.id, InfusionSession.chair_id).order_by(InfusionSession.id)
        ).all()
    (first, chair_1), (second, chair_2) = placed[0], placed[1]
    now = datetime.now(UTC)

    def spo2(session_id: int, chair_id: int, values: list[float], end: datetime) -> StoredBatch:
        return StoredBatch(
            "tests", clinic.site_id, chair_id, session_id, end,
            [
                Observation(Vital.SPO2, v, end - timedelta(seconds=len(values) - 1 - i),
                            SampleQuality(0))
                for i, v in enumerate(values)
            ],
        )  # fmt: skip

    batches = [
        spo2(first, chair_1, [97] * 3 + [88] * 10, now - timedelta(seconds=8)),
        spo2(second, chair_2, [84] * 3, now - timedelta(seconds=5)),
        spo2(first, chair_1, [88] * 8, now),  # the same session again: after its first batch
    ]

    async def run(together: bool) -> tuple[list[tuple[str, str, str]], int]:
        service = AlarmService(db, default_protocol(), data_dir=tmp_path / str(together))
        seen: list[tuple[str, str, str]] = []

        async def note(event: AlarmPublished | AlarmStored) -> None:
            if isinstance(event, AlarmPublished):
                seen.append((event.alarm.rule_id, event.event.value, str(event.alarm.session_id)))

        service.published.subscribe(note)
        await service.start()
        try:
            for batch in batches:
                await service.on_batch(batch)
                if not together:
                    await asyncio.sleep(0.05)  # the loop is free between posts
            await asyncio.sleep(0.05)
            assert service.batches_evaluated == len(batches)
            return seen, service.evaluations
        finally:
            await service.stop()

    def forget_alarms() -> None:
        with db.session() as session:
            session.execute(delete(AlarmTransitionRecord))
            session.execute(delete(Alarm))
            session.commit()

    try:
        one_by_one, calls_apart = asyncio.run(run(together=False))
        forget_alarms()  # the second service must start from the same nothing
        at_once, calls_together = asyncio.run(run(together=True))
    finally:
        db.close()
    assert (calls_apart, calls_together) == (3, 1)
    assert ("spo2_low_high", "raised", str(first)) in at_once
    assert ("spo2_desat", "raised", str(second)) in at_once
    assert at_once == one_by_one
