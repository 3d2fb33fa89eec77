"""Benchmark: session review queries on a 2-hour session and on a site's month of sessions.

Builds a scratch database (SQLite file, and a scratch PostgreSQL database) with the real
schema: one site of 10 chairs with a month of sessions (3 a day per chair, with alarms, marks
and events), and one 2-hour session holding every sample a simulated monitor sends
(`SimulatedChair`, scenario transient-desaturation: HR, PR, SpO2, PI each second, NIBP every
5 min). Building is not timed. Each figure is the median of --repeat runs, and is set beside
a baseline measured in the same run on the same database: a bare SELECT of the same rows.

    .venv/bin/python bench/bench_review.py
    .venv/bin/python bench/bench_review.py --postgres-url postgresql+psycopg://postgres@127.0.0.1:5432/test
    .venv/bin/python bench/bench_review.py --no-postgres --repeat 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import plotly.io
from sqlalchemy import create_engine, insert, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from app.review import repository, service
from app.storage import migrate
from app.storage.db import Database
from app.storage.models import (
    Alarm,
    AnnotationKind,
    Chair,
    Device,
    EventKind,
    InfusionSession,
    Patient,
    ReviewAnnotation,
    Sample,
    SessionEvent,
    SessionPhase,
    Site,
)
from contracts.review import SessionListQuery
from dashboard.review.figure import trace_figure
from monitor.protocol import default_protocol
from monitor.vitals import SampleQuality
from simulators.chair import SimulatedChair

REPO = Path(__file__).resolve().parent.parent
MONTH_END = datetime(2026, 11, 1, tzinfo=UTC)
MONTH_START = MONTH_END - timedelta(days=30)
CHAIRS = 10
SESSIONS_PER_CHAIR_DAY = 3
TWO_HOURS_S = 7200
TRACE_POINTS = 2000
RULES = [("spo2_low_medium", "medium"), ("spo2_low_high", "high"), ("sbp_high_medium", "medium"),
         ("hr_high_medium", "medium"), ("spo2_no_value", "medium"), ("nibp_stale", "low"),
         ("sbp_high_high", "high"), ("spo2_desat", "crisis")]  # fmt: skip


@dataclass
class Built:
    site_id: int
    long_session_id: int
    long_samples: int
    month_sessions: int
    month_alarms: int


def build(url: str, seed: int = 3) -> Built:
    """The site's month of sessions and the fully sampled 2-hour session (not timed)."""
    migrate.upgrade(url, REPO / "alembic")
    rng = random.Random(seed)
    engine = create_engine(url)
    with Session(engine) as session:
        site = Site(name="Bench clinic", created_at=MONTH_START)
        session.add(site)
        session.flush()
        chairs = [Chair(site_id=site.id, name=f"Chair {i}", position=i) for i in range(1, 11)]
        session.add_all(chairs)
        session.flush()
        devices = [
            Device(identifier=f"bench-{c.id}", chair_id=c.id, created_at=MONTH_START)
            for c in chairs
        ]
        session.add_all(devices)
        patients = [Patient(pseudonym=f"B-{i:04d}", initials="B.B.") for i in range(300)]
        session.add_all(patients)
        session.flush()

        sessions: list[dict[str, Any]] = []
        for day in range(30):
            for chair in chairs:
                for slot in range(SESSIONS_PER_CHAIR_DAY):
                    start = MONTH_START + timedelta(days=day, hours=8 + 3 * slot)
                    sessions.append(
                        {
                            "chair_id": chair.id,
                            "patient_id": rng.choice(patients).id,
                            "phase": SessionPhase.DISCHARGED,
                            "started_at": start,
                            "ended_at": start + timedelta(minutes=rng.randint(90, 150)),
                        }
                    )
        session.execute(insert(InfusionSession), sessions)
        rows = session.execute(
            select(InfusionSession.id, InfusionSession.chair_id, InfusionSession.started_at)
        ).all()
        alarms: list[dict[str, Any]] = []
        events: list[dict[str, Any]] = []
        for session_id, chair_id, started in rows:
            for kind, minutes in ((EventKind.CHECK_IN, 0), (EventKind.BASELINE_START, 5),
                                  (EventKind.INFUSION_START, 20), (EventKind.INFUSION_STOP, 60),
                                  (EventKind.DISCHARGE, 90)):  # fmt: skip
                at = started + timedelta(minutes=minutes)
                events.append({"session_id": session_id, "kind": kind, "at": at,
                               "recorded_by": "rn.bench", "recorded_at": at})  # fmt: skip
            for number in range(rng.randint(2, 12)):
                rule_id, priority = rng.choice(RULES)
                raised = started + timedelta(seconds=rng.randint(0, 5400))
                acked = raised + timedelta(seconds=rng.expovariate(1 / 45))
                alarms.append(
                    {"id": f"{session_id}:{rule_id}:{number}", "session_id": session_id,
                     "chair_id": chair_id, "rule_id": rule_id, "kind": "physiological",
                     "priority": priority, "state": "cleared", "text": rule_id, "value": 1.0,
                     "limit_value": 1.0, "condition_active": False, "audio_paused": False,
                     "raised_at": raised,
                     "acknowledged_at": acked if rng.random() < 0.7 else None,
                     "acknowledged_by": "rn.bench", "cleared_at": acked,
                     "escalate_at": None, "protocol_version": "bench",
                     "alarm_group": rule_id}
                )  # fmt: skip
        session.execute(insert(SessionEvent), events)
        session.execute(insert(Alarm), alarms)
        marks = [
            {"session_id": a["session_id"], "kind": AnnotationKind.ALARM_MARK,
             "alarm_id": a["id"], "actionable": rng.random() < 0.2, "text": None,
             "author": "dr.bench", "at": MONTH_END}
            for a in alarms if rng.random() < 0.3
        ]  # fmt: skip
        session.execute(insert(ReviewAnnotation), marks)

        long_session_id, long_samples = add_recorded_session(
            session,
            chairs[0].id,
            devices[0].id,
            patients[0].id,
            MONTH_END - timedelta(hours=3),
            seed,
        )
        built = Built(site.id, long_session_id, long_samples, len(rows), len(alarms))
        session.commit()
    with engine.connect() as connection:
        # Fresh tables have no planner statistics; a running clinic's are kept by autovacuum
        # (PostgreSQL). Measure the steady state, not the first minute after a bulk load.
        connection.execute(text("ANALYZE"))
        connection.commit()
    engine.dispose()
    return built


