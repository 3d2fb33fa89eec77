"""Single sign-on through the clinic's OpenID Connect provider (Authlib), beside passwords.

`/auth/oidc/login` sends the browser to the provider (authorization code flow with PKCE,
`state` and `nonce` kept in a short-lived signed cookie). `/auth/oidc/callback` has Authlib
exchange the code and check the ID token (signature against the provider's published keys,
issuer, audience, expiry, nonce), reads the person's claims (the ID token's, then the
userinfo endpoint's), maps the role and site claims to Vigil's, creates or updates the
person, and signs them in with the same session cookie as a password sign-in.

A person is linked by the provider's issuer and subject id, never by username: a provider
account can never take over a local one that happens to share its name. The provider is
the source of truth for role and sites, which are updated at every sign-in; a deactivated
Vigil account stays locked out whatever the provider says.
"""

from __future__ import annotations

import html
import secrets
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route, Router

from app.auth import repository
from app.auth.deps import get_auth, source_of
from app.auth.web import OIDC_PATH, safe_next, set_session_cookies, sign_in_page
from app.errors import NotFoundError
from app.settings import Settings
from app.storage.db import Database
from app.storage.models import Role, User, UserIdentity
from app.timeutil import utcnow

with warnings.catch_warnings():
    # Authlib 1.9 prefers the httpx2 fork and warns when it falls back to httpx, which it
    # supports and Vigil already uses. Its warning module sets an "always" filter when
    # imported: import it first, so the "ignore" below comes before that filter.
    import authlib.deprecate  # noqa: F401

    warnings.filterwarnings("ignore", message="The httpx module is deprecated")
    from authlib.integrations.starlette_client import OAuth, OAuthError

STATE_COOKIE = "vigil_oidc"
STATE_MINUTES = 15  # how long a person may take at the provider's sign-in page
# Never an Argon2 hash, so no password ever signs a single-sign-on account in.
NO_PASSWORD = "!oidc"
_RANK = {Role.NURSE: 0, Role.CLINICIAN: 1, Role.ADMIN: 2}
_USERNAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789._-")


class NoVigilAccess(Exception):
    """The provider signed the person in, but Vigil will not: the message says why."""

    def __init__(self, message: str, outcome: str = "no_role") -> None:
        super().__init__(message)
        self.message = message
        self.outcome = outcome


@dataclass(frozen=True)
class ExternalPerson:
    """Who the provider says signed in, in Vigil's terms."""

    issuer: str
    subject: str
    username: str
    display_name: str
    role: Role
    site_ids: tuple[int, ...]
    all_sites: bool


def map_claims(claims: Mapping[str, Any], settings: Settings) -> ExternalPerson:
    """The Vigil person for a provider's claims: the highest role any roles-claim value maps
    to, and every site any sites-claim value maps to ("*": every site)."""
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise NoVigilAccess("the provider sent no subject id", outcome="bad_claims")
    roles = {
        Role(settings.oidc_role_map[value])
        for value in _claim_values(claims.get(settings.oidc_roles_claim))
        if value in settings.oidc_role_map
    }
    if not roles:
        raise NoVigilAccess(
            f"your {settings.oidc_provider_name} account has no Vigil role; ask the clinic's "
            "IT to add you to a group that has one"
        )
    site_ids: set[int] = set()
    all_sites = False
    for value in _claim_values(claims.get(settings.oidc_sites_claim)):
        mapped = settings.oidc_site_map.get(value)
        if mapped == "*":
            all_sites = True
        elif mapped is not None:
            site_ids.update(mapped)
    username = _username(claims.get(settings.oidc_username_claim) or subject)
    name = claims.get(settings.oidc_name_claim)
    return ExternalPerson(
        issuer=str(settings.oidc_issuer),
        subject=subject,
        username=username,
        display_name=(name if isinstance(name, str) and name.strip() else username)[:80],
        role=max(roles, key=_RANK.__getitem__),
        site_ids=tuple(sorted(site_ids)),
        all_sites=all_sites,
    )


def _claim_values(claim: object) -> list[str]:
    if isinstance(claim, str):
        return [claim]
    if isinstance(claim, Sequence):
        return [str(value) for value in claim]
    return []


