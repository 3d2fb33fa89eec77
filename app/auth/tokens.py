"""Opaque bearer secrets. Only a SHA-256 of each is stored: they carry 256 random bits,
so a slow hash adds nothing, and a stolen database yields no usable token."""

from __future__ import annotations

import hashlib
import hmac
import secrets

USER_TOKEN_PREFIX = "vgu_"
DEVICE_TOKEN_PREFIX = "vgd_"


def new_token(prefix: str) -> str:
    # The prefix lets secret scanners and people tell a Vigil token, and its kind, at a glance.
    return prefix + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def csrf_token_for(session_token: str) -> str:
    """The CSRF value that goes with a browser session (double-submit, bound to the session)."""
    return hashlib.sha256(b"vigil-csrf:" + session_token.encode()).hexdigest()[:43]


def same_secret(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
