"""One error hierarchy for the whole server, mapped to HTTP answers in one place."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc

# What a refused client is told to wait when the database cannot be reached: long enough
# not to hammer it while it restarts, short enough that a device's backlog drains soon after.
DATABASE_RETRY_AFTER_S = 2


class VigilError(Exception):
    """Base of every error Vigil raises on purpose."""

    status_code = 500
    code = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def body(self) -> dict[str, object]:
        return {"detail": self.message, "code": self.code}

    def headers(self) -> dict[str, str]:
        return {}


class NotFoundError(VigilError):
    status_code = 404
    code = "not_found"


class ConflictError(VigilError):
    status_code = 409
    code = "conflict"


class NotAuthenticated(VigilError):
    """No valid credential came with the request."""

    status_code = 401
    code = "not_authenticated"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}


class Forbidden(VigilError):
    """A valid credential whose role or sites do not allow this."""

    status_code = 403
    code = "forbidden"


class TooManyRequests(VigilError):
    status_code = 429
    code = "too_many_requests"

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class DependencyUnavailable(VigilError):
    """Something Vigil needs (its database) cannot be reached just now: try again later."""

    status_code = 503
    code = "dependency_unavailable"

    def __init__(
        self, dependency: str, message: str, retry_after_s: int = DATABASE_RETRY_AFTER_S
    ) -> None:
        super().__init__(message)
        self.dependency = dependency
        self.retry_after_s = retry_after_s

    def body(self) -> dict[str, object]:
        return {**super().body(), "dependency": self.dependency}

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class Overloaded(VigilError):
    """Too much is already waiting (the sample writer's queue is full): nothing was taken,
    send it again after `retry_after_s`."""

    status_code = 503
    code = "overloaded"

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def body(self) -> dict[str, object]:
        return {**super().body(), "retry_after_s": self.retry_after_s}

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


DATABASE_UNREACHABLE = "Vigil cannot reach its database; nothing was stored. Try again shortly."

# PEP 249 names the errors "related to the database's operation and not necessarily under
# the control of the programmer" (connection refused or lost, server shutting down)
# OperationalError, and errors of the driver's own interface InterfaceError. Every driver
# has both under these names; SQLAlchemy wraps them under the same names.
_UNREACHABLE_NAMES = frozenset({"OperationalError", "InterfaceError"})
# ...but SQLite reports some mistakes in a statement or schema as OperationalError too.
# Those are bugs, not an outage: they stay 500s (and would never "come back").
_SQLITE_STATEMENT_ERRORS = ("no such table", "no such column", "syntax error", "has no column")


def database_unreachable(exc: BaseException) -> bool:
    """Whether `exc` says the database could not be reached or used, rather than that a
    statement was wrong: raw from a driver or wrapped by SQLAlchemy."""
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, sa_exc.TimeoutError):  # no pooled connection came free in time
        return True
    if not any(cls.__name__ in _UNREACHABLE_NAMES for cls in type(exc).__mro__):
        return False
    text = str(exc).lower()
    return not any(mistake in text for mistake in _SQLITE_STATEMENT_ERRORS)


@dataclass(frozen=True)
class FieldProblem:
    """One thing wrong with a request, located the way FastAPI locates its own 422s."""

    loc: tuple[str | int, ...]
    msg: str
    type: str = "value_error"


class InvalidRequest(VigilError):
    """A request whose structure is fine but whose content is not acceptable."""

    status_code = 422
    code = "invalid_request"

    def __init__(self, problems: Sequence[FieldProblem]) -> None:
        super().__init__("; ".join(f"{'.'.join(map(str, p.loc))}: {p.msg}" for p in problems))
        self.problems = list(problems)

    def body(self) -> dict[str, object]:
        return {
            "detail": [{"loc": list(p.loc), "msg": p.msg, "type": p.type} for p in self.problems],
            "code": self.code,
        }


def install_error_handlers(
    app: FastAPI,
    *,
    driver_error: type[Exception] | None = None,
    on_database_unreachable: Callable[[BaseException], None] | None = None,
) -> None:
    """Map Vigil's errors, FastAPI's 422s and database outages to answers.

    `driver_error` is the database driver's own base error (`sqlite3.Error`,
    `psycopg.Error`): code that talks to the driver directly (the sample writer) raises it
    unwrapped. A database that cannot be reached is a 503 with `Retry-After` and a JSON body
    naming the dependency, reported to `on_database_unreachable` (which logs once per
    change of state) instead of a traceback per request; any other database error is
    re-raised and stays the 500 it was.
    """

    async def handle(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, VigilError)
        return JSONResponse(exc.body(), status_code=exc.status_code, headers=exc.headers())

    async def handle_validation(_: Request, exc: Exception) -> JSONResponse:
        # FastAPI's default echoes each bad input back; a NaN cannot be encoded as JSON,
        # and echoing vitals back would copy health data into clients' logs.
        assert isinstance(exc, RequestValidationError)
        problems = [
            FieldProblem(tuple(error["loc"]), error["msg"], error["type"]) for error in exc.errors()
        ]
        return JSONResponse(InvalidRequest(problems).body(), status_code=422)

    async def handle_database(_: Request, exc: Exception) -> JSONResponse:
        if not database_unreachable(exc):
            raise exc
        if on_database_unreachable is not None:
            on_database_unreachable(exc)
        refused = DependencyUnavailable("database", DATABASE_UNREACHABLE)
        return JSONResponse(refused.body(), status_code=503, headers=refused.headers())

    app.add_exception_handler(VigilError, handle)
    app.add_exception_handler(RequestValidationError, handle_validation)
    app.add_exception_handler(sa_exc.DBAPIError, handle_database)
    app.add_exception_handler(sa_exc.TimeoutError, handle_database)
    if driver_error is not None:
        app.add_exception_handler(driver_error, handle_database)