def _username(value: object) -> str:
    """A Vigil username from the provider's: lower case, other characters as '-'."""
    text = "".join(c if c in _USERNAME_CHARS else "-" for c in str(value).lower())
    text = text.lstrip("._-")[:64]
    if len(text) < 2:
        raise NoVigilAccess("the provider's username cannot be a Vigil username", "bad_claims")
    return text


@dataclass(frozen=True)
class Linked:
    user_id: int
    active: bool
    created: bool
    changes: dict[str, object]  # what this sign-in changed in the account, for the audit


def link_person(session: Session, person: ExternalPerson, now: datetime) -> Linked:
    """Create the person's account on their first sign-in, or bring its name, role and
    sites up to date from the provider."""
    identity = session.scalar(
        select(UserIdentity).where(
            UserIdentity.issuer == person.issuer, UserIdentity.subject == person.subject
        )
    )
    if identity is None:
        if session.scalar(select(User.id).where(User.username == person.username)) is not None:
            raise NoVigilAccess(
                f"the username {person.username!r} belongs to a Vigil account that is not "
                "linked to this sign-on; ask the clinic's IT",
                outcome="username_taken",
            )
        user = User(
            username=person.username,
            display_name=person.display_name,
            role=person.role,
            password_hash=NO_PASSWORD,
            active=True,
            all_sites=person.all_sites,
            failed_sign_ins=0,
            created_at=now,
        )
        session.add(user)
        session.flush()
        repository.set_user_sites(session, user, person.site_ids)
        session.add(
            UserIdentity(
                user_id=user.id,
                issuer=person.issuer,
                subject=person.subject,
                created_at=now,
                last_sign_in_at=now,
            )
        )
        session.commit()
        return Linked(user.id, True, True, _described(person))
    user = repository.get_user(session, identity.user_id)
    changes: dict[str, object] = {}
    if user.display_name != person.display_name:
        user.display_name = person.display_name
        changes["display_name"] = person.display_name
    if user.role is not person.role:
        user.role = person.role
        changes["role"] = person.role.value
    if user.all_sites != person.all_sites:
        user.all_sites = person.all_sites
        changes["all_sites"] = person.all_sites
    if repository.user_site_ids(session, user.id) != list(person.site_ids):
        repository.set_user_sites(session, user, person.site_ids)
        changes["sites"] = list(person.site_ids)
    identity.last_sign_in_at = now
    session.commit()
    return Linked(user.id, user.active, False, changes)


def _described(person: ExternalPerson) -> dict[str, object]:
    return {
        "username": person.username,
        "role": person.role.value,
        "sites": list(person.site_ids),
        "all_sites": person.all_sites,
    }


