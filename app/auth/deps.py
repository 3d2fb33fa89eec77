"""Typed FastAPI dependencies that say who is calling and whether they may.

Every route names one of these in its signature, e.g. `who: NurseOnSession`: the
dependency authenticates the caller (bearer token, or the session cookie plus the CSRF
header for state-changing requests), checks the role, and checks the site of the
resource in the path. The route then acts as `who`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session
from starlette.requests import HTTPConnection

from app.auth import repository
from app.auth.audit import AuditTrail
from app.auth.principal import Principal
from app.auth.service import AuthService
from app.auth.tokens import DEVICE_TOKEN_PREFIX, csrf_token_for, same_secret
from app.errors import Forbidden, NotAuthenticated
from app.params import AlarmId, ChairId, PatientId, SessionId, SiteId
from app.storage.db import Database
from app.storage.models import Role, TokenKind

SESSION_COOKIE = "vigil_session"
CSRF_COOKIE = "vigil_csrf"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

# Declared as security schemes so the OpenAPI document (and /docs) shows how to sign in.
_bearer = HTTPBearer(auto_error=False, description="A personal API token (vgu_…).")
_cookie = APIKeyCookie(name=SESSION_COOKIE, auto_error=False, description="Browser sign-in.")


class _DeviceBearer(HTTPBearer):
    """The device credential a request carries. Its absence is refused here, before the
    body is even looked at; whether it is live and may send for the batch's device is
    checked with the batch, in one database round trip.

    One dependency, not a wrapper around `HTTPBearer`'s: the device door is called every
    second per chair, and each level of FastAPI's dependency solving costs on every call.
    Still an `HTTPBearer`, so the OpenAPI document shows the scheme.
    """

    async def __call__(self, request: Request) -> str:  # type: ignore[override]
        scheme, _, token = (request.headers.get("Authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not token.startswith(DEVICE_TOKEN_PREFIX):
            raise NotAuthenticated("a device credential is required (Authorization: Bearer vgd_…)")
        return token


device_token = _DeviceBearer(
    auto_error=False, scheme_name="DeviceCredential", description="A device credential (vgd_…)."
)

DeviceToken = Annotated[str, Depends(device_token)]


def _is_device_door(route: object) -> bool:
    """Whether a route takes the device credential (`DeviceToken`) among its dependencies."""
    dependant = getattr(route, "dependant", None)
    pending = [dependant] if dependant is not None else []
    while pending:
        current = pending.pop()
        if current.call is device_token:
            return True
        pending.extend(current.dependencies)
    return False


def authenticate_before_validation(app: FastAPI) -> None:
    """A device door answers 401, not 422, to a batch that fails validation when its
    credential is missing, unknown or revoked: who is not a device learns nothing about
    what a device sends. The check costs a database round trip on this error path only;
    a valid batch's credential is checked by the writer, in the transaction that stores
    it. (FastAPI validates the body after the dependencies, so without this a forged
    `vgd_…` token got the full 422, and a body that is not JSON a 422 before any check.)
    """
    answer_invalid = app.exception_handlers[RequestValidationError]

    async def handle(request: Request, exc: Exception) -> Response:
        if _is_device_door(request.scope.get("route")):
            scheme, _, token = (request.headers.get("Authorization") or "").partition(" ")
            try:
                if scheme.lower() != "bearer":
                    raise NotAuthenticated(
                        "a device credential is required (Authorization: Bearer vgd_…)"
                    )
                await get_auth(request).device_caller(token.strip())
            except NotAuthenticated as refused:
                return JSONResponse(
                    refused.body(), status_code=refused.status_code, headers=refused.headers()
                )
        answered = answer_invalid(request, exc)
        if isinstance(answered, Response):
            return answered
        response: Response = await answered
        return response

    app.add_exception_handler(RequestValidationError, handle)


def get_auth(request: HTTPConnection) -> AuthService:
    auth: AuthService = request.app.state.auth
    return auth


def get_audit(request: Request) -> AuditTrail:
    audit: AuditTrail = request.app.state.auth.audit
    return audit


def source_of(request: Request) -> str | None:
    return request.client.host if request.client else None


def check_csrf(request: Request, session_token: str) -> None:
    """Cookie-authenticated writes must echo the CSRF cookie in a header (double submit):
    another site can make the browser send the cookie, but cannot read it to copy it."""
    sent = request.headers.get(CSRF_HEADER, "")
    if not sent or not same_secret(sent, csrf_token_for(session_token)):
        raise Forbidden(f"missing or wrong {CSRF_HEADER} header for a signed-in browser request")


async def current_principal(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    cookie: Annotated[str | None, Depends(_cookie)],
) -> Principal:
    auth = get_auth(request)
    if bearer is not None:
        principal = await auth.authenticate(bearer.credentials)
    elif cookie:
        principal = await auth.authenticate(cookie, TokenKind.SESSION)
        if principal is not None and request.method not in SAFE_METHODS:
            check_csrf(request, cookie)
    else:
        raise NotAuthenticated("sign in first: send Authorization: Bearer <token>")
    if principal is None:
        raise NotAuthenticated("the token is unknown, expired or revoked: sign in again")
    request.state.principal = principal
    return principal


SignedIn = Annotated[Principal, Depends(current_principal)]


def websocket_credential(websocket: WebSocket) -> tuple[str | None, TokenKind | None]:
    """A websocket's credential: a bearer header (scripts, devices) or, from a browser,
    the session cookie, accepted only from Vigil's own pages (the Origin must be this
    host), since a browser sends cookies on websockets opened by any site."""
    scheme, _, token = websocket.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token:
        return token.strip(), None
    cookie = websocket.cookies.get(SESSION_COOKIE)
    origin = websocket.headers.get("origin")
    if cookie and origin and origin.split("://", 1)[-1] == websocket.headers.get("host"):
        return cookie, TokenKind.SESSION
    return None, None


async def deny(request: Request, principal: Principal, why: str, site_id: int | None) -> None:
    await get_audit(request).record(
        principal,
        "access_denied",
        outcome="denied",
        target_type="route",
        target_id=f"{request.method} {request.url.path}",
        site_id=site_id,
        source=source_of(request),
        detail={"why": why},
    )
    raise Forbidden(why)


def require(role: Role) -> Callable[..., Awaitable[Principal]]:
    async def dependency(request: Request, principal: SignedIn) -> Principal:
        if not principal.has_role(role):
            await deny(request, principal, f"this needs the {role.value} role", None)
        return principal

    return dependency


async def check_site(request: Request, principal: Principal, site_id: int) -> None:
    if not principal.may_see(site_id):
        await deny(request, principal, f"you may not see site {site_id}", site_id)
    request.state.site_id = site_id  # for the audit record of what the route then does


async def record_act(
    request: Request,
    who: Principal,
    action: str,
    *,
    target_type: str | None = None,
    target_id: object = None,
    detail: Mapping[str, object] | None = None,
) -> None:
    """Audit what a route did for `who`, with the request's source and resource's site."""
    await get_audit(request).record(
        who,
        action,
        target_type=target_type,
        target_id=target_id,
        site_id=getattr(request.state, "site_id", None),
        source=source_of(request),
        detail=detail,
    )


async def record_session_export(
    request: Request, who: Principal, session_id: int, export_format: str
) -> None:
    """Audit that `who` took a session's record out of Vigil, and in what form."""
    await record_act(
        request,
        who,
        "session_exported",
        target_type="session",
        target_id=session_id,
        detail={"format": export_format},
    )