def add_recorded_session(
    session: Session,
    chair_id: int,
    device_id: int,
    patient_id: int,
    start: datetime,
    seed: int,
    duration_s: int = TWO_HOURS_S,
) -> tuple[int, int]:
    """A discharged session of `duration_s` holding every sample a simulated monitor sends
    (scenario transient-desaturation: HR, PR, SpO2, PI each second, NIBP every 5 min), with
    its check-in, baseline, infusion and discharge events; its id and its sample count.
    Written straight through the storage models, in the caller's transaction."""
    long_session = InfusionSession(
        chair_id=chair_id, patient_id=patient_id, phase=SessionPhase.DISCHARGED,
        started_at=start, ended_at=start + timedelta(seconds=duration_s),
    )  # fmt: skip
    session.add(long_session)
    session.flush()
    for kind, minutes in ((EventKind.CHECK_IN, 0), (EventKind.BASELINE_START, 2),
                          (EventKind.INFUSION_START, 15), (EventKind.INFUSION_STOP, 55),
                          (EventKind.DISCHARGE, duration_s / 60)):  # fmt: skip
        at = start + timedelta(minutes=minutes)
        session.add(SessionEvent(session_id=long_session.id, kind=kind, at=at,
                                 recorded_by="rn.bench", recorded_at=at))  # fmt: skip
    samples: list[dict[str, Any]] = []
    for tick in SimulatedChair(
        "transient-desaturation", seed=seed, start=start, duration_s=duration_s
    ):
        body = tick.body
        if body is None:
            continue
        for item in body["observations"]:
            moment = datetime.fromisoformat(item["device_time"])
            samples.append(
                {"session_id": long_session.id, "device_id": device_id,
                 "chair_id": chair_id, "vital": item["vital"], "value": item["value"],
                 "unit": item["unit"], "device_time": moment,
                 "received_time": moment + timedelta(milliseconds=300),
                 "quality": int(SampleQuality.from_names(list(item.get("quality", []))))}
            )  # fmt: skip
    for begin in range(0, len(samples), 5000):
        session.execute(insert(Sample), samples[begin : begin + 5000])
    return long_session.id, len(samples)


def median_ms(work: Callable[[], object], repeat: int) -> float:
    work()  # warm: connection pool, statement caches
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        work()
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times)


