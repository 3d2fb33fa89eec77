"""Structured logs: one event per line, JSON by default, each with its request id and the
device id where one is known.

A log line says that something happened, to which request, device or route, and how long it
took. It never carries health data or patient identifiers: no vital values, no patient
pseudonyms or initials, no message bodies, no query strings (the review's search takes a
pseudonym there). The database keeps the records; the log is for the people who run Vigil.
"""

from __future__ import annotations

import logging
import logging.config
import re
import time
import uuid
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pythonjsonlogger.core import RESERVED_ATTRS, LogData
from pythonjsonlogger.json import JsonFormatter
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.timeutil import iso

LogFormat = Literal["json", "text"]

REQUEST_ID_HEADER = "x-request-id"
# A request id a caller (a proxy, a gateway) sends is kept if it looks like an id; anything
# else is replaced, so a header cannot smuggle text (or a line break) into the logs.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")
# Libraries that log every outgoing request at INFO: the demo's simulated chairs post through
# httpx in the server's own process, eight times a second. Kept at WARNING or above.
_QUIET_LOGGERS = ("httpx", "httpcore")
# Libraries whose DEBUG lines copy what goes over the wire: uvicorn's websocket protocol logs
# every frame (live vitals, patient initials) and every header (bearer tokens) to
# uvicorn.error, the form parser its fields. Never below INFO, whatever VIGIL_LOG_LEVEL says.
_WIRE_LOGGERS = ("uvicorn", "uvicorn.error", "websockets", "python_multipart", "multipart")

access_log = logging.getLogger("vigil.access")


@dataclass
class RequestContext:
    """What the log lines of one request or websocket share. Mutable, so a device id bound
    deep in a handler is seen by the access line the middleware writes afterwards."""

    request_id: str
    device_id: str | None = None


_current: ContextVar[RequestContext | None] = ContextVar("vigil_request", default=None)


def current_request_id() -> str | None:
    context = _current.get()
    return None if context is None else context.request_id


def bind_device_id(device_id: str) -> None:
    """Name the device the current request speaks for, in its log lines from now on."""
    context = _current.get()
    if context is not None:
        context.device_id = device_id


class RequestIdMiddleware:
    """Gives every HTTP request and websocket a request id (the caller's X-Request-ID when it
    sends a sane one, else a new one), answers with it in X-Request-ID, and puts it on every
    log line written while the request is handled. With `access_log`, writes one line per
    request: method, path, status, duration, ids.

    Plain ASGI, not Starlette's BaseHTTPMiddleware: the device door is called every second
    per chair, and this must cost it next to nothing.
    """

    def __init__(self, app: ASGIApp, *, access_log: bool = False) -> None:
        self._app = app
        self._access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            await self._app(scope, receive, send)
            return
        context = RequestContext(_incoming_request_id(scope) or uuid.uuid4().hex)
        token = _current.set(context)
        header = (REQUEST_ID_HEADER.encode(), context.request_id.encode())
        status = 0
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            message_type = message["type"]
            if message_type == "http.response.start" or message_type == "websocket.accept":
                status = message.get("status", 101)
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        try:
            await self._app(scope, receive, send_with_id)
        finally:
            if self._access_log:
                _log_access(scope, status or 500, time.perf_counter() - started)
            _current.reset(token)


def _incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            text = value.decode("latin-1")
            return text if _SANE_REQUEST_ID.fullmatch(text) else None
    return None


def _log_access(scope: Scope, status: int, seconds: float) -> None:
    method = scope.get("method", "WS")
    path = scope.get("path", "")  # never the query string
    access_log.info(
        "%s %s %s",
        method,
        path,
        status,
        extra={
            "method": method,
            "path": path,
            "status": status,
            "duration_ms": round(seconds * 1000, 2),
        },
    )


class ContextFilter(logging.Filter):
    """Puts the current request's ids on each record (unless the caller gave its own)."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = _current.get()
        if not hasattr(record, "request_id"):
            record.request_id = None if context is None else context.request_id
        if not hasattr(record, "device_id"):
            record.device_id = None if context is None else context.device_id
        return True


class JsonLineFormatter(JsonFormatter):
    """One JSON object per line: time (UTC), level, logger, message, the ids, then any
    `extra` fields the caller gave."""

    def __init__(self) -> None:
        super().__init__(
            reserved_attrs=[
                *RESERVED_ATTRS,
                "color_message",  # uvicorn's copy of the message with terminal colours
                "request_id",
                "device_id",
            ],
            json_ensure_ascii=False,
        )

    def add_fields(
        self, log_data: LogData, record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        log_data["time"] = iso(datetime.fromtimestamp(record.created, UTC))
        log_data["level"] = record.levelname
        log_data["logger"] = record.name
        super().add_fields(log_data, record, message_dict)
        for field in ("request_id", "device_id"):
            value = getattr(record, field, None)
            if value is not None:
                log_data[field] = value


class TextFormatter(logging.Formatter):
    """For a person at a terminal (the demo): time, level, logger, message, then the ids."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        ids = [
            f"{field}={value}"
            for field in ("request_id", "device_id")
            if (value := getattr(record, field, None)) is not None
        ]
        return f"{line} [{' '.join(ids)}]" if ids else line


def logging_config(level: str, log_format: LogFormat) -> dict[str, Any]:
    """The `logging.config.dictConfig` for the whole process, uvicorn's loggers included:
    one handler on the root logger (stderr), which every logger propagates to."""
    level = level.upper()
    number = logging.getLevelNamesMapping()[level]
    quiet = level if number >= logging.WARNING else "WARNING"
    wire = level if number >= logging.INFO else "INFO"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": ContextFilter}},
        "formatters": {
            "json": {"()": JsonLineFormatter},
            "text": {"()": TextFormatter},
        },
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": log_format,
                "filters": ["context"],
            }
        },
        "root": {"level": level, "handlers": ["stderr"]},
        "loggers": {
            # uvicorn's own handlers are replaced by the root's: its lines are events too.
            **{
                name: {"level": level, "handlers": [], "propagate": True}
                for name in ("uvicorn.access", "uvicorn.asgi")
            },
            **{name: {"level": wire, "handlers": [], "propagate": True} for name in _WIRE_LOGGERS},
            **{name: {"level": quiet} for name in _QUIET_LOGGERS},
        },
    }


def configure_logging(level: str, log_format: LogFormat) -> None:
    """Apply `logging_config`; start uvicorn with `log_config=None` afterwards, so it keeps it."""
    logging.config.dictConfig(logging_config(level, log_format))
