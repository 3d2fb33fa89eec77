"""Queries for people, tokens, device credentials and resource→site lookups."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.auth.principal import DeviceCaller, Principal
from app.errors import ConflictError, NotFoundError
from app.storage.models import (
    AccessToken,
    Alarm,
    Chair,
    Device,
    DeviceCredential,
    InfusionSession,
    Patient,
    Role,
    Site,
    TokenKind,
    User,
    UserSite,
)


@dataclass(frozen=True)
class SignInRecord:
    user_id: int
    password_hash: str
    active: bool


def _site_ids(session: Session, user: User) -> frozenset[int] | None:
    if user.role is Role.ADMIN or user.all_sites:
        return None
    rows = session.scalars(select(UserSite.site_id).where(UserSite.user_id == user.id))
    return frozenset(rows)


def find_principal(
    session: Session, hashed: str, kind: TokenKind | None, now: datetime
) -> Principal | None:
    """The person a live, unrevoked, unexpired token of an active account belongs to."""
    query = (
        select(AccessToken, User)
        .join(User, User.id == AccessToken.user_id)
        .where(
            AccessToken.token_hash == hashed,
            AccessToken.revoked_at.is_(None),
            AccessToken.expires_at > now,
            User.active.is_(True),
        )
    )
    if kind is not None:
        query = query.where(AccessToken.kind == kind)
    row = session.execute(query).first()
    if row is None:
        return None
    token, user = row
    return Principal(
        user.id, user.username, user.display_name, user.role, _site_ids(session, user), token.id
    )


def sign_in_record(session: Session, username: str) -> SignInRecord | None:
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        return None
    return SignInRecord(user.id, user.password_hash, user.active)


def record_success(session: Session, user_id: int, new_hash: str | None) -> None:
    values: dict[str, object] = {"failed_sign_ins": 0, "locked_until": None}
    if new_hash:
        values["password_hash"] = new_hash
    session.execute(update(User).where(User.id == user_id).values(**values))
    session.commit()


def add_token(
    session: Session,
    user_id: int,
    kind: TokenKind,
    hashed: str,
    label: str,
    created_at: datetime,
    expires_at: datetime,
) -> int:
    token = AccessToken(
        user_id=user_id,
        kind=kind,
        token_hash=hashed,
        label=label,
        created_at=created_at,
        expires_at=expires_at,
    )
    session.add(token)
    session.commit()
    return token.id


def revoke_token_hash(session: Session, hashed: str, now: datetime) -> None:
    session.execute(
        update(AccessToken)
        .where(AccessToken.token_hash == hashed, AccessToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    session.commit()


def revoke_user_tokens(session: Session, user_id: int, now: datetime) -> int:
    result = session.execute(
        update(AccessToken)
        .where(AccessToken.user_id == user_id, AccessToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    session.commit()
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def list_tokens(session: Session, user_id: int) -> list[AccessToken]:
    query = select(AccessToken).where(AccessToken.user_id == user_id).order_by(AccessToken.id)
    return list(session.scalars(query))


def _check_sites(session: Session, site_ids: Sequence[int]) -> None:
    known = set(session.scalars(select(Site.id).where(Site.id.in_(site_ids))))
    missing = sorted(set(site_ids) - known)
    if missing:
        raise NotFoundError(f"no site with id {missing[0]}")


def add_user(
    session: Session,
    *,
    username: str,
    display_name: str,
    role: Role,
    password_hash: str,
    site_ids: Sequence[int],
    all_sites: bool,
    now: datetime,
) -> User:
    _check_sites(session, site_ids)
    user = User(
        username=username,
        display_name=display_name,
        role=role,
        password_hash=password_hash,
        active=True,
        all_sites=all_sites,
        failed_sign_ins=0,
        created_at=now,
        sites=[UserSite(site_id=site_id) for site_id in sorted(set(site_ids))],
    )
    session.add(user)
    try:
        session.commit()
    except IntegrityError as exc:
        session.rollback()
        raise ConflictError(f"username {username!r} is taken") from exc
    session.refresh(user)
    return user


def get_user(session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFoundError(f"no user with id {user_id}")
    return user


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.username)))


def set_user_sites(session: Session, user: User, site_ids: Sequence[int]) -> None:
    _check_sites(session, site_ids)
    session.execute(delete(UserSite).where(UserSite.user_id == user.id))
    for site_id in sorted(set(site_ids)):
        session.add(UserSite(user_id=user.id, site_id=site_id))


def user_site_ids(session: Session, user_id: int) -> list[int]:
    query = select(UserSite.site_id).where(UserSite.user_id == user_id).order_by(UserSite.site_id)
    return list(session.scalars(query))


# --- devices -------------------------------------------------------------------------------


def device_id_of(session: Session, identifier: str) -> int:
    device_id = session.scalar(select(Device.id).where(Device.identifier == identifier))
    if device_id is None:
        raise NotFoundError(f"device {identifier!r} is not registered")
    return device_id


def add_device_credential(
    session: Session,
    *,
    hashed: str,
    label: str,
    device_id: int | None,
    site_id: int | None,
    created_by: str,
    now: datetime,
) -> DeviceCredential:
    if site_id is not None:
        _check_sites(session, [site_id])
    credential = DeviceCredential(
        token_hash=hashed,
        label=label,
        device_id=device_id,
        site_id=site_id,
        created_at=now,
        created_by=created_by,
    )
    session.add(credential)
    session.commit()
    session.refresh(credential)
    return credential


def list_device_credentials(session: Session) -> list[tuple[DeviceCredential, str | None]]:
    query = (
        select(DeviceCredential, Device.identifier)
        .outerjoin(Device, Device.id == DeviceCredential.device_id)
        .order_by(DeviceCredential.id)
    )
    return [(credential, identifier) for credential, identifier in session.execute(query)]


def revoke_device_credential(
    session: Session, credential_id: int, now: datetime
) -> tuple[DeviceCredential, str | None]:
    """Revoke it (once); returns it with the identifier of the device it is bound to."""
    credential = session.get(DeviceCredential, credential_id)
    if credential is None:
        raise NotFoundError(f"no device credential with id {credential_id}")
    if credential.revoked_at is None:
        credential.revoked_at = now
        session.commit()
    identifier = None
    if credential.device_id is not None:
        identifier = session.scalar(
            select(Device.identifier).where(Device.id == credential.device_id)
        )
    return credential, identifier


def find_device_caller(session: Session, hashed: str) -> DeviceCaller | None:
    credential = session.scalar(
        select(DeviceCredential).where(
            DeviceCredential.token_hash == hashed, DeviceCredential.revoked_at.is_(None)
        )
    )
    if credential is None:
        return None
    return DeviceCaller(credential.id, credential.label, credential.device_id, credential.site_id)


# --- which site a resource belongs to -----------------------------------------------------


def site_of_session(session: Session, session_id: int) -> int:
    site_id = session.scalar(
        select(Chair.site_id)
        .join(InfusionSession, InfusionSession.chair_id == Chair.id)
        .where(InfusionSession.id == session_id)
    )
    if site_id is None:
        raise NotFoundError(f"no session with id {session_id}")
    return site_id


def site_of_chair(session: Session, chair_id: int) -> int:
    site_id = session.scalar(select(Chair.site_id).where(Chair.id == chair_id))
    if site_id is None:
        raise NotFoundError(f"no chair with id {chair_id}")
    return site_id


def site_of_alarm(session: Session, alarm_id: str) -> int:
    site_id = session.scalar(
        select(Chair.site_id).join(Alarm, Alarm.chair_id == Chair.id).where(Alarm.id == alarm_id)
    )
    if site_id is None:
        raise NotFoundError(f"no alarm with id {alarm_id!r}")
    return site_id


def sites_of_patient(session: Session, patient_id: int) -> frozenset[int]:
    """The sites a patient has had sessions at: a patient is seen by who may see one."""
    if session.get(Patient, patient_id) is None:
        raise NotFoundError(f"no patient with id {patient_id}")
    return frozenset(
        session.scalars(
            select(Chair.site_id)
            .join(InfusionSession, InfusionSession.chair_id == Chair.id)
            .where(InfusionSession.patient_id == patient_id)
            .distinct()
        )
    )


def site_exists(session: Session, site_id: int) -> None:
    if session.get(Site, site_id) is None:
        raise NotFoundError(f"no site with id {site_id}")
