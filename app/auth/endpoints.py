"""Routes for sign-in by API clients, people, device credentials and the audit trail."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response, status
from fastapi.responses import StreamingResponse

from app.auth.audit import EXPORT_MEDIA_TYPES, AuditQuery, ExportFormat, ExportRange, parse_bound
from app.auth.deps import Admin, Audit, Auth, SignedIn, source_of
from app.auth.schemas import (
    AuditEventOut,
    DeviceCredentialIn,
    DeviceCredentialOut,
    IssuedDeviceCredentialOut,
    MeOut,
    NewTokenIn,
    RevokedOut,
    TokenOut,
    TokenRequest,
    UserIn,
    UserOut,
    UserPatch,
)
from app.auth.service import UserChange
from app.errors import FieldProblem, InvalidRequest
from app.params import BeforeIdQuery, CredentialId, MomentQuery, OptionalSiteQuery, UserId
from app.storage.models import TokenKind

router = APIRouter(prefix="/api/v1")
_SIGN_IN_REFUSED: dict[int | str, dict[str, object]] = {
    401: {"description": "Wrong username or password (unknown and inactive accounts alike)."},
    429: {
        "description": "Too many attempts from this address, or failed ones for this "
        "username: wait `Retry-After` seconds."
    },
}


@router.post("/auth/token", response_model=TokenOut, tags=["auth"], responses=_SIGN_IN_REFUSED)
async def sign_in_for_token(body: TokenRequest, request: Request, auth: Auth) -> TokenOut:
    """Sign in with a password and get an API bearer token. Rate-limited per address;
    repeated failures make further attempts on the account wait, longer each time (up to
    a minute), but never lock it."""
    signed_in = await auth.sign_in(
        body.username,
        body.password,
        source=source_of(request),
        kind=TokenKind.API,
        label=body.label,
    )
    return TokenOut(
        access_token=signed_in.token,
        expires_at=signed_in.expires_at,
        user=MeOut.of(signed_in.principal),
    )


@router.get("/auth/me", response_model=MeOut, tags=["auth"])
async def me(who: SignedIn) -> MeOut:
    """Who the credential belongs to, their role and sites."""
    return MeOut.of(who)


@router.post(
    "/auth/tokens", response_model=TokenOut, status_code=status.HTTP_201_CREATED, tags=["auth"]
)
async def new_api_token(body: NewTokenIn, who: SignedIn, request: Request, auth: Auth) -> TokenOut:
    """Issue another API token for yourself (e.g. for a script), with its own lifetime."""
    issued = await auth.create_api_token(who, body.label, body.days, source_of(request))
    return TokenOut(
        access_token=issued.token, expires_at=issued.expires_at, user=MeOut.of(issued.principal)
    )


@router.post("/auth/sign-out", status_code=status.HTTP_204_NO_CONTENT, tags=["auth"])
async def sign_out(who: SignedIn, request: Request, auth: Auth) -> Response:
    """Revoke the credential this request came with."""
    token = request.headers.get("authorization", "").partition(" ")[2] or request.cookies.get(
        "vigil_session", ""
    )
    await auth.sign_out(token, who, source_of(request))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# --- people (admin) -------------------------------------------------------------------------


@router.get("/users", response_model=list[UserOut], tags=["users"])
async def list_users(_: Admin, auth: Auth) -> list[UserOut]:
    return [UserOut.of(user, sites) for user, sites in await auth.users()]


@router.post(
    "/users",
    response_model=UserOut,
    status_code=status.HTTP_201_CREATED,
    tags=["users"],
    responses={404: {"description": "Unknown site."}, 409: {"description": "Username taken."}},
)
async def create_user(body: UserIn, who: Admin, request: Request, auth: Auth) -> UserOut:
    user = await auth.create_user(
        who,
        username=body.username,
        display_name=body.display_name,
        role=body.role,
        password=body.password,
        site_ids=body.site_ids,
        all_sites=body.all_sites,
        source=source_of(request),
    )
    return UserOut.of(*await auth.user(user.id))


@router.get("/users/{user_id}", response_model=UserOut, tags=["users"], responses={404: {}})
async def get_user(user_id: UserId, _: Admin, auth: Auth) -> UserOut:
    return UserOut.of(*await auth.user(user_id))


@router.patch("/users/{user_id}", response_model=UserOut, tags=["users"], responses={404: {}})
async def change_user(
    user_id: UserId, body: UserPatch, who: Admin, request: Request, auth: Auth
) -> UserOut:
    """Change role, sites, name or password; deactivate (ends every sign-in); `unlock`
    ends the waits failed sign-ins put on the account."""
    change = UserChange(
        display_name=body.display_name,
        role=body.role,
        site_ids=body.site_ids,
        all_sites=body.all_sites,
        active=body.active,
        password=body.password,
        unlock=body.unlock,
    )
    await auth.change_user(who, user_id, change, source_of(request))
    return UserOut.of(*await auth.user(user_id))


@router.post(
    "/users/{user_id}/revoke-tokens",
    response_model=RevokedOut,
    tags=["users"],
    responses={404: {}},
)
async def revoke_user_tokens(
    user_id: UserId, who: Admin, request: Request, auth: Auth
) -> RevokedOut:
    """End every sign-in and API token of a user, at once."""
    return RevokedOut(revoked=await auth.revoke_tokens(who, user_id, source_of(request)))


# --- device credentials (admin) -------------------------------------------------------------


@router.get("/device-credentials", response_model=list[DeviceCredentialOut], tags=["devices"])
async def list_device_credentials(_: Admin, auth: Auth) -> list[DeviceCredentialOut]:
    return [DeviceCredentialOut.of(c, ident) for c, ident in await auth.device_credentials()]


@router.post(
    "/device-credentials",
    response_model=IssuedDeviceCredentialOut,
    status_code=status.HTTP_201_CREATED,
    tags=["devices"],
    responses={404: {"description": "Unknown device or site."}},
)
async def issue_device_credential(
    body: DeviceCredentialIn, who: Admin, request: Request, auth: Auth
) -> IssuedDeviceCredentialOut:
    """A credential for one device, or a gateway credential for every device at a site.
    The token is shown once."""
    issued = await auth.issue_device_credential(
        who,
        label=body.label,
        device_identifier=body.device_id,
        site_id=body.site_id,
        source=source_of(request),
    )
    out = DeviceCredentialOut.of(issued.credential, issued.device_identifier)
    return IssuedDeviceCredentialOut(**out.model_dump(), token=issued.token)


@router.delete(
    "/device-credentials/{credential_id}",
    response_model=DeviceCredentialOut,
    tags=["devices"],
    responses={404: {}},
)
async def revoke_device_credential(
    credential_id: CredentialId, who: Admin, request: Request, auth: Auth
) -> DeviceCredentialOut:
    """Revoke a device credential: its next batch, on any door, is refused."""
    credential, device = await auth.revoke_device_credential(who, credential_id, source_of(request))
    return DeviceCredentialOut.of(credential, device)


# --- audit trail (admin) --------------------------------------------------------------------


def audit_filters(
    since: MomentQuery = None,
    until: MomentQuery = None,
    actor: Annotated[str | None, Query(max_length=80)] = None,
    action: Annotated[str | None, Query(max_length=48)] = None,
    site_id: OptionalSiteQuery = None,
    limit: Annotated[int, Query(ge=1, le=100_000)] = 500,
    before_id: BeforeIdQuery = None,
) -> AuditQuery:
    """Which events: a time range, an actor, an action, a site; pages of `limit`, newest first."""
    return AuditQuery(since, until, actor, action, site_id, limit, before_id)


Filters = Annotated[AuditQuery, Depends(audit_filters)]


@router.get("/audit", response_model=list[AuditEventOut], tags=["audit"])
async def audit_events(_: Admin, audit: Audit, query: Filters) -> list[AuditEventOut]:
    """The audit trail, newest first."""
    return [AuditEventOut.of(event) for event in await audit.events(query)]


@router.get("/audit/export.csv", tags=["audit"], response_class=Response)
async def export_audit(who: Admin, request: Request, audit: Audit, query: Filters) -> Response:
    """The audit trail as CSV (newest first), for the clinic's records."""
    body = await audit.csv_rows(query)
    await audit.record(who, "audit_exported", source=source_of(request))
    return Response(
        body,
        media_type="text/csv",
        headers={"Content-Disposition": 'attachment; filename="vigil-audit.csv"'},
    )


