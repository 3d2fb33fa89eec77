"""Types for ids in paths and queries, shared by every route.

Ids are bounded to what every backend's INTEGER holds (PostgreSQL's is 32-bit), so an
absurd id is a 422 naming the parameter, never a database overflow.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query

MAX_ID = 2**31 - 1

SiteId = Annotated[int, Path(ge=1, le=MAX_ID)]
SessionId = Annotated[int, Path(ge=1, le=MAX_ID)]
ChairId = Annotated[int, Path(ge=1, le=MAX_ID)]
UserId = Annotated[int, Path(ge=1, le=MAX_ID)]
CredentialId = Annotated[int, Path(ge=1, le=MAX_ID)]
AlarmId = Annotated[str, Path(min_length=1, max_length=64)]
OptionalSiteQuery = Annotated[int | None, Query(ge=1, le=MAX_ID)]
BeforeIdQuery = Annotated[
    int | None, Query(ge=1, le=2**63 - 1, description="Page: items older than this id.")
]
