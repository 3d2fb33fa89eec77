"""The review pages' view of stored sessions: implements `contracts.review.ReviewSource`."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.orm import Session

from app.errors import InvalidRequest, NotFoundError
from app.review import repository, service
from app.storage.db import Database
from app.timeutil import utcnow
from contracts.review import (
    AlarmLogEntry,
    AnnotationRequest,
    AnnotationView,
    PatientSessionRow,
    ReviewNotFound,
    ReviewRefused,
    SessionListQuery,
    SessionPage,
    SessionReview,
    SessionSummary,
    SessionTrace,
    SiteOption,
)
from monitor.protocol import Protocol

T = TypeVar("T")


class DatabaseReviewSource:
    """Runs the review service in the dashboard's own thread (Dash callbacks are sync)."""

    def __init__(self, db: Database, protocol: Protocol) -> None:
        self._db = db
        self._protocol = protocol

    def _run(self, work: Callable[[Session], T], *, writes: bool = False) -> T:
        """`work` on a read-only session in this thread; one that `writes` goes through the
        database's writer, like every write."""
        try:
            if writes:
                return self._db.run_blocking(work)
            with self._db.read_session() as session:
                return work(session)
        except NotFoundError as exc:
            raise ReviewNotFound(exc.message) from exc
        except InvalidRequest as exc:
            problem = exc.problems[0]
            raise ReviewRefused(str(problem.loc[-1]), problem.msg) from exc

    def sites(self) -> list[SiteOption]:
        return self._run(repository.sites)

    def sessions(self, query: SessionListQuery) -> SessionPage:
        return self._run(lambda s: repository.list_sessions(s, query))

    def summary(self, session_id: int) -> SessionSummary:
        return self._run(lambda s: service.summary(s, session_id, self._protocol))

    def trace(self, session_id: int, max_points: int) -> SessionTrace:
        return self._run(lambda s: service.trace(s, session_id, self._protocol, max_points))

    def review(self, session_id: int, max_points: int) -> SessionReview:
        return self._run(lambda s: service.review(s, session_id, self._protocol, max_points))

    def patient_sessions(self, patient_id: int) -> list[PatientSessionRow]:
        return self._run(lambda s: service.patient_sessions(s, patient_id, self._protocol))

    def alarm_log(self, session_id: int) -> list[AlarmLogEntry]:
        return self._run(lambda s: service.alarm_log(s, session_id))

    def annotate(self, session_id: int, request: AnnotationRequest) -> AnnotationView:
        return self._run(lambda s: service.annotate(s, session_id, request, utcnow()), writes=True)