def _db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


async def _at_site_of(
    request: Request,
    principal: Principal,
    role: Role,
    site_of: Callable[[Session, Any], int],
    resource_id: object,
) -> Principal:
    """The role check, then the site check for the site `site_of` finds the resource at."""
    principal = await require(role)(request, principal)
    await check_site(request, principal, await _db(request).read(site_of, resource_id))
    return principal


def on_site(role: Role) -> Callable[..., Awaitable[Principal]]:
    async def dependency(site_id: SiteId, request: Request, principal: SignedIn) -> Principal:
        principal = await require(role)(request, principal)
        await check_site(request, principal, site_id)
        return principal

    return dependency


# One factory per path parameter: FastAPI reads the parameter's name from the signature.
def on_session(role: Role) -> Callable[..., Awaitable[Principal]]:
    async def dependency(session_id: SessionId, request: Request, principal: SignedIn) -> Principal:
        return await _at_site_of(request, principal, role, repository.site_of_session, session_id)

    return dependency


def on_chair(role: Role) -> Callable[..., Awaitable[Principal]]:
    async def dependency(chair_id: ChairId, request: Request, principal: SignedIn) -> Principal:
        return await _at_site_of(request, principal, role, repository.site_of_chair, chair_id)

    return dependency


def on_alarm(role: Role) -> Callable[..., Awaitable[Principal]]:
    async def dependency(alarm_id: AlarmId, request: Request, principal: SignedIn) -> Principal:
        return await _at_site_of(request, principal, role, repository.site_of_alarm, alarm_id)

    return dependency


def on_patient(role: Role) -> Callable[..., Awaitable[Principal]]:
    """The role check, then: the caller may see a site where the patient had a session
    (a patient with none, only those who see every site)."""

    async def dependency(patient_id: PatientId, request: Request, principal: SignedIn) -> Principal:
        principal = await require(role)(request, principal)
        sites = await _db(request).run(repository.sites_of_patient, patient_id)
        if principal.site_ids is not None and not sites & principal.site_ids:
            await deny(request, principal, f"you may not see patient {patient_id}", None)
        return principal

    return dependency


Nurse = Annotated[Principal, Depends(require(Role.NURSE))]
Clinician = Annotated[Principal, Depends(require(Role.CLINICIAN))]
Admin = Annotated[Principal, Depends(require(Role.ADMIN))]
NurseAtSite = Annotated[Principal, Depends(on_site(Role.NURSE))]
ClinicianAtSite = Annotated[Principal, Depends(on_site(Role.CLINICIAN))]
NurseOnSession = Annotated[Principal, Depends(on_session(Role.NURSE))]
ClinicianOnSession = Annotated[Principal, Depends(on_session(Role.CLINICIAN))]
NurseOnChair = Annotated[Principal, Depends(on_chair(Role.NURSE))]
NurseOnAlarm = Annotated[Principal, Depends(on_alarm(Role.NURSE))]
ClinicianOnPatient = Annotated[Principal, Depends(on_patient(Role.CLINICIAN))]
Auth = Annotated[AuthService, Depends(get_auth)]
Audit = Annotated[AuditTrail, Depends(get_audit)]
