"""Readiness (`GET /readyz`): is each thing Vigil depends on up, right now?

Liveness (`GET /healthz`) only says the process answers. Readiness checks, each on its own:

- `database`: a query that reads the schema, within a short timeout;
- `alarm_tick`: the alarm service's ticker turned within the last few seconds;
- `adapter:<name>`: each configured adapter's own link is up (the MLLP listener listening,
  the MQTT broker connected);
- whatever else is configured (a message bus, when there is one). Nothing that is not
  configured is reported.

Any check down makes the answer 503, and the body names each check and says why. The
reasons are short (an exception's class, a link state): the route is open to load
balancers, so it says nothing about hosts, patients or data.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from app.storage.db import Database


@dataclass(frozen=True, slots=True)
class Check:
    """One dependency's state: `ok`, and what was seen."""

    name: str
    ok: bool
    detail: str
    figures: dict[str, float] | None = None

    def body(self) -> dict[str, Any]:
        return {"ok": self.ok, "detail": self.detail, **(self.figures or {})}


def _read_schema(session: Session) -> object:
    # Reads a page of the database: `SELECT 1` alone never touches SQLite's file.
    return session.execute(text("SELECT version_num FROM alembic_version")).first()


async def check_database(db: Database, timeout_s: float) -> Check:
    """The database answers a query that reads its schema within `timeout_s`."""
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout_s):
            await db.run(_read_schema)
    except TimeoutError:
        return Check("database", False, f"no answer within {timeout_s:g} s")
    except Exception as exc:  # whatever the driver raises, the database is not usable
        return Check("database", False, f"{db.engine.dialect.name}: {type(exc).__name__}")
    elapsed_ms = round((time.perf_counter() - started) * 1000, 1)
    return Check("database", True, db.engine.dialect.name, {"ms": elapsed_ms})


def check_alarm_tick(age_s: float | None, max_age_s: float) -> Check:
    """The alarm ticker turned within `max_age_s` (`age_s` None: it never started)."""
    if age_s is None:
        return Check("alarm_tick", False, "the alarm ticker has not started")
    figures = {"age_s": round(age_s, 2)}
    if age_s > max_age_s:
        late = f"last turn {age_s:.1f} s ago (> {max_age_s:g} s)"
        return Check("alarm_tick", False, late, figures)
    return Check("alarm_tick", True, "ticking", figures)


def check_adapters(states: Iterable[tuple[str, str, str | None]]) -> list[Check]:
    """One check per configured adapter, from (name, link state, error or None)."""
    checks = []
    for name, state, error in states:
        ok = state == "connected"
        detail = state if ok or not error else f"{state}: {_short(error)}"
        checks.append(Check(f"adapter:{name}", ok, detail))
    return checks


def _short(error: str) -> str:
    """An adapter's error as its exception's class ("OSError: [Errno 111] ..." → OSError):
    the whole text may name hosts and ports."""
    head = error.split(":", 1)[0].strip()
    return head if head.isidentifier() else "error"


@dataclass(frozen=True)
class Readiness:
    """The checks `create_app` wires, run together."""

    db: Database
    database_timeout_s: float
    tick_age: Callable[[], float | None]
    max_tick_age_s: float
    adapters: Callable[[], Iterable[tuple[str, str, str | None]]]

    async def run(self) -> list[Check]:
        return [
            await check_database(self.db, self.database_timeout_s),
            check_alarm_tick(self.tick_age(), self.max_tick_age_s),
            *check_adapters(self.adapters()),
        ]


def readiness_body(checks: list[Check]) -> tuple[int, dict[str, Any]]:
    """The status code (200 or 503) and the JSON body naming each check."""
    down = [check.name for check in checks if not check.ok]
    body: dict[str, Any] = {
        "status": "not ready" if down else "ready",
        "down": down,
        "checks": {check.name: check.body() for check in checks},
    }
    return (503 if down else 200), body
