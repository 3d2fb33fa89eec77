"""Credentials for the benchmarks, written straight into the database they seed.

Every route and websocket needs one (docs/SECURITY.md): a device sends its credential
(`vgd_…`) with every batch, and a screen on the live feed is a signed-in person (`vgu_…`).
The benchmarks make them the way `tests/conftest.py` does, in the session that seeded the
demo site: a gateway credential for the site, and a person with an API token.
"""

from __future__ import annotations

import secrets
from datetime import timedelta

from sqlalchemy.orm import Session

from app.auth import repository
from app.auth.passwords import hash_password
from app.auth.tokens import DEVICE_TOKEN_PREFIX, USER_TOKEN_PREFIX, new_token, token_hash
from app.storage.models import Role, TokenKind
from app.timeutil import utcnow

CREATED_BY = "bench"


def add_gateway_credential(session: Session, site_id: int, label: str = "bench gateway") -> str:
    """A gateway credential for every device bound to a chair at the site; the token."""
    token = new_token(DEVICE_TOKEN_PREFIX)
    repository.add_device_credential(
        session,
        hashed=token_hash(token),
        label=label,
        device_id=None,
        site_id=site_id,
        created_by=CREATED_BY,
        now=utcnow(),
    )
    return token


def add_person(session: Session, username: str, role: Role, site_ids: list[int]) -> str:
    """A user of `role` who may see `site_ids`, with a live API token, which is returned.
    The password is random and thrown away: the benchmarks never sign in with it."""
    now = utcnow()
    user = repository.add_user(
        session,
        username=username,
        display_name=username.title(),
        role=role,
        password_hash=hash_password(secrets.token_urlsafe(16)),
        site_ids=site_ids,
        all_sites=False,
        now=now,
    )
    token = new_token(USER_TOKEN_PREFIX)
    repository.add_token(
        session, user.id, TokenKind.API, token_hash(token), CREATED_BY, now, now + timedelta(days=1)
    )
    return token


def bearer(token: str) -> dict[str, str]:
    """The header that carries a token."""
    return {"Authorization": f"Bearer {token}"}