def export_range(
    from_: Annotated[
        str | None,
        Query(
            alias="from",
            max_length=40,
            description="First day (YYYY-MM-DD, UTC) or time (ISO 8601) to include.",
        ),
    ] = None,
    to: Annotated[
        str | None,
        Query(
            max_length=40,
            description="Last day to include (YYYY-MM-DD), or the time (ISO 8601) to stop before.",
        ),
    ] = None,
) -> ExportRange:
    bounds: dict[str, datetime | None] = {}
    for name, text, end in (("from", from_, False), ("to", to, True)):
        try:
            bounds[name] = None if text is None else parse_bound(text, end=end)
        except ValueError:
            problem = "a date (YYYY-MM-DD) or an ISO 8601 time"
            raise InvalidRequest([FieldProblem(("query", name), problem)]) from None
    return ExportRange(bounds["from"], bounds["to"])


@router.get(
    "/audit/export",
    tags=["audit"],
    response_class=StreamingResponse,
    responses={200: {"content": {media: {} for media in EXPORT_MEDIA_TYPES.values()}}},
)
async def export_audit_range(
    who: Admin,
    request: Request,
    audit: Audit,
    span: Annotated[ExportRange, Depends(export_range)],
    format: ExportFormat = ExportFormat.CSV,
) -> StreamingResponse:
    """Every audit event in a date range, oldest first, as CSV or JSON lines, for the
    clinic's compliance records. Streamed: a year's trail is never held in memory. The
    export is itself recorded in the trail."""
    await audit.record(
        who,
        "audit_exported",
        source=source_of(request),
        detail={"format": format.value, **span.as_detail()},
    )
    return StreamingResponse(
        audit.export(span, format),
        media_type=EXPORT_MEDIA_TYPES[format],
        headers={"Content-Disposition": f'attachment; filename="vigil-audit.{format.value}"'},
    )
