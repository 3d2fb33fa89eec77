"""Sign-in, tokens, people and device credentials: the rules, in one place."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from limits import parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from sqlalchemy.orm import Session

from app.auth import repository
from app.auth.audit import AuditTrail
from app.auth.passwords import MIN_PASSWORD_LENGTH, hash_password, needs_rehash, verify_password
from app.auth.principal import DeviceCaller, Principal
from app.auth.throttle import SignInThrottle
from app.auth.tokens import (
    DEVICE_TOKEN_PREFIX,
    USER_TOKEN_PREFIX,
    new_token,
    token_hash,
)
from app.errors import FieldProblem, InvalidRequest, NotAuthenticated, TooManyRequests
from app.settings import Settings
from app.storage.db import Database
from app.storage.models import DeviceCredential, Role, TokenKind, User
from app.timeutil import utcnow


@dataclass(frozen=True)
class SignedIn:
    token: str
    principal: Principal
    expires_at: datetime


@dataclass(frozen=True)
class UserChange:
    display_name: str | None = None
    role: Role | None = None
    site_ids: Sequence[int] | None = None
    all_sites: bool | None = None
    active: bool | None = None
    password: str | None = None
    unlock: bool = False


@dataclass(frozen=True)
class IssuedCredential:
    credential: DeviceCredential
    device_identifier: str | None
    token: str


def check_password_strength(password: str, field: tuple[str, ...] = ("password",)) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidRequest(
            [FieldProblem(field, f"must be at least {MIN_PASSWORD_LENGTH} characters")]
        )


class AuthService:
    def __init__(self, db: Database, audit: AuditTrail, settings: Settings) -> None:
        self._db = db
        self.audit = audit
        self._settings = settings
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._sign_in_rate = parse(settings.sign_in_rate)
        self._throttle = SignInThrottle(
            free_failures=settings.sign_in_free_failures,
            account_free_failures=settings.sign_in_account_free_failures,
            max_delay_s=settings.sign_in_max_delay_s,
        )

    # --- people signing in -----------------------------------------------------------------

    async def sign_in(
        self,
        username: str,
        password: str,
        *,
        source: str | None,
        kind: TokenKind = TokenKind.SESSION,
        label: str = "browser",
    ) -> SignedIn:
        """Check a password and issue a token. Rate-limited per address; failures slow
        further attempts per account and address (app/auth/throttle.py), never lock."""
        address = source or "unknown"
        if not self._limiter.hit(self._sign_in_rate, address):
            stats = self._limiter.get_window_stats(self._sign_in_rate, address)
            retry = max(1, int(stats.reset_time - utcnow().timestamp()) + 1)
            await self.audit.record(username, "sign_in", outcome="rate_limited", source=source)
            raise TooManyRequests("too many sign-in attempts from this address", retry)
        # Decided before the account is even looked up: the same for every username,
        # whether or not it exists.
        wait = self._throttle.wait_s(username, address)
        if wait > 0:
            await self.audit.record(username, "sign_in", outcome="throttled", source=source)
            raise TooManyRequests(
                "too many failed sign-ins for this username: wait before trying again",
                math.ceil(wait),
            )
        record = await self._db.read(repository.sign_in_record, username)
        # Argon2 takes tens of milliseconds of CPU: keep it off the event loop and the DB
        # thread. An unknown username is checked against a dummy hash: it costs the same.
        valid = await asyncio.to_thread(
            verify_password, record.password_hash if record else None, password
        )
        if record is None or not valid or not record.active:
            self._throttle.failed(username, address)
            await self.audit.record(
                username,
                "sign_in",
                outcome="failed",
                target_type="user",
                target_id=record.user_id if record else None,
                source=source,
            )
            raise NotAuthenticated("wrong username or password")
        self._throttle.succeeded(username, address)
        new_hash = await asyncio.to_thread(_rehash_if_needed, record.password_hash, password)
        await self._db.run(repository.record_success, record.user_id, new_hash)
        now = utcnow()
        lifetime = timedelta(hours=self._settings.session_hours)
        if kind is TokenKind.API:
            lifetime = timedelta(days=self._settings.api_token_days)
        signed_in = await self._issue(record.user_id, kind, label, now + lifetime)
        await self.audit.record(
            signed_in.principal,
            "sign_in",
            target_type="user",
            target_id=record.user_id,
            source=source,
            detail={"kind": kind.value},
        )
        return signed_in

    async def sign_in_verified(self, user_id: int, *, source: str | None, via: str) -> SignedIn:
        """A browser session for a person another party has already authenticated (single
        sign-on): the same token, cookie and lifetime as a password sign-in, audited as one,
        with `via` naming the party. The caller has checked that the account is active."""
        expires_at = utcnow() + timedelta(hours=self._settings.session_hours)
        signed_in = await self._issue(user_id, TokenKind.SESSION, via, expires_at)
        await self.audit.record(
            signed_in.principal,
            "sign_in",
            target_type="user",
            target_id=user_id,
            source=source,
            detail={"kind": TokenKind.SESSION.value, "via": via},
        )
        return signed_in

    async def _issue(
        self, user_id: int, kind: TokenKind, label: str, expires_at: datetime
    ) -> SignedIn:
        token = new_token(USER_TOKEN_PREFIX)
        hashed = token_hash(token)
        await self._db.run(
            repository.add_token, user_id, kind, hashed, label[:80], utcnow(), expires_at
        )
        principal = await self._db.read(repository.find_principal, hashed, kind, utcnow())
        assert principal is not None
        return SignedIn(token, principal, expires_at)

    async def authenticate(
        self, token: str | None, kind: TokenKind | None = None
    ) -> Principal | None:
        """The person behind a token, if it is live; checked against the database each time,
        so a revocation or a deactivated account stops it at once."""
        if not token or not token.startswith(USER_TOKEN_PREFIX):
            return None
        return await self._db.read(repository.find_principal, token_hash(token), kind, utcnow())

    async def sign_out(self, token: str, principal: Principal, source: str | None) -> None:
        await self._db.run(repository.revoke_token_hash, token_hash(token), utcnow())
        await self.audit.record(principal, "sign_out", source=source)

    async def create_api_token(
        self, principal: Principal, label: str, days: int, source: str | None
    ) -> SignedIn:
        if days > self._settings.api_token_days:
            raise InvalidRequest(
                [FieldProblem(("body", "days"), f"at most {self._settings.api_token_days}")]
            )
        issued = await self._issue(
            principal.user_id, TokenKind.API, label, utcnow() + timedelta(days=days)
        )
        await self.audit.record(
            principal,
            "api_token_created",
            target_type="access_token",
            target_id=issued.principal.token_id,
            source=source,
            detail={"days": days},
        )
        return issued

    # --- people: administration --------------------------------------------------------------

    async def create_user(
        self,
        actor: Principal | str,
        *,
        username: str,
        display_name: str,
        role: Role,
        password: str,
        site_ids: Sequence[int] = (),
        all_sites: bool = False,
        source: str | None = None,
    ) -> User:
        check_password_strength(password, ("body", "password"))
        hashed = await asyncio.to_thread(hash_password, password)
        user = await self._db.run(
            lambda s: repository.add_user(
                s,
                username=username,
                display_name=display_name,
                role=role,
                password_hash=hashed,
                site_ids=site_ids,
                all_sites=all_sites,
                now=utcnow(),
            )
        )
        await self.audit.record(
            actor,
            "user_created",
            target_type="user",
            target_id=user.id,
            source=source,
            detail={
                "username": username,
                "role": role.value,
                "sites": sorted(site_ids),
                "all_sites": all_sites,
            },
        )
        return user

    async def change_user(
        self, actor: Principal | str, user_id: int, change: UserChange, source: str | None = None
    ) -> User:
        if change.password is not None:
            check_password_strength(change.password, ("body", "password"))
        new_hash = (
            None
            if change.password is None
            else await asyncio.to_thread(hash_password, change.password)
        )
        user = await self._db.run(_apply_change, user_id, change, new_hash, utcnow())
        if change.unlock:
            self._throttle.forget(user.username)
        detail = {
            key: value
            for key, value in {
                "display_name": change.display_name,
                "role": change.role.value if change.role else None,
                "sites": None if change.site_ids is None else sorted(change.site_ids),
                "all_sites": change.all_sites,
                "active": change.active,
                "password_changed": True if change.password is not None else None,
                "unlocked": True if change.unlock else None,
            }.items()
            if value is not None
        }
        await self.audit.record(
            actor,
            "user_changed",
            target_type="user",
            target_id=user_id,
            source=source,
            detail=detail,
        )
        return user

    async def revoke_tokens(
        self, actor: Principal | str, user_id: int, source: str | None = None
    ) -> int:
        await self._db.read(repository.get_user, user_id)
        count = await self._db.run(repository.revoke_user_tokens, user_id, utcnow())
        await self.audit.record(
            actor,
            "user_tokens_revoked",
            target_type="user",
            target_id=user_id,
            source=source,
            detail={"tokens": count},
        )
        return count

    async def users(self) -> list[tuple[User, list[int]]]:
        return await self._db.read(_users_with_sites)

    async def user(self, user_id: int) -> tuple[User, list[int]]:
        return await self._db.read(_user_with_sites, user_id)

    # --- devices ---------------------------------------------------------------------------

    async def issue_device_credential(
        self,
        actor: Principal | str,
        *,
        label: str,
        device_identifier: str | None = None,
        site_id: int | None = None,
        source: str | None = None,
    ) -> IssuedCredential:
        if (device_identifier is None) == (site_id is None):
            raise InvalidRequest(
                [FieldProblem(("body", "device_id"), "give exactly one of device_id or site_id")]
            )
        token = new_token(DEVICE_TOKEN_PREFIX)
        name = actor.username if isinstance(actor, Principal) else actor

        def issue(session: Session) -> DeviceCredential:
            device_pk = (
                None
                if device_identifier is None
                else repository.device_id_of(session, device_identifier)
            )
            return repository.add_device_credential(
                session,
                hashed=token_hash(token),
                label=label,
                device_id=device_pk,
                site_id=site_id,
                created_by=name,
                now=utcnow(),
            )

        credential = await self._db.run(issue)
        await self.audit.record(
            actor,
            "device_credential_created",
            target_type="device_credential",
            target_id=credential.id,
            site_id=site_id,
            source=source,
            detail={"device": device_identifier, "site_id": site_id, "label": label},
        )
        return IssuedCredential(credential, device_identifier, token)

    async def revoke_device_credential(
        self, actor: Principal | str, credential_id: int, source: str | None = None
    ) -> tuple[DeviceCredential, str | None]:
        credential, device_identifier = await self._db.run(
            repository.revoke_device_credential, credential_id, utcnow()
        )
        await self.audit.record(
            actor,
            "device_credential_revoked",
            target_type="device_credential",
            target_id=credential_id,
            site_id=credential.site_id,
            source=source,
        )
        return credential, device_identifier

    async def device_credentials(self) -> list[tuple[DeviceCredential, str | None]]:
        return await self._db.read(repository.list_device_credentials)

    async def device_caller(self, token: str | None) -> DeviceCaller:
        if not token or not token.startswith(DEVICE_TOKEN_PREFIX):
            raise NotAuthenticated("a device credential is required (Authorization: Bearer vgd_…)")
        caller = await self._db.read(repository.find_device_caller, token_hash(token))
        if caller is None:
            raise NotAuthenticated("the device credential is unknown or revoked")
        return caller


def _rehash_if_needed(password_hash: str, password: str) -> str | None:
    return hash_password(password) if needs_rehash(password_hash) else None


def _apply_change(
    session: Session, user_id: int, change: UserChange, new_hash: str | None, now: datetime
) -> User:
    user = repository.get_user(session, user_id)
    if change.display_name is not None:
        user.display_name = change.display_name
    if change.role is not None:
        user.role = change.role
    if change.all_sites is not None:
        user.all_sites = change.all_sites
    if change.site_ids is not None:
        repository.set_user_sites(session, user, change.site_ids)
    if change.active is not None:
        user.active = change.active
    if change.unlock:
        # Sign-in waits live in memory (the service clears them); lockouts of earlier
        # versions lived here.
        user.locked_until = None
        user.failed_sign_ins = 0
    if new_hash is not None:
        user.password_hash = new_hash
    session.commit()
    if change.active is False or new_hash is not None:
        # A deactivated account or a new password ends every sign-in at once.
        repository.revoke_user_tokens(session, user_id, now)
    session.refresh(user)
    return user


def _users_with_sites(session: Session) -> list[tuple[User, list[int]]]:
    return [
        (user, repository.user_site_ids(session, user.id))
        for user in repository.list_users(session)
    ]


def _user_with_sites(session: Session, user_id: int) -> tuple[User, list[int]]:
    user = repository.get_user(session, user_id)
    return user, repository.user_site_ids(session, user_id)
