"""Library loggers that would write health data into the application log are filtered
(app/observability/privacy.py); the MLLP test of the same sends malformed HL7 over a real socket."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from app.observability.privacy import WITHHELD, install_log_filters


def test_sql_parameters_stay_out_of_the_log_when_sqlalchemy_logs_at_info(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    install_log_filters()
    caplog.set_level(logging.INFO, logger="sqlalchemy.engine")
    engine = create_engine(f"sqlite:///{tmp_path / 'log.sqlite'}")
    try:
        with engine.connect() as connection:
            values = {"pseudonym": "P-77", "value": 83.7}
            connection.execute(text("SELECT :pseudonym, :value"), values)
    finally:
        engine.dispose()
    assert "SELECT ?, ?" in caplog.text, "statements are still logged"
    assert "P-77" not in caplog.text
    assert "83.7" not in caplog.text


def test_the_access_log_keeps_paths_but_not_query_strings(
    caplog: pytest.LogCaptureFixture,
) -> None:
    install_log_filters()
    install_log_filters()  # a second server in the same process adds nothing
    access = logging.getLogger("uvicorn.access")
    assert len(access.filters) == 1
    caplog.set_level(logging.INFO, logger="uvicorn.access")
    # The record uvicorn's HTTP protocols make for each request.
    line = '%s - "%s %s HTTP/%s" %d'
    access.info(line, "10.0.0.5:5123", "GET", "/api/v1/review/sessions?patient=P-77", "1.1", 200)
    access.info(line, "10.0.0.5:5123", "GET", "/api/v1/sessions/12", "1.1", 200)
    assert caplog.messages == [
        f'10.0.0.5:5123 - "GET /api/v1/review/sessions?{WITHHELD} HTTP/1.1" 200',
        '10.0.0.5:5123 - "GET /api/v1/sessions/12 HTTP/1.1" 200',
    ]


def test_websocket_frame_lines_are_withheld(caplog: pytest.LogCaptureFixture) -> None:
    install_log_filters()
    caplog.set_level(logging.DEBUG, logger="uvicorn.error")
    logger = logging.getLogger("uvicorn.error")
    logger.debug("< %s", 'TEXT \'{"vital":"spo2","value":83.7}\' [31 bytes]')
    logger.debug("%s - websocket connection closed", "10.0.0.5:5123")
    assert caplog.messages == [f"< {WITHHELD}", "10.0.0.5:5123 - websocket connection closed"]
