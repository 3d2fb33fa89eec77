"""The review pages in headless Chromium: the list, and a session's trace with its alarm
spans, summary figures, alarm log, export links and annotation form."""

from __future__ import annotations

import io
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from playwright.sync_api import Page, expect
from pypdf import PdfReader

from simulators.chair import SimulatedChair
from tests.browser_kit import browser, page, sign_in
from tests.conftest import Clinic, LiveServer
from tests.test_review import KnownSession, api, create_known_session

__all__ = ["browser", "page"]  # fixtures, imported for pytest

pytestmark = [
    pytest.mark.browser,
    pytest.mark.parametrize("database_url", ["sqlite"], indirect=True),
]
TWO_HOURS_S = 7200


def open_review(page: Page, server: LiveServer, path: str, user: str = "clinician") -> None:
    """Sign in through the /login form, land on a review page and wait for its content."""
    sign_in(page, server, path, user)
    expect(page.locator(".review-page")).to_be_visible(timeout=15000)


def alarm_spans(page: Page) -> list[dict[str, Any]]:
    """The alarm spans plotly drew on the trace (named shapes of the figure's layout)."""
    spans: list[dict[str, Any]] = page.evaluate(
        """() => {
            const graph = document.querySelector('#review-trace .js-plotly-plot');
            return graph.layout.shapes
                .filter(s => (s.name || '').startsWith('alarm:'))
                .map(s => ({name: s.name, colour: s.fillcolor}));
        }"""
    )
    return spans


def test_the_list_links_to_a_session_page_with_its_trace_and_alarm_spans(
    page: Page, live_server: LiveServer, clinic: Clinic
) -> None:
    known: KnownSession = create_known_session(live_server, clinic)
    open_review(page, live_server, "/review")
    sessions = page.locator("#review-sessions tr")
    expect(sessions).to_have_count(5)  # header, 3 demo sessions, the known one
    page.locator("#review-high input").check()
    expect(sessions).to_have_count(2)
    expect(page.locator("#review-page-label")).to_have_text("page 1 of 1 · 1 sessions")
    page.locator(f'#review-sessions a[href="/review/sessions/{known.session_id}"]').click()

    expect(page.locator("#review-trace .main-svg").first).to_be_visible(timeout=15000)
    expect(page.locator("h1")).to_contain_text("R.V. (P-REVIEW)")
    # The alarms as spans coloured by priority, and drawn (one path per shape): SpO2's
    # tiers are one alarm (shown at its worst, high), and the SBP one.
    spans = alarm_spans(page)
    assert sorted(s["name"].split(":")[1] for s in spans) == ["high", "medium"]
    assert {s["colour"] for s in spans if ":high:" in s["name"]} == {"#f85149"}
    expect(page.locator("#review-trace .shapelayer path")).not_to_have_count(0)

    figures = page.locator("#review-figures")
    expect(figures).to_contain_text("seconds SpO2 below 90 %30")
    expect(figures).to_contain_text("0 / 1 / 1 / 0")
    expect(page.locator("#review-alarm-log")).to_contain_text("rn.lee")
    for label in ("CSV (replayable)", "HL7 v2", "FHIR", "report (PDF)"):
        expect(page.locator("#review-exports").get_by_text(label)).to_be_visible()
    csv_href = page.locator("#review-exports").get_by_text("CSV (replayable)").get_attribute("href")
    assert api(live_server, "GET", str(csv_href), auth=known.clinician).status_code == 200
    expect(page.locator("#review-course-table tr")).to_have_count(2)

    # A mark through the form lands in the alarm log, attributed to whoever is signed in:
    # the form asks for no name.
    expect(page.locator("#review-author")).to_have_count(0)
    page.locator("#review-alarm").click()
    page.get_by_role("option").filter(has_text="SpO2 88 ≤ 90").first.click()
    page.get_by_text("not actionable").click()
    page.locator("#review-add").click()
    expect(page.locator("#review-annotate-result")).to_contain_text("Added mark by clinician")
    expect(page.locator("#review-alarm-log")).to_contain_text("clinician")
    marks = api(
        live_server, "GET", f"/api/v1/review/sessions/{known.session_id}/annotations",
        auth=known.clinician,
    ).json()  # fmt: skip
    assert [(m["alarm_id"], m["actionable"], m["author"]) for m in marks] == [
        (known.high_alarm_id, False, "clinician")
    ]
    # Opening the page and marking are in the audit trail, as the signed-in clinician.
    trail = api(
        live_server, "GET", "/api/v1/audit", params={"actor": "clinician"},
        auth=clinic.auth("admin"),
    ).json()  # fmt: skip
    acts = {(e["action"], e["target_id"]) for e in trail}
    assert ("session_viewed", str(known.session_id)) in acts
    assert ("session_annotated", str(known.session_id)) in acts