def measure(url: str, built: Built, repeat: int) -> dict[str, float]:
    db = Database(url)
    protocol = default_protocol()
    long_id = built.long_session_id

    def with_session(fn: Callable[[Session], object]) -> Callable[[], object]:
        def run() -> object:
            with db.session() as session:
                return fn(session)

        return run

    bare_samples = (
        select(Sample.vital, Sample.device_time, Sample.value, Sample.quality)
        .where(Sample.session_id == long_id)
        .order_by(Sample.vital, Sample.device_time, Sample.id)
    )
    dialect = db.engine.dialect.name
    bare_epochs = (
        select(
            Sample.vital,
            repository.epoch_seconds(Sample.device_time, dialect),
            Sample.value,
            Sample.quality,
        )
        .where(Sample.session_id == long_id)
        .order_by(Sample.vital, Sample.device_time, Sample.id)
    )
    bare_alarms = (
        select(Alarm.rule_id, Alarm.priority, Alarm.raised_at, Alarm.acknowledged_at)
        .join(Chair, Alarm.chair_id == Chair.id)
        .where(Chair.site_id == built.site_id, Alarm.raised_at >= MONTH_START,
               Alarm.raised_at < MONTH_END)
    )  # fmt: skip

    def bare(statement: Any) -> Callable[[Session], object]:
        return lambda session: session.execute(statement).all()

    def page_figure(session: Session) -> object:
        review = service.review(session, long_id, protocol, TRACE_POINTS)
        return plotly.io.to_json(trace_figure(review.trace))

    listing = SessionListQuery(site_id=built.site_id, start=MONTH_START, end=MONTH_END,
                               high_alarm=True, page=1, page_size=50)  # fmt: skip
    figures = {
        "bare_select_2h_samples_ms": median_ms(with_session(bare(bare_samples)), repeat),
        "bare_select_2h_epochs_ms": median_ms(with_session(bare(bare_epochs)), repeat),
        "summary_2h_ms": median_ms(
            with_session(lambda s: service.summary(s, long_id, protocol)), repeat
        ),
        "trace_2h_ms": median_ms(
            with_session(lambda s: service.trace(s, long_id, protocol, TRACE_POINTS)), repeat
        ),
        "page_2h_review_and_figure_json_ms": median_ms(with_session(page_figure), repeat),
        "bare_select_month_alarms_ms": median_ms(with_session(bare(bare_alarms)), repeat),
        "site_figures_month_ms": median_ms(
            with_session(lambda s: service.site_review(s, built.site_id, MONTH_START, MONTH_END)),
            repeat,
        ),
        "session_list_month_high_alarm_ms": median_ms(
            with_session(lambda s: repository.list_sessions(s, listing)), repeat
        ),
    }
    db.close()
    # Against the statement the review itself runs (epoch seconds, no datetime per row), and
    # against reading the same rows the ordinary way (a datetime per row).
    same_rows = figures["bare_select_2h_epochs_ms"]
    figures["ratio_summary_2h_vs_bare_same_rows"] = figures["summary_2h_ms"] / same_rows
    figures["ratio_trace_2h_vs_bare_same_rows"] = figures["trace_2h_ms"] / same_rows
    figures["ratio_summary_2h_vs_bare_datetimes"] = (
        figures["summary_2h_ms"] / figures["bare_select_2h_samples_ms"]
    )
    figures["ratio_site_month_vs_bare"] = (
        figures["site_figures_month_ms"] / figures["bare_select_month_alarms_ms"]
    )
    return figures


@contextmanager
def scratch_postgres(admin_url: str) -> Iterator[str]:
    name = f"vigil_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def report(backend: str, built: Built, figures: dict[str, float]) -> None:
    print(f"\n{backend}: 2-hour session of {built.long_samples} samples; site month of "
          f"{built.month_sessions} sessions and {built.month_alarms} alarms")  # fmt: skip
    for name, value in figures.items():
        unit = "×" if name.startswith("ratio") else "ms"
        print(f"  {name:<40} {value:9.1f} {unit}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get(
            "VIGIL_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
        ),
        help="a server where a scratch database may be created",
    )
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    machine = platform.processor() or platform.machine()
    print(
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC · {platform.node()} · {os.cpu_count()} CPUs "
        f"· {machine} · Python {platform.python_version()}"
    )
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{folder}/bench.sqlite"
        built = build(url)
        results["sqlite"] = {"built": asdict(built), "figures": measure(url, built, args.repeat)}
        report("SQLite", built, results["sqlite"]["figures"])
    if not args.no_postgres:
        with scratch_postgres(args.postgres_url) as url:
            built = build(url)
            results["postgresql"] = {
                "built": asdict(built),
                "figures": measure(url, built, args.repeat),
            }
            report("PostgreSQL", built, results["postgresql"]["figures"])
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
