"""`vigil backup` and `vigil restore`: a backup taken while the server runs and takes
vitals, restored into a scratch database, holds every sample, alarm and audit record."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from app.storage.models import (
    Alarm,
    AlarmTransitionRecord,
    AuditEvent,
    Base,
    Chair,
    Device,
    InfusionSession,
    Sample,
)
from app.timeutil import utcnow
from tests.conftest import Clinic, LiveServer, scratch_postgres_database
from tests.test_cli import env_with, run

KEPT_TABLES = ("samples", "alarms", "alarm_transitions", "audit_events")


@pytest.fixture
def scratch_url(database_url: str, tmp_path: Path) -> Iterator[str]:
    """A second, empty database of the same kind to restore into: a SQLite file that does
    not exist yet, or a scratch PostgreSQL database."""
    if database_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'restored' / 'vigil.sqlite'}"
        return
    with scratch_postgres_database(database_url, "vigil_restore") as url:
        yield url


def seed_history(url: str) -> None:
    """A shift's worth of record on chair 1: samples, alarms with their transitions, and
    audit events."""
    engine = create_engine(url)
    start = utcnow() - timedelta(hours=1)
    with Session(engine) as session:
        chair = session.scalars(select(Chair).order_by(Chair.position)).first()
        assert chair is not None
        device = session.scalars(select(Device).where(Device.chair_id == chair.id)).one()
        infusion = session.scalars(
            select(InfusionSession).where(InfusionSession.chair_id == chair.id)
        ).one()
        session.add_all(
            Sample(
                session_id=infusion.id, device_id=device.id, chair_id=chair.id, vital=vital,
                value=value + (i % 7) * 0.5, unit=unit, device_time=start + timedelta(seconds=i),
                received_time=start + timedelta(seconds=i, milliseconds=180), quality=i % 2,
            )
            for i in range(600)
            for vital, value, unit in (("hr", 72.0, "/min"), ("spo2", 97.0, "%"))
        )  # fmt: skip
        for index in range(5):
            alarm_id = f"alarm-{index}"
            at = start + timedelta(minutes=5 * index)
            session.add(
                Alarm(
                    id=alarm_id, session_id=infusion.id, chair_id=chair.id, rule_id="spo2_low",
                    kind="physiological", priority="high", state="acknowledged",
                    text=f"SpO2 {88 - index} < 90", value=88 - index, limit_value=90,
                    condition_active=False, audio_paused=False, raised_at=at,
                    acknowledged_at=at + timedelta(seconds=40), acknowledged_by="nurse",
                    cleared_at=at + timedelta(minutes=1), protocol_version="test",
                    alarm_group="spo2_low",
                )
            )  # fmt: skip
            session.flush()
            session.add_all(
                AlarmTransitionRecord(
                    alarm_id=alarm_id, rule_id="spo2_low", event=event, state=event,
                    priority="high",
                    at=at + timedelta(seconds=offset), value=88 - index, limit_value=90,
                    text="SpO2 low", actor="nurse" if event == "acknowledged" else None,
                    condition_active=event == "raised", audio_paused=False,
                )
                for event, offset in (("raised", 0), ("acknowledged", 40), ("cleared", 60))
            )  # fmt: skip
        session.add_all(
            AuditEvent(
                at=start + timedelta(minutes=index), actor="nurse", action="alarm_acknowledged",
                outcome="ok", target_type="alarm", target_id=f"alarm-{index}", site_id=None,
                source="10.0.0.7", detail='{"rule":"spo2_low"}',
            )
            for index in range(40)
        )  # fmt: skip
        session.commit()
    engine.dispose()


def rows(url: str) -> dict[str, dict[Any, dict[str, Any]]]:
    """Every row of the kept tables, by primary key."""
    engine = create_engine(url)
    found: dict[str, dict[Any, dict[str, Any]]] = {}
    with engine.connect() as connection:
        for name in KEPT_TABLES:
            table = Base.metadata.tables[name]
            found[name] = {
                row[0]: row._asdict()
                for row in connection.execute(select(table).order_by(table.c.id))
            }
    engine.dispose()
    return found


class Ingest:
    """A device posting a batch every 50 ms to the running server, until stopped; keeps the
    times at which each batch was acknowledged."""

    def __init__(self, server: LiveServer, clinic: Clinic) -> None:
        self._server, self._clinic = server, clinic
        self.acknowledged: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._post, daemon=True)

    def _post(self) -> None:
        with httpx.Client(base_url=self._server.http_url, headers=self._clinic.device_auth) as c:
            while not self._stop.is_set():
                stamp = datetime.now(UTC).isoformat()
                batch = {
                    "device_id": self._clinic.device(2),
                    "observations": [
                        {"vital": "hr", "value": 80, "unit": "/min", "device_time": stamp}
                    ],
                }
                assert c.post("/api/v1/observations", json=batch).status_code == 201
                self.acknowledged.append(time.monotonic())
                time.sleep(0.05)

    def __enter__(self) -> Ingest:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def test_backup_while_serving_then_restore_into_a_scratch_database(
    clinic: Clinic, live_server: LiveServer, scratch_url: str, tmp_path: Path
) -> None:
    seed_history(clinic.url)
    backup_file = tmp_path / "vigil.backup"
    with Ingest(live_server, clinic) as ingest:
        while len(ingest.acknowledged) < 5:
            time.sleep(0.05)
        backup_started = time.monotonic()
        backed_up = run("backup", str(backup_file), env=env_with(VIGIL_DATABASE_URL=clinic.url))
        acknowledged_before = sum(1 for t in ingest.acknowledged if t < backup_started)
    assert backed_up.returncode == 0, backed_up.stderr
    assert f"to {backup_file}" in backed_up.stdout
    live_server.stop()
    source = rows(clinic.url)

    restored = run("restore", str(backup_file), env=env_with(VIGIL_DATABASE_URL=scratch_url))
    assert restored.returncode == 0, restored.stderr
    copy = rows(scratch_url)

    # The seeded history, whole: every sample, alarm (with its transitions) and audit event.
    for name in KEPT_TABLES:
        assert copy[name], f"no {name} restored"
        for key, row in copy[name].items():
            if name == "audit_events" and row["action"] == "database_restored":
                continue  # the restore's own record, written into the restored database
            assert source[name][key] == row, f"{name} {key} differs from the original"
    assert sorted(copy["alarms"]) == [f"alarm-{index}" for index in range(5)]
    assert len(copy["alarm_transitions"]) == 15
    by_device = {pk: 0 for pk in (device_pk(clinic.url, 1), device_pk(clinic.url, 2))}
    for row in copy["samples"].values():
        by_device[row["device_id"]] += 1
    assert by_device[device_pk(clinic.url, 1)] == 1200, "every seeded sample"
    # Every batch the server had acknowledged before the backup began is in it.
    assert by_device[device_pk(clinic.url, 2)] >= acknowledged_before >= 5
    seeded_audit = [row for row in copy["audit_events"].values() if row["target_type"] == "alarm"]
    assert len(seeded_audit) == 40
    audit_copy = {row["action"] for row in copy["audit_events"].values()}
    assert "alarm_acknowledged" in audit_copy
    assert "database_restored" in audit_copy
    assert "restored" in restored.stdout
    assert "audit_events" in restored.stdout

    # The restored database keeps the trail append-only.
    engine = create_engine(scratch_url)
    with engine.begin() as connection, pytest.raises(DBAPIError):
        connection.execute(text("DELETE FROM audit_events"))
    engine.dispose()

    # A second restore into the now full database needs --replace.
    again = run("restore", str(backup_file), env=env_with(VIGIL_DATABASE_URL=scratch_url))
    assert again.returncode == 1
    assert "not empty" in again.stderr
    replaced = run(
        "restore", str(backup_file), "--replace", env=env_with(VIGIL_DATABASE_URL=scratch_url)
    )
    assert replaced.returncode == 0, replaced.stderr
    assert rows(scratch_url)["samples"] == copy["samples"]


def device_pk(url: str, index: int) -> int:
    engine = create_engine(url)
    with Session(engine) as session:
        pk = session.scalars(
            select(Device.id).where(Device.identifier == f"demo-monitor-{index:02d}")
        ).one()
    engine.dispose()
    return pk


def test_clear_refusals(clinic: Clinic, scratch_url: str, tmp_path: Path) -> None:
    """A file that is no backup, a backup of the other kind, a missing pg_dump: each is said
    plainly, and nothing is half written."""
    not_a_backup = tmp_path / "notes.txt"
    not_a_backup.write_text("hello")
    refused = run("restore", str(not_a_backup), env=env_with(VIGIL_DATABASE_URL=scratch_url))
    assert refused.returncode == 1
    assert "neither a SQLite backup nor a pg_dump" in refused.stderr

    backup_file = tmp_path / "vigil.backup"
    assert (
        run("backup", str(backup_file), env=env_with(VIGIL_DATABASE_URL=clinic.url)).returncode == 0
    )
    other = (
        f"sqlite:///{tmp_path / 'other.sqlite'}"
        if clinic.url.startswith("postgresql")
        else clinic.url.replace("sqlite:///", "postgresql+psycopg://postgres@127.0.0.1:1/")
    )
    crossed = run("restore", str(backup_file), env=env_with(VIGIL_DATABASE_URL=other))
    assert crossed.returncode == 1
    assert "backup, but the database to restore into is" in crossed.stderr

    if clinic.url.startswith("postgresql"):
        no_tools = env_with(VIGIL_DATABASE_URL=clinic.url, PATH=str(tmp_path / "empty"))
        missing = run("backup", str(tmp_path / "second.backup"), env=no_tools)
        assert missing.returncode == 1
        assert "pg_dump was not found" in missing.stderr
        assert not (tmp_path / "second.backup").exists()