def test_a_nurse_is_told_the_review_pages_are_not_for_her(
    page: Page, live_server: LiveServer, clinic: Clinic
) -> None:
    sign_in(page, live_server, "/review", "nurse")
    expect(page.locator(".refused")).to_contain_text("Not for you:", timeout=15000)
    expect(page.locator(".refused")).to_contain_text("clinician role")
    expect(page.locator(".review-page")).to_have_count(0)
    expect(page.locator("#review-sessions")).to_have_count(0)


def test_the_html_report_prints_on_one_a4_page(
    page: Page, live_server: LiveServer, clinic: Clinic
) -> None:
    known = create_known_session(live_server, clinic)
    # The report is an API route: the browser's sign-in cookie is what lets it in.
    sign_in(
        page, live_server, f"/api/v1/review/sessions/{known.session_id}/report.html", "clinician"
    )
    expect(page.locator("#summary-figures")).to_contain_text("SBP (mmHg)")
    printed = PdfReader(io.BytesIO(page.pdf(format="A4", print_background=True)))
    assert len(printed.pages) == 1
    assert "Seconds SpO2 below 90 %" in printed.pages[0].extract_text()


def post_simulated_session(server: LiveServer, clinic: Clinic, seconds: int) -> int:
    """Chair 3: a simulated patient with a desaturation, `seconds` long, ending now."""
    nurse = clinic.auth("nurse")
    chair = api(server, "GET", f"/api/v1/sites/{clinic.site_id}", auth=nurse).json()["chairs"][2]
    discharged = api(
        server, "POST", f"/api/v1/sessions/{chair['session']['id']}/events",
        json={"kind": "discharge"}, auth=nurse,
    )  # fmt: skip
    assert discharged.status_code == 201, discharged.text
    start = datetime.now(UTC) - timedelta(seconds=seconds)
    started = api(
        server, "POST", f"/api/v1/chairs/{chair['id']}/sessions",
        json={"patient": {"pseudonym": "P-LONG", "initials": "L.G."}, "at": start.isoformat()},
        auth=nurse,
    )  # fmt: skip
    assert started.status_code == 201, started.text
    session_id: int = started.json()["id"]
    simulated = SimulatedChair(
        "transient-desaturation", seed=8, start=start, device_id=clinic.device(3),
        duration_s=seconds,
    )  # fmt: skip
    batch: list[Any] = []
    for tick in simulated:
        body = tick.body
        if body is None:
            continue
        if len(batch) + len(body["observations"]) > 1000:
            send(server, clinic, batch)
            batch = []
        batch.extend(body["observations"])
    send(server, clinic, batch)
    return session_id


def send(server: LiveServer, clinic: Clinic, observations: list[Any]) -> None:
    response = api(
        server, "POST", "/api/v1/observations",
        json={"device_id": clinic.device(3), "observations": observations},
        auth=clinic.device_auth,
    )  # fmt: skip
    assert response.status_code == 201, response.text


def test_a_two_hour_session_page_loads_in_under_a_second(
    page: Page, live_server: LiveServer, clinic: Clinic
) -> None:
    session_id = post_simulated_session(live_server, clinic, TWO_HOURS_S)
    stored = api(
        live_server, "GET", f"/api/v1/review/sessions/{session_id}", auth=clinic.auth("clinician")
    ).json()
    assert stored["duration_min"] == pytest.approx(120, abs=1)
    path = f"/review/sessions/{session_id}"
    open_review(page, live_server, path)  # the first visit loads Dash's scripts
    timings = []
    for _ in range(3):
        began = time.monotonic()
        page.goto(f"{live_server.http_url}{path}")
        expect(page.locator("#review-trace .main-svg").first).to_be_visible(timeout=15000)
        expect(page.locator("#review-figures")).to_be_visible()
        timings.append(time.monotonic() - began)
    best = min(timings)
    print(f"2-hour session page, trace drawn: {', '.join(f'{t:.3f}' for t in timings)} s")
    assert best < 1.0
    points = page.evaluate(
        """() => document.querySelector('#review-trace .js-plotly-plot').data
                 .reduce((n, trace) => n + (trace.x ? trace.x.length : 0), 0)"""
    )
    assert points < 6 * 2000 + 200  # down-sampled: never the ~29 000 stored samples
