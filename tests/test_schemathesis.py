"""Schemathesis against the OpenAPI schema: generated requests never get a server error.

Every operation is run, as the device door's gateway and as each role (nurse, clinician,
admin), so that requests get past the role and site checks into every route's own code.
Acts that would end the run's own sign-in are aimed elsewhere: the user routes at a user of
their own (`path.user_id` fixed in schemathesis.toml), and signing out is run last, with a
token of its own. The whole run takes about five minutes on the 2-core test machine.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from app.storage.models import AuditEvent, Chair, InfusionSession, Role, User
from tests.conftest import Clinic, LiveServer, add_person
from tests.test_security import MATRIX, RANK

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

DEVICE_DOOR = "/api/v1/observations"
ALERT_DOOR = "/api/v1/alerts"
SIGN_OUT = "/api/v1/auth/sign-out"
# Examples per operation: the admin reaches every route's own code; the nurse and the
# clinician are refused at the door of many, where fewer examples find as much.
EXAMPLES = {Role.ADMIN: 15, Role.CLINICIAN: 10, Role.NURSE: 10}


def schemathesis(
    schema: Path, server: LiveServer, token: str, examples: int, *selection: str
) -> str:
    st = Path(sys.executable).with_name("st")
    command = [
        str(st), "run", str(schema),
        "--url", server.http_url,
        "--header", f"Authorization: Bearer {token}",
        "--checks", "not_a_server_error",
        "--max-examples", str(examples),
        "--seed", "7",
        "--workers", "1",
        "--phases", "examples,coverage,fuzzing",
        *selection,
    ]  # fmt: skip
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "NO_COLOR": "1"},
        cwd=schema.parent,  # schemathesis.toml is read there, and its cache kept there
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    return done.stdout


def operations_run(output: str) -> int:
    """How many operations the run's summary says it tested ("Tested: 52")."""
    found = re.search(r"^\s*Tested: (\d+)$", output, re.MULTILINE)
    assert found, output[-3000:]
    return int(found.group(1))


def refused_only(output: str, status: str) -> set[tuple[str, str]]:
    """The operations the run's warnings list as having answered only `status`
    ("403 Forbidden (3 operations):" followed by "  - GET /api/v1/users" lines)."""
    found = re.search(rf"^{status} \(\d+ operations?\):\n((?:\s+- .+\n)+)", output, re.MULTILINE)
    if found is None:
        return set()
    lines = [line.strip().removeprefix("- ") for line in found.group(1).splitlines()]
    return {(method, path) for method, path in (line.split(" ", 1) for line in lines)}


def above(role: Role) -> set[tuple[str, str]]:
    """The operations `role` may not use at all, from the security test's matrix."""
    return {
        operation
        for operation, (least, _) in MATRIX.items()
        if least is not None and RANK[least] > RANK[role]
    }


def _user_id(clinic: Clinic, username: str) -> int:
    with Session(create_engine(clinic.url)) as session:
        return session.scalars(select(User.id).where(User.username == username)).one()


def _config(clinic: Clinic) -> str:
    """schemathesis.toml: the user routes aimed at a user of their own (to change,
    deactivate and revoke), and most ids and device names drawn from what the clinic
    holds, so that generated requests reach past the 404s into each route's work."""
    with Session(create_engine(clinic.url)) as session:
        add_person(session, "fuzz.target", Role.NURSE, [clinic.site_id])
        chairs = list(session.scalars(select(Chair.id).where(Chair.site_id == clinic.site_id)))
        sessions = list(
            session.scalars(select(InfusionSession.id).where(InfusionSession.chair_id.in_(chairs)))
        )
        patients = list(session.scalars(select(InfusionSession.patient_id).distinct()))
    dictionaries = {
        "sites": [clinic.site_id],
        "chairs": chairs,
        "sessions": sessions,
        "patients": patients,
        "devices": [clinic.device(index) for index in range(1, clinic.chairs + 1)],
        "vitals": ["hr", "spo2", "nibp_sys", "nibp_dia", "150456", "8867-4"],
        "units": ["/min", "%", "mm[Hg]", "kPa"],
    }
    bindings = {
        "path.site_id": "sites",
        "path.chair_id": "chairs",
        "path.session_id": "sessions",
        "path.patient_id": "patients",
        "path.identifier": "devices",
        "body.device_id": "devices",
        "body.observations[*].vital": "vitals",
        "body.observations[*].unit": "units",
    }
    lines = ["[parameters]", f'"path.user_id" = {_user_id(clinic, "fuzz.target")}']
    lines += [
        f'"{key}" = {{ dictionary = "{name}", probability = 0.7 }}'
        for key, name in bindings.items()
    ]
    for name, values in dictionaries.items():
        lines += [f"[dictionaries.{name}]", f"values = {json.dumps(values)}"]
    return "\n".join(lines) + "\n"


def test_no_generated_request_gets_a_server_error(
    live_server: LiveServer, clinic: Clinic, tmp_path: Path
) -> None:
    openapi = live_server.app.openapi()
    operations = sum(
        method in {"get", "post", "put", "patch", "delete"}
        for item in openapi["paths"].values()
        for method in item
    )
    schema = tmp_path / "openapi.json"
    schema.write_text(json.dumps(openapi))
    (tmp_path / "schemathesis.toml").write_text(_config(clinic))
    # The device door first, as the site's gateway (the admin's run may revoke its credential)…
    devices = schemathesis(
        schema,
        live_server,
        clinic.device_token,
        15,
        "--include-path",
        DEVICE_DOOR,
        "--include-path",
        ALERT_DOOR,
    )
    assert "Authentication failed" not in devices, devices[-3000:]
    assert operations_run(devices) == 2
    # …then people's routes, as each role, all of them but signing out…
    for role in (Role.NURSE, Role.CLINICIAN, Role.ADMIN):
        people = schemathesis(
            schema, live_server, clinic.tokens[role.value], EXAMPLES[role],
            "--exclude-path", DEVICE_DOOR, "--exclude-path", ALERT_DOOR,
            "--exclude-path", SIGN_OUT,
        )  # fmt: skip
        context = f"{role.value}: {people[-4000:]}"
        assert operations_run(people) == operations - 3, context
        # Refused only for lack of the role: every other route let the role in to be fuzzed.
        # (A route above the role may still answer a malformed id with 422 before 403.)
        assert not refused_only(people, "401 Unauthorized"), context
        assert refused_only(people, "403 Forbidden") <= above(role), context
    # The config was followed: the user routes changed only their own user, and real
    # sessions were looked at (their views are audited).
    with Session(create_engine(clinic.url)) as session:
        acts = session.execute(
            select(AuditEvent.action, AuditEvent.target_id).where(AuditEvent.outcome == "ok")
        ).all()
    target = str(_user_id(clinic, "fuzz.target"))
    assert {t for a, t in acts if a in {"user_changed", "user_tokens_revoked"}} == {target}
    assert any(action == "session_viewed" for action, _ in acts)
    # …and signing out last, each role with a token of its own.
    with Session(create_engine(clinic.url)) as session:
        spare = {role: add_person(session, f"spare.{role.value}", role, [clinic.site_id])
                 for role in Role}  # fmt: skip
    for token in spare.values():
        out = schemathesis(schema, live_server, token, 3, "--include-path", SIGN_OUT)
        assert operations_run(out) == 1
