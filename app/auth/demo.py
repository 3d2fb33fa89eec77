"""The demo's people and the simulator's credential, made afresh on every `vigil demo`."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from app.auth.service import AuthService, UserChange
from app.errors import ConflictError
from app.storage.models import Role

DEMO_ACTOR = "vigil demo"
DEMO_GATEWAY_LABEL = "demo simulator"
DEMO_PEOPLE = (
    ("nurse", "Demo Nurse", Role.NURSE),
    ("clinician", "Demo Clinician", Role.CLINICIAN),
    ("admin", "Demo Admin", Role.ADMIN),
)


@dataclass(frozen=True)
class DemoAccess:
    people: list[tuple[str, Role, str]]  # username, role, password
    gateway_token: str


async def demo_access(auth: AuthService, site_id: int) -> DemoAccess:
    """Create the demo users (or give them new passwords) and a new gateway credential for
    the demo site's simulated monitors, revoking the previous run's."""
    people = []
    by_name = {user.username: user for user, _ in await auth.users()}
    for username, name, role in DEMO_PEOPLE:
        password = secrets.token_urlsafe(9)
        existing = by_name.get(username)
        if existing is None:
            try:
                await auth.create_user(
                    DEMO_ACTOR,
                    username=username,
                    display_name=name,
                    role=role,
                    password=password,
                    site_ids=[site_id],
                )
            except ConflictError:  # created meanwhile by another process: reset below
                existing = next(u for u, _ in await auth.users() if u.username == username)
        if existing is not None:
            await auth.change_user(
                DEMO_ACTOR,
                existing.id,
                UserChange(
                    password=password, role=role, site_ids=[site_id], unlock=True, active=True
                ),
            )
        people.append((username, role, password))
    for credential, _ in await auth.device_credentials():
        if credential.label == DEMO_GATEWAY_LABEL and credential.revoked_at is None:
            await auth.revoke_device_credential(DEMO_ACTOR, credential.id)
    issued = await auth.issue_device_credential(
        DEMO_ACTOR, label=DEMO_GATEWAY_LABEL, site_id=site_id
    )
    return DemoAccess(people, issued.token)
