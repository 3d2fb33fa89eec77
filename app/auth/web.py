"""Browser sign-in: the /login page, sign-out, and the gate in front of the Dash pages.

The session token lives in an HttpOnly, SameSite=Strict cookie; a readable companion
cookie carries the CSRF value that the page echoes in a header on every write (the Dash
renderer does this for its callbacks, the live script for its fetches).
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from typing import Annotated
from urllib.parse import quote, urlencode, urlsplit

from fastapi import APIRouter, Form, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from app.auth.deps import CSRF_COOKIE, SESSION_COOKIE, get_auth, source_of
from app.auth.principal import Principal
from app.auth.service import AuthService, SignedIn
from app.auth.tokens import csrf_token_for, same_secret
from app.errors import NotAuthenticated, TooManyRequests
from app.storage.models import TokenKind

VIEWER_HEADER = "x-vigil-viewer"  # set only by the gate, for the Dash callbacks
OIDC_PATH = "/auth/oidc"  # single sign-on's routes (app.auth.oidc), mounted when configured
OIDC_LOGIN_PATH = f"{OIDC_PATH}/login"

router = APIRouter(include_in_schema=False)

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Vigil — sign in</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{{font-family:system-ui,sans-serif;background:#10161d;color:#e8eef4;display:grid;
place-items:center;min-height:100vh;margin:0}}
form{{background:#1b2530;padding:2rem 2.5rem;border-radius:8px;width:20rem}}
h1{{margin:0 0 1rem;font-size:1.6rem}} label{{display:block;margin:.8rem 0 .3rem}}
input{{width:100%;padding:.5rem;font-size:1rem;box-sizing:border-box}}
button{{margin-top:1.2rem;width:100%;padding:.6rem;font-size:1rem}}
.error{{background:#7a1f1f;padding:.5rem;border-radius:4px}}
.notice{{font-size:.8rem;color:#9fb0c0;margin-top:1rem}}
.sso{{display:block;margin-top:.8rem;padding:.6rem;text-align:center;border-radius:4px;
background:#2d4a66;color:#e8eef4;text-decoration:none}}
</style></head><body>
<form method="post" action="/login">
<h1>Vigil</h1>{error}
<label for="username">Username</label>
<input id="username" name="username" autocomplete="username" required autofocus>
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required>
<input type="hidden" name="next" value="{next}">
<button type="submit">Sign in</button>{sso}
<p class="notice">Vigil is a secondary display. The bedside monitors keep their own alarms.</p>
</form></body></html>"""


def safe_next(target: str | None) -> str:
    """Only a path on this server: never an open redirect to another site."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def sign_in_page(
    request: Request, error: str | None, next_path: str, status_code: int
) -> HTMLResponse:
    """The sign-in page, with `error` above the form; with a "Sign in with …" link when
    single sign-on is configured."""
    message = f'<p class="error" role="alert">{html.escape(error)}</p>' if error else ""
    next_path = safe_next(next_path)
    settings = request.app.state.settings
    sso = ""
    if settings.oidc_enabled:
        target = html.escape(f"{OIDC_LOGIN_PATH}?{urlencode({'next': next_path})}")
        name = html.escape(settings.oidc_provider_name)
        sso = f'<a class="sso" href="{target}">Sign in with {name}</a>'
    body = _PAGE.format(error=message, next=html.escape(next_path), sso=sso)
    return HTMLResponse(body, status_code=status_code, headers={"Cache-Control": "no-store"})


def set_session_cookies(response: Response, request: Request, signed_in: SignedIn) -> None:
    """The browser sign-in: the session token (HttpOnly) and its CSRF companion (readable),
    both SameSite=Strict, for as long as a shift."""
    max_age = int(request.app.state.settings.session_hours * 3600)
    secure = _secure(request)
    response.set_cookie(
        SESSION_COOKIE,
        signed_in.token,
        max_age=max_age,
        httponly=True,
        secure=secure,
        samesite="strict",
    )
    response.set_cookie(
        CSRF_COOKIE,
        csrf_token_for(signed_in.token),
        max_age=max_age,
        httponly=False,
        secure=secure,
        samesite="strict",
    )


def _secure(request: Request) -> bool:
    configured: bool | None = request.app.state.settings.cookie_secure
    return configured if configured is not None else request.url.scheme == "https"


def _same_origin(request: Request) -> bool:
    """A browser form post from another site (login CSRF) carries that site's Origin."""
    origin = request.headers.get("origin")
    if not origin or origin == "null":
        return True
    return urlsplit(origin).netloc == request.headers.get("host")