class OidcSignIn:
    """The two routes of single sign-on, over an Authlib client for the configured provider."""

    def __init__(self, settings: Settings, db: Database) -> None:
        self._settings = settings
        self._db = db
        self._issuer = str(settings.oidc_issuer).rstrip("/")
        self._actor = f"oidc:{urlsplit(self._issuer).netloc}"[:80]
        oauth = OAuth()
        secret = settings.oidc_client_secret
        self._client: Any = oauth.register(
            name="vigil",
            client_id=settings.oidc_client_id,
            client_secret=None if secret is None else secret.get_secret_value(),
            server_metadata_url=f"{self._issuer}/.well-known/openid-configuration",
            client_kwargs={"scope": settings.oidc_scopes, "code_challenge_method": "S256"},
        )

    def routes(self) -> Router:
        return Router(
            [
                Route("/login", self.login, methods=["GET"]),
                Route("/callback", self.callback, methods=["GET"]),
            ]
        )

    async def login(self, request: Request) -> Response:
        """Off to the provider, remembering where the person was going."""
        metadata = await self._metadata()
        if metadata is None:
            return self._refused(request, "the sign-on provider cannot be reached", "/", 502)
        request.session["next"] = safe_next(request.query_params.get("next"))
        redirect_uri = self._settings.oidc_redirect_url or str(
            request.url.replace(path=f"{OIDC_PATH}/callback", query="")
        )
        response: Response = await self._client.authorize_redirect(request, redirect_uri)
        return response

    async def callback(self, request: Request) -> Response:
        next_path = safe_next(request.session.pop("next", "/"))
        source = source_of(request)
        auth = get_auth(request)
        claims: dict[str, Any] = {}
        try:
            token: dict[str, Any] = await self._client.authorize_access_token(request)
            claims.update(token.get("userinfo") or {})
            if not claims:
                raise NoVigilAccess("the provider sent no ID token", outcome="bad_claims")
            extra: Mapping[str, Any] = await self._client.userinfo(token=token)
            if extra.get("sub") != claims.get("sub"):
                raise NoVigilAccess("the provider's userinfo is for someone else", "bad_claims")
            claims.update(extra)
            person = map_claims(claims, self._settings)
            try:
                linked = await self._db.run(link_person, person, utcnow())
            except NotFoundError as error:  # VIGIL_OIDC_SITE_MAP names a site Vigil lacks
                raise NoVigilAccess(
                    f"Vigil's single sign-on settings are wrong ({error.message}); tell the "
                    "clinic's IT",
                    outcome="misconfigured",
                ) from None
        except OAuthError as error:
            await auth.audit.record(
                self._actor,
                "sign_in",
                outcome="sso_failed",
                source=source,
                detail={"via": "oidc", "error": str(error.error)[:80]},
            )
            message = f"the sign-on did not complete ({error.error}); try again"
            return self._refused(request, message, next_path, 401)
        except NoVigilAccess as refusal:
            await auth.audit.record(
                str(claims.get(self._settings.oidc_username_claim) or self._actor)[:80],
                "sign_in",
                outcome=refusal.outcome,
                source=source,
                detail={"via": "oidc", "subject": str(claims.get("sub", ""))[:80]},
            )
            return self._refused(request, refusal.message, next_path, 403)
        if linked.created or linked.changes:
            await auth.audit.record(
                self._actor,
                "user_created" if linked.created else "user_changed",
                target_type="user",
                target_id=linked.user_id,
                source=source,
                detail={"via": "oidc", **linked.changes},
            )
        if not linked.active:
            await auth.audit.record(
                person.username,
                "sign_in",
                outcome="deactivated",
                target_type="user",
                target_id=linked.user_id,
                source=source,
                detail={"via": "oidc"},
            )
            message = "this Vigil account is deactivated; an admin can reactivate it"
            return self._refused(request, message, next_path, 403)
        signed_in = await auth.sign_in_verified(linked.user_id, source=source, via="oidc")
        response = _continue_to(next_path)
        set_session_cookies(response, request, signed_in)
        return response

    async def _metadata(self) -> dict[str, Any] | None:
        """The provider's discovery document, checked to be the configured issuer's."""
        try:
            metadata: dict[str, Any] = await self._client.load_server_metadata()
        except Exception:  # any failure to reach or read it means no sign-on for now
            return None
        if str(metadata.get("issuer", "")).rstrip("/") != self._issuer:
            return None
        return metadata

    @staticmethod
    def _refused(request: Request, message: str, next_path: str, status: int) -> Response:
        return sign_in_page(request, f"Single sign-on: {message}.", next_path, status)


def _continue_to(next_path: str) -> HTMLResponse:
    """A page that moves on to `next_path` by itself. Not a redirect: the callback arrives
    from the provider's site, and a browser sends no SameSite=Strict cookie on a redirect
    chain another site began, so the first page would find the person signed out. A
    navigation this page starts is Vigil's own, and carries the new session cookie."""
    target = html.escape(next_path)
    body = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="0;url={target}"><title>Vigil</title></head>'
        f'<body><p>Signed in. <a href="{target}">Continue</a></p></body></html>'
    )
    return HTMLResponse(body, headers={"Cache-Control": "no-store"})


def install_oidc(app: FastAPI, settings: Settings, db: Database) -> None:
    """Mount single sign-on's routes when a provider is configured. Its state cookie is
    signed with a key made at start-up: a sign-in under way when the server restarts is
    simply started again."""
    same_site: Literal["lax"] = "lax"  # the callback is a top-level navigation from the provider
    routes = OidcSignIn(settings, db).routes()
    app.mount(
        OIDC_PATH,
        SessionMiddleware(
            routes,
            secret_key=secrets.token_urlsafe(32),
            session_cookie=STATE_COOKIE,
            max_age=STATE_MINUTES * 60,
            path=OIDC_PATH,
            same_site=same_site,
            https_only=bool(settings.cookie_secure),
        ),
    )
