"""Filters on library loggers that would copy health data into the application log.

docs/SECURITY.md promises logs with acts and identifiers, never vital values or patient
pseudonyms. Vigil's own log lines keep to that; these libraries' do not:

- python-hl7 logs the raw field it could not unescape (an OBX-5, with its value) or a
  whole segment, and a traceback: every argument is withheld, the traceback reduced to
  the exception's type.
- SQLAlchemy's engine logger, which turns on when logging is set to INFO, logs bound
  parameters (vital values, pseudonyms): withheld; the SQL statements stay.
- Websocket frame lines at DEBUG (`< TEXT '{"vital": …}'`) from uvicorn and websockets:
  withheld.
- uvicorn's access log (`vigil serve --access-log`) writes the query string, where a
  review filter may carry a pseudonym: withheld; the path stays.

A filter on a logger sees the records made by that logger before any handler does, so
this holds whatever handlers the deployment configures.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

import hl7.containers  # type: ignore[import-untyped]
import hl7.util  # type: ignore[import-untyped]

WITHHELD = "<withheld>"

# A %-style conversion specifier ("%s", "%(name)r", "%5.2f"), or "%%".
_SPECIFIER = re.compile(r"%(?:\([^)]*\))?[#0 +\-]*(?:\*|\d+)?(?:\.(?:\*|\d+))?[diouxXeEfFgGcrsa%]")


def _without_values(template: str) -> str:
    return _SPECIFIER.sub(lambda m: "%" if m.group() == "%%" else WITHHELD, template)


class WithholdArguments(logging.Filter):
    """Every argument of the message withheld, and any traceback reduced to its type:
    for libraries whose messages interpolate the data they were handling."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.msg = _without_values(str(record.msg))
            record.args = None
        if record.exc_info and record.exc_info[0] is not None:
            record.msg = f"{record.msg} [{record.exc_info[0].__name__}; details withheld]"
            record.exc_info = None
            record.exc_text = None
        return True


class WithholdFrames(logging.Filter):
    """Websocket frame lines (`< %s`, `> %s`) withheld; the other lines kept."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and record.msg[:2] in ("< ", "> ") and record.args:
            record.msg = _without_values(record.msg)
            record.args = None
        return True


class WithholdQueryStrings(logging.Filter):
    """uvicorn's access line with the query string withheld (the path is kept)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str):
            path, mark, _ = args[2].partition("?")
            record.args = (args[0], args[1], path + (f"?{WITHHELD}" if mark else ""), *args[3:])
        elif isinstance(args, Mapping):  # a format this filter does not know: withhold all
            record.args = {key: WITHHELD for key in args}
        return True


def _loggers() -> list[tuple[logging.Logger, type[logging.Filter]]]:
    hl7_loggers: list[Any] = [hl7.util.logger, hl7.containers.logger]  # named by file path
    return [
        *((logger, WithholdArguments) for logger in hl7_loggers),
        (logging.getLogger("sqlalchemy.engine.Engine"), WithholdArguments),
        (logging.getLogger("uvicorn.error"), WithholdFrames),
        (logging.getLogger("websockets.server"), WithholdFrames),
        (logging.getLogger("websockets.client"), WithholdFrames),
        (logging.getLogger("uvicorn.access"), WithholdQueryStrings),
    ]


def install_log_filters() -> None:
    """Put the filters on their loggers, once per process (calling again changes nothing)."""
    for logger, kind in _loggers():
        if not any(isinstance(existing, kind) for existing in logger.filters):
            logger.addFilter(kind())
