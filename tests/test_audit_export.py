"""The audit trail for a compliance officer: exports over a date range (CSV and JSON lines,
from the command line and the API, admin only) and pruning by a retention setting."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from app.auth.audit import EXPORT_PAGE
from app.storage.models import AuditEvent, AuditPrunePermit
from app.timeutil import utcnow
from tests.conftest import Clinic, LiveServer
from tests.test_cli import env_with, run

# Around February 2026: the last instant of January, the first and last of February, the
# first of March. A range of February must take exactly the three in the middle.
EDGES = {
    "jan-last": datetime(2026, 1, 31, 23, 59, 59, 999000, tzinfo=UTC),
    "feb-first": datetime(2026, 2, 1, 0, 0, tzinfo=UTC),
    "feb-mid": datetime(2026, 2, 15, 12, 0, tzinfo=UTC),
    "feb-last": datetime(2026, 2, 28, 23, 59, 59, 999000, tzinfo=UTC),
    "mar-first": datetime(2026, 3, 1, 0, 0, tzinfo=UTC),
}
FEBRUARY = ["feb-first", "feb-mid", "feb-last"]


def add_events(url: str, events: Iterable[tuple[str, datetime]]) -> None:
    """Audit events `(target_id, at)` written straight to the database (inserts are allowed)."""
    engine = create_engine(url)
    with Session(engine) as session:
        session.add_all(
            AuditEvent(
                at=at,
                actor="ada",
                action="user_changed",
                outcome="ok",
                target_type="user",
                target_id=target,
                detail=json.dumps({"role": "nurse"}),
            )
            for target, at in events
        )
        session.commit()
    engine.dispose()


def targets_in_csv(body: str) -> list[str]:
    rows = list(csv.DictReader(io.StringIO(body)))
    return [row["target_id"] for row in rows if row["action"] == "user_changed"]


def targets_in_jsonl(body: str) -> list[str]:
    records = [json.loads(line) for line in body.splitlines()]
    return [r["target_id"] for r in records if r["action"] == "user_changed"]


def test_cli_exports_a_date_range_as_csv_and_json_lines(clinic: Clinic, tmp_path: Path) -> None:
    add_events(clinic.url, EDGES.items())
    environment = env_with(VIGIL_DATABASE_URL=clinic.url)
    out = tmp_path / "february.csv"
    exported = run(
        "audit", "export", "--from", "2026-02-01", "--to", "2026-02-28", "--out", str(out),
        env=environment,
    )  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    body = out.read_text(encoding="utf-8")
    assert (
        body.splitlines()[0]
        == "id,at,actor,action,outcome,target_type,target_id,site_id,source,detail"
    )
    assert targets_in_csv(body) == FEBRUARY
    row = next(csv.DictReader(io.StringIO(body)))
    assert (row["at"], row["actor"], json.loads(row["detail"])) == (
        "2026-02-01T00:00:00.000Z", "ada", {"role": "nurse"},
    )  # fmt: skip

    jsonl = run(
        "audit", "export", "--from", "2026-02-01T00:00:00.001Z", "--to", "2026-03-01T00:00:00",
        "--format", "jsonl", env=environment,
    )  # fmt: skip
    assert jsonl.returncode == 0, jsonl.stderr
    # An ISO time is exact: the first instant of February is before this --from, and a
    # --to time is the instant to stop before (no offset means UTC).
    assert targets_in_jsonl(jsonl.stdout) == ["feb-mid", "feb-last"]
    first = json.loads(jsonl.stdout.splitlines()[0])
    assert first["detail"] == {"role": "nurse"}
    assert first["at"] == "2026-02-15T12:00:00.000Z"

    open_ended = run("audit", "export", "--to", "2026-01-31", "--format", "jsonl", env=environment)
    assert targets_in_jsonl(open_ended.stdout) == ["jan-last"]
    refused = run("audit", "export", "--from", "February", env=environment)
    assert refused.returncode == 2
    assert "YYYY-MM-DD" in refused.stderr

    # Each export is itself in the trail, with its range and format.
    engine = create_engine(clinic.url)
    with Session(engine) as session:
        recorded = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "audit_exported").order_by(AuditEvent.id)
        ).all()
    engine.dispose()
    assert [json.loads(event.detail) for event in recorded][:2] == [
        {"format": "csv", "from": "2026-02-01T00:00:00.000Z", "to": "2026-03-01T00:00:00.000Z"},
        {"format": "jsonl", "from": "2026-02-01T00:00:00.001Z", "to": "2026-03-01T00:00:00.000Z"},
    ]
    assert all(event.actor.startswith("cli:") for event in recorded)


def test_api_streams_the_range_to_admins_only(live_server: LiveServer, clinic: Clinic) -> None:
    # More events than one page, so the stream has to carry on from page to page.
    many = [
        (f"bulk-{i:05d}", EDGES["feb-mid"] + timedelta(seconds=i))
        for i in range(EXPORT_PAGE * 2 + 7)
    ]
    add_events(clinic.url, [*EDGES.items(), *many])
    url = f"{live_server.http_url}/api/v1/audit/export"
    february = {"from": "2026-02-01", "to": "2026-02-28"}

    with httpx.stream("GET", url, params=february, headers=clinic.auth("admin")) as streamed:
        assert streamed.status_code == 200
        assert streamed.headers["content-type"] == "text/csv; charset=utf-8"
        assert "content-length" not in streamed.headers, "streamed, not built whole"
        body = "".join(streamed.iter_text())
    expected = [*FEBRUARY, *(target for target, _ in many)]  # in the order recorded
    assert targets_in_csv(body) == expected
    assert body.count("id,at,actor") == 1, "one header row"

    jsonl = httpx.get(url, params={**february, "format": "jsonl"}, headers=clinic.auth("admin"))
    assert jsonl.headers["content-type"] == "application/jsonl"
    assert targets_in_jsonl(jsonl.text) == expected
    empty = httpx.get(
        url, params={"from": "2030-01-01", "format": "jsonl"}, headers=clinic.auth("admin")
    )
    assert (empty.status_code, empty.text) == (200, "")

    for who in ("nurse", "clinician"):
        assert httpx.get(url, params=february, headers=clinic.auth(who)).status_code == 403
    assert httpx.get(url, params=february).status_code == 401
    bad = httpx.get(url, params={"to": "soon"}, headers=clinic.auth("admin"))
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["query", "to"]
    unknown = httpx.get(url, params={"format": "xml"}, headers=clinic.auth("admin"))
    assert unknown.status_code == 422

    trail = httpx.get(
        f"{live_server.http_url}/api/v1/audit",
        params={"action": "audit_exported"},
        headers=clinic.auth("admin"),
    ).json()
    assert {event["actor"] for event in trail} == {"admin"}
    assert {
        "format": "jsonl",
        "from": "2026-02-01T00:00:00.000Z",
        "to": "2026-03-01T00:00:00.000Z",
    } in [event["detail"] for event in trail]


def test_prune_applies_the_retention_and_records_itself(clinic: Clinic) -> None:
    now = utcnow()
    add_events(
        clinic.url,
        [
            ("old-1", now - timedelta(days=400)),
            ("old-2", now - timedelta(days=366)),
            ("kept-1", now - timedelta(days=364)),
            ("kept-2", now - timedelta(days=1)),
        ],
    )
    unset = run("audit", "prune", env=env_with(VIGIL_DATABASE_URL=clinic.url))
    assert unset.returncode == 0, unset.stderr
    assert "kept forever" in unset.stdout
    assert targets(clinic.url) == ["old-1", "old-2", "kept-1", "kept-2"]

    pruned = run(
        "audit", "prune",
        env=env_with(VIGIL_DATABASE_URL=clinic.url, VIGIL_AUDIT_RETENTION_DAYS="365"),
    )  # fmt: skip
    assert pruned.returncode == 0, pruned.stderr
    assert "deleted 2 audit events" in pruned.stdout
    assert targets(clinic.url) == ["kept-1", "kept-2"]

    engine = create_engine(clinic.url)
    with Session(engine) as session:
        record = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "audit_pruned")
        ).one()
        assert session.scalar(select(func.count()).select_from(AuditPrunePermit)) == 0
    detail = json.loads(record.detail)
    assert (detail["retention_days"], detail["deleted"]) == (365, 2)
    assert record.actor.startswith("cli:")
    cutoff = datetime.fromisoformat(detail["cutoff"])
    assert timedelta(days=365) - (now - cutoff) < timedelta(minutes=5)

    # The trail is append-only again for everyone else: old or new, no row may go.
    add_events(clinic.url, [("old-3", now - timedelta(days=500))])
    for statement in ("DELETE FROM audit_events", "UPDATE audit_events SET actor = 'eve'"):
        with engine.begin() as connection, pytest.raises(DBAPIError):
            connection.execute(text(statement))
    engine.dispose()

    by_flag = run("audit", "prune", "--days", "400", env=env_with(VIGIL_DATABASE_URL=clinic.url))
    assert "deleted 1 audit events" in by_flag.stdout
    assert "old-3" not in targets(clinic.url)


def targets(url: str) -> list[str]:
    engine = create_engine(url)
    with Session(engine) as session:
        found = session.scalars(
            select(AuditEvent.target_id)
            .where(AuditEvent.action == "user_changed")
            .order_by(AuditEvent.id)
        ).all()
    engine.dispose()
    return [target for target in found if target is not None]
