"""The nurse station's site directory lists chairs with one plain query."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import event

from app.errors import NotFoundError
from app.sites.directory import DatabaseSiteDirectory
from app.storage.db import Database
from tests.conftest import Clinic


def test_chairs_are_listed_in_display_order_by_one_query(clinic: Clinic) -> None:
    db = Database(clinic.url)
    statements: list[str] = []

    def note(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if not statement.lstrip().upper().startswith("BEGIN"):  # the read's own snapshot
            statements.append(statement)

    # The directory reads on the reader pool (app/storage/db.py), so listen there.
    event.listen(db.reader_engine, "before_cursor_execute", note)
    try:
        directory = DatabaseSiteDirectory(db)
        names = [chair.name for chair in directory.chairs(clinic.site_id)]
        assert names == [f"Chair {n}" for n in range(1, clinic.chairs + 1)]
        # One statement, on chairs alone: no sessions, devices, alarms or latest samples.
        assert len(statements) == 1, statements
        assert "samples" not in statements[0]
        assert "sessions" not in statements[0]
        with pytest.raises(NotFoundError):
            directory.chairs(4242)
    finally:
        event.remove(db.reader_engine, "before_cursor_execute", note)
        db.close()
