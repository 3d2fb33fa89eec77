"""The metrics' own rules, on a real `VigilMetrics`: outcome classes, and the bounded memory
of published batches that device → screen latency is measured against."""

from __future__ import annotations

from datetime import UTC, datetime

from app.observability.metrics import PUBLISHED_KEPT, VigilMetrics, hl7_outcome, refusal_class


def test_answers_fall_in_the_documented_classes() -> None:
    assert [refusal_class(s) for s in (200, 201, 400, 401, 403, 404, 409, 413, 422)] == [
        "accepted",
        "accepted",
        "invalid",
        "credential",
        "credential",
        "unknown_device",
        "invalid",
        "invalid",
        "invalid",
    ]
    assert [refusal_class(s) for s in (429, 503, 500, 502)] == ["busy", "busy", "error", "error"]
    assert hl7_outcome("AA", None) == "accepted"
    assert hl7_outcome("AE", "204") == "unknown_device"  # HL7 table 0357: unknown key
    assert hl7_outcome("AE", "207") == "error"  # application internal error
    assert hl7_outcome("AR", "100") == "invalid"  # segment sequence (not a frame)
    assert hl7_outcome("AE", None) == "invalid"  # ingest refused a value


def test_published_batches_are_remembered_within_a_bound() -> None:
    metrics = VigilMetrics()
    received = datetime.now(UTC).timestamp()
    for seq in range(1, PUBLISHED_KEPT + 101):
        metrics.published(1, seq, received)
    metrics.sent(1, 1)  # forgotten: the oldest 100 went
    metrics.sent(1, 100)
    assert metrics.screen_latency.collect()[0].samples[-2].value == 0  # _count
    metrics.sent(1, PUBLISHED_KEPT + 100)
    metrics.sent(2, PUBLISHED_KEPT + 100)  # another site's seq: not this batch
    count, total = (s.value for s in metrics.screen_latency.collect()[0].samples[-2:])
    assert count == 1
    assert 0 <= total < 5
