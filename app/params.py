"""Bounded types for ids and times, shared by every route, body and door.

Ids are bounded to what every backend's INTEGER holds (PostgreSQL's is 32-bit), so an
absurd id is a 422 naming the field, never a database overflow. Times must carry a UTC
offset and fall, once converted to UTC, between the years 2 and 9998: Python's datetime
stops at years 1 and 9999, so a time at the edge (`0001-01-01T00:00:00+16:00`) cannot
even be converted to UTC, and one a day from the edge overflows as soon as a range is
widened by a day. The margin keeps every later conversion and widening in range.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import Path, Query
from pydantic import AwareDatetime, Field

from app.errors import FieldProblem, InvalidRequest

MAX_ID = 2**31 - 1
EARLIEST = datetime(2, 1, 1, tzinfo=UTC)
LATEST = datetime(9998, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)

# Ids in request bodies (a chair to bind, the sites of a user, …).
RowId = Annotated[int, Field(ge=1, le=MAX_ID)]
# Times in request bodies: aware, and within EARLIEST..LATEST once in UTC.
Moment = Annotated[AwareDatetime, Field(ge=EARLIEST, le=LATEST)]

SiteId = Annotated[int, Path(ge=1, le=MAX_ID)]
SessionId = Annotated[int, Path(ge=1, le=MAX_ID)]
ChairId = Annotated[int, Path(ge=1, le=MAX_ID)]
UserId = Annotated[int, Path(ge=1, le=MAX_ID)]
CredentialId = Annotated[int, Path(ge=1, le=MAX_ID)]
PatientId = Annotated[int, Path(ge=1, le=MAX_ID)]
AlarmId = Annotated[str, Path(min_length=1, max_length=64)]
OptionalSiteQuery = Annotated[int | None, Query(ge=1, le=MAX_ID)]
BeforeIdQuery = Annotated[
    int | None, Query(ge=1, le=2**63 - 1, description="Page: items older than this id.")
]
MomentQuery = Annotated[
    AwareDatetime | None,
    Query(ge=EARLIEST, le=LATEST, description="ISO 8601 time with a UTC offset."),
]


def check_moment(loc: tuple[str | int, ...], moment: datetime) -> datetime:
    """A time parsed by hand (not by a `Moment` field), held to the same bounds: refused
    with a 422 naming `loc` when it has no offset or lies outside EARLIEST..LATEST."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise InvalidRequest([FieldProblem(loc, "has no UTC offset (add Z or +hh:mm)")])
    # Aware comparisons go through timedelta arithmetic: they never overflow, even for a
    # time whose own conversion to UTC would.
    if not EARLIEST <= moment <= LATEST:
        raise InvalidRequest(
            [FieldProblem(loc, f"must lie between {EARLIEST.date()} and {LATEST.date()} UTC")]
        )
    return moment