@router.get("/login")
async def login_page(request: Request, next: str = "/") -> HTMLResponse:
    return sign_in_page(request, None, next, status.HTTP_200_OK)


@router.post("/login")
async def login(
    request: Request,
    username: Annotated[str, Form(max_length=64)],
    password: Annotated[str, Form(max_length=200)],
    next: Annotated[str, Form(max_length=2000)] = "/",
) -> Response:
    if not _same_origin(request):
        return sign_in_page(request, "Sign in from Vigil's own page.", next, 403)
    auth = get_auth(request)
    try:
        signed_in = await auth.sign_in(
            username, password, source=source_of(request), kind=TokenKind.SESSION
        )
    except TooManyRequests as exc:
        wait = f"Too many attempts: wait {exc.retry_after_s} s."
        return sign_in_page(request, wait, next, exc.status_code)
    except NotAuthenticated as exc:
        return sign_in_page(request, exc.message.capitalize() + ".", next, exc.status_code)
    response = RedirectResponse(safe_next(next), status_code=status.HTTP_303_SEE_OTHER)
    set_session_cookies(response, request, signed_in)
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    auth = get_auth(request)
    token = request.cookies.get(SESSION_COOKIE, "")
    principal = await auth.authenticate(token, TokenKind.SESSION)
    if principal is not None:
        form = await request.form()
        sent = str(form.get("csrf", "")) or request.headers.get("X-CSRF-Token", "")
        if not sent or not same_secret(sent, csrf_token_for(token)):
            return Response("missing or wrong CSRF token", status_code=403)
        await auth.sign_out(token, principal, source_of(request))
    response = RedirectResponse("/login", status_code=status.HTTP_303_SEE_OTHER)
    response.delete_cookie(SESSION_COOKIE)
    response.delete_cookie(CSRF_COOKIE)
    return response


def viewer_header(principal: Principal) -> bytes:
    sites = None if principal.site_ids is None else sorted(principal.site_ids)
    return json.dumps(
        {
            "user": principal.username,
            "name": principal.display_name,
            "role": principal.role.value,
            "sites": sites,
        },
        separators=(",", ":"),
    ).encode()


class SignedInGate:
    """ASGI middleware in front of the Dash app: every page, asset and callback needs a
    live browser session; callbacks (POSTs) need the CSRF header too. Who is signed in
    reaches the callbacks in a header only this gate sets."""

    def __init__(self, app: ASGIApp, auth: Callable[[], AuthService]) -> None:
        self._app = app
        self._auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        request = Request(scope)
        token = request.cookies.get(SESSION_COOKIE)
        principal = await self._auth().authenticate(token, TokenKind.SESSION)
        if principal is None or token is None:
            await self._refuse(request, scope, receive, send)
            return
        if request.method not in {"GET", "HEAD", "OPTIONS"}:
            sent = request.headers.get("x-csrf-token", "")
            if not sent or not same_secret(sent, csrf_token_for(token)):
                await Response("missing or wrong X-CSRF-Token", status_code=403)(
                    scope, receive, send
                )
                return
        headers = [(k, v) for k, v in scope["headers"] if k.lower() != VIEWER_HEADER.encode()]
        headers.append((VIEWER_HEADER.encode(), viewer_header(principal)))
        await self._app({**scope, "headers": headers}, receive, send)

    @staticmethod
    async def _refuse(request: Request, scope: Scope, receive: Receive, send: Send) -> None:
        response: Response
        if request.method == "GET" and "text/html" in request.headers.get("accept", ""):
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            response = RedirectResponse(
                f"/login?next={quote(target)}", status_code=status.HTTP_303_SEE_OTHER
            )
        else:
            response = Response("sign in first", status_code=status.HTTP_401_UNAUTHORIZED)
        await response(scope, receive, send)
