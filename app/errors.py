"""One error hierarchy for the whole server, mapped to HTTP answers in one place."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse


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


def install_error_handlers(app: FastAPI) -> None:
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

    app.add_exception_handler(VigilError, handle)
    app.add_exception_handler(RequestValidationError, handle_validation)
