"""The review pages: /review (the session list) and /review/sessions/{id} (trace, figures,
alarm log, exports, annotations). Everything comes from the injected `ReviewSource`."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, cast

from dash import Dash, Input, Output, State, ctx, dcc, html, no_update
from dash.dash_table.DataTable import DataTable

from contracts.review import (
    AlarmLogEntry,
    AnnotationRequest,
    ReviewNotFound,
    ReviewRefused,
    ReviewSource,
    SessionListQuery,
    SessionSummary,
)
from dashboard.review.figure import trace_figure
from monitor.display import HIGH_LEVEL_PRIORITIES, LEVEL_COLOURS, AlarmLevel
from monitor.protocol import PRIORITIES

SESSION_PATH = re.compile(r"^/review/sessions/(\d+)/?$")
PAGE_SIZE = 25
TRACE_POINTS = 2000  # per vital: two points per column of a 1000-pixel-wide plot


def is_review_path(pathname: str | None) -> bool:
    return (pathname or "").startswith("/review")


def _when(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M") if moment else "—"


def _clock(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%H:%M:%S") if moment else "—"


def _number(value: float | None, digits: int = 0) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def review_page(source: ReviewSource, pathname: str) -> html.Div:
    """The page for a /review… path; a viewer who may not see it is told so."""
    try:
        match = SESSION_PATH.match(pathname)
        if match:
            return session_page(source, int(match.group(1)))
        if pathname.rstrip("/") == "/review":
            return list_page(source)
    except PermissionError as refused:
        return html.Div(f"Not for you: {refused}.", className="empty refused")
    return html.Div("No such review page.", className="empty")


# --- the session list ----------------------------------------------------------------------


def list_page(source: ReviewSource) -> html.Div:
    sites = [{"label": s.name, "value": s.site_id} for s in source.sites()]
    return html.Div(
        className="review-page",
        children=[
            html.H1("Session review"),
            html.Div(
                className="review-filters",
                children=[
                    dcc.Dropdown(
                        id="review-site", options=sites, placeholder="all sites", clearable=True
                    ),
                    dcc.Input(id="review-chair", type="number", placeholder="chair id", min=1),
                    dcc.Input(
                        id="review-patient", type="text", placeholder="patient", debounce=True
                    ),
                    dcc.DatePickerSingle(id="review-from", placeholder="from", clearable=True),
                    dcc.DatePickerSingle(id="review-to", placeholder="to", clearable=True),
                    dcc.Checklist(
                        id="review-high",
                        options=[{"label": " had a high-priority alarm", "value": "high"}],
                        value=[],
                    ),
                ],
            ),
            html.Div(id="review-list"),
            html.Div(
                className="review-pager",
                children=[
                    html.Button("◀ newer", id="review-newer", n_clicks=0),
                    html.Span(id="review-page-label"),
                    html.Button("older ▶", id="review-older", n_clicks=0),
                ],
            ),
            dcc.Store(id="review-page", data=1),
        ],
    )


def _day(raw: str | None, *, next_day: bool = False) -> datetime | None:
    if not raw:
        return None
    moment = datetime.combine(date.fromisoformat(raw), time(), UTC)
    return moment + timedelta(days=1) if next_day else moment


def session_table(source: ReviewSource, query: SessionListQuery) -> tuple[html.Table, str, int]:
    """The page of sessions as a table, a "page x of y" label, and the page count."""
    page = source.sessions(query)
    pages = max(1, -(-page.total // page.page_size))
    header = html.Tr(
        [
            html.Th(h)
            for h in ("session", "started", "ended", "site", "chair", "patient", "alarms", "high")
        ]
    )
    rows = [
        html.Tr(
            className="high" if item.high_priority_alarms else "",
            children=[
                html.Td(
                    dcc.Link(f"#{item.session_id}", href=f"/review/sessions/{item.session_id}")
                ),
                html.Td(_when(item.started_at)),
                html.Td(_when(item.ended_at) if item.ended_at else item.phase),
                html.Td(item.site_name),
                html.Td(item.chair_name),
                html.Td(f"{item.patient_initials} ({item.patient_pseudonym})"),
                html.Td(str(item.alarms), className="num"),
                html.Td(str(item.high_priority_alarms), className="num"),
            ],
        )
        for item in page.items
    ]
    label = f"page {page.page} of {pages} · {page.total} sessions"
    return (
        html.Table(className="review-table", id="review-sessions", children=[header, *rows]),
        label,
        pages,
    )


# --- one session ---------------------------------------------------------------------------


def _export_links(session_id: int) -> html.Div:
    links = [
        ("CSV (replayable)", f"/api/v1/sessions/{session_id}/export/csv"),
        ("HL7 v2", f"/api/v1/sessions/{session_id}/export/hl7v2"),
        ("FHIR", f"/api/v1/sessions/{session_id}/export/fhir"),
        ("report (HTML)", f"/api/v1/review/sessions/{session_id}/report.html"),
        ("report (PDF)", f"/api/v1/review/sessions/{session_id}/report.pdf"),
        ("alarm log (CSV)", f"/api/v1/review/sessions/{session_id}/alarm-log.csv"),
    ]
    return html.Div(
        className="review-exports",
        id="review-exports",
        children=[html.A(text, href=href, target="_blank") for text, href in links],
    )


def summary_tables(summary: SessionSummary) -> html.Div:
    vitals = html.Table(
        className="review-table",
        id="review-vitals",
        children=[
            html.Tr([html.Th(h) for h in ("vital", "baseline", "peak", "at", "lowest", "at")]),
            *(
                html.Tr(
                    [
                        html.Td(f"{v.label} ({v.unit})"),
                        html.Td(_number(v.baseline), className="num"),
                        html.Td(_number(v.peak), className="num"),
                        html.Td(_clock(v.peak_at)),
                        html.Td(_number(v.lowest), className="num"),
                        html.Td(_clock(v.lowest_at)),
                    ]
                )
                for v in summary.vitals
            ),
        ],
    )
    counts = summary.alarm_counts
    figures = [
        ("lowest SpO2", f"{_number(summary.lowest_spo2)} % at {_clock(summary.lowest_spo2_at)}"),
        ("seconds SpO2 below 90 %", f"{summary.seconds_spo2_below_90:.0f}"),
        (f"alarms {' / '.join(PRIORITIES)}",
         " / ".join(str(counts.get(p, 0)) for p in PRIORITIES)),
        ("median time to acknowledge",
         "—" if summary.median_ack_s is None else f"{summary.median_ack_s:.0f} s"),
        ("total dose", f"{_number(summary.total_dose_mg_per_kg, 2)} mg/kg"),
        *((f"minutes {b.condition}", f"{b.minutes:.1f}") for b in summary.beyond_limits
          if b.minutes > 0),
    ]  # fmt: skip
    headline = html.Table(
        className="review-table",
        id="review-figures",
        children=[
            html.Tr([html.Th(label), html.Td(value, className="num")]) for label, value in figures
        ],
    )
    return html.Div(className="review-columns", children=[vitals, headline])


ALARM_COLUMNS = [
    ("raised_at", "raised"),
    ("priority", "priority"),
    ("text", "alarm"),
    ("value", "value"),
    ("acknowledged_at", "acknowledged"),
    ("acknowledged_by", "by"),
    ("time_to_ack_s", "to ack (s)"),
    ("cleared_at", "cleared"),
    ("actionable", "actionable"),
    ("marked_by", "marked by"),
]


def alarm_records(entries: list[AlarmLogEntry]) -> list[dict[str, Any]]:
    """Alarm log rows for the table; ISO times sort correctly as text."""
    return [
        {
            "alarm_id": e.alarm_id,
            "raised_at": e.raised_at.astimezone(UTC).isoformat(timespec="seconds"),
            "priority": e.priority,
            "text": e.text,
            "value": e.value,
            "acknowledged_at": e.acknowledged_at.astimezone(UTC).isoformat(timespec="seconds")
            if e.acknowledged_at
            else "",
            "acknowledged_by": e.acknowledged_by or "",
            "time_to_ack_s": None if e.time_to_ack_s is None else round(e.time_to_ack_s, 1),
            "cleared_at": e.cleared_at.astimezone(UTC).isoformat(timespec="seconds")
            if e.cleared_at
            else "",
            "actionable": {True: "yes", False: "no", None: ""}[e.actionable],
            "marked_by": e.marked_by or "",
        }
        for e in entries
    ]


def session_page(source: ReviewSource, session_id: int) -> html.Div:
    try:
        review = source.review(session_id, TRACE_POINTS)
    except ReviewNotFound:
        return html.Div(f"No session {session_id}.", className="empty")
    s = review.summary
    return html.Div(
        className="review-page",
        children=[
            dcc.Link("← all sessions", href="/review"),
            html.H1(f"Session {s.session_id} — {s.patient_initials} ({s.patient_pseudonym})"),
            html.P(
                f"{s.site_name}, {s.chair_name} · {_when(s.started_at)} → "
                f"{_when(s.ended_at) if s.ended_at else 'open'} UTC · "
                f"{s.duration_min:.0f} min · {s.phase}",
                className="review-meta",
            ),
            _export_links(session_id),
            dcc.Graph(
                id="review-trace",
                figure=trace_figure(review.trace),
                config={"scrollZoom": True, "displaylogo": False},
            ),
            html.H2("Summary figures"),
            summary_tables(s),
            html.H2("Alarm log"),
            DataTable(
                id="review-alarm-log",
                columns=[{"id": key, "name": name} for key, name in ALARM_COLUMNS],
                # Dash's stub leaves out None, which the table shows as an empty cell.
                data=cast(Any, alarm_records(review.alarm_log)),
                sort_action="native",
                export_format="csv",
                page_size=50,
                style_as_list_view=True,
                style_header={"backgroundColor": "#161b22", "color": "#e6edf3"},
                style_cell={"backgroundColor": "#0d1117", "color": "#e6edf3", "textAlign": "left"},
                style_data_conditional=[
                    {
                        "if": {
                            "filter_query": " || ".join(
                                f'{{priority}} = "{p}"' for p in HIGH_LEVEL_PRIORITIES
                            )
                        },
                        "color": LEVEL_COLOURS[AlarmLevel.HIGH],
                    },
                ],
            ),
            html.H2("Annotations"),
            html.Div(
                className="review-annotate",
                children=[
                    dcc.Textarea(id="review-note", placeholder="note"),
                    dcc.Dropdown(
                        id="review-alarm",
                        options=[
                            {"label": f"{_clock(e.raised_at)} {e.text}", "value": e.alarm_id}
                            for e in review.alarm_log
                        ],
                        placeholder="alarm to mark (optional)",
                    ),
                    dcc.RadioItems(
                        id="review-actionable",
                        options=[
                            {"label": " actionable", "value": "yes"},
                            {"label": " not actionable", "value": "no"},
                        ],
                    ),
                    html.Button("Add", id="review-add", n_clicks=0),
                    html.Div(id="review-annotate-result", role="status"),
                ],
            ),
            html.Ul(
                id="review-notes",
                children=[html.Li(f"{_when(n.at)} {n.author}: {n.text}") for n in s.notes],
            ),
            html.H2("This patient's sessions"),
            html.Div(id="review-course"),
            dcc.Store(id="review-session-id", data=session_id),
            dcc.Store(id="review-patient-id", data=s.patient_id),
        ],
    )


def course_table(source: ReviewSource, patient_id: int, current: int) -> html.Table:
    rows = source.patient_sessions(patient_id)
    header = html.Tr(
        [html.Th(h) for h in ("session", "started", "baseline BP", "peak BP", "peak HR",
                               "lowest SpO2", "alarms (high)")]
    )  # fmt: skip
    body = [
        html.Tr(
            className="current" if row.session_id == current else "",
            children=[
                html.Td(dcc.Link(f"#{row.session_id}", href=f"/review/sessions/{row.session_id}")),
                html.Td(_when(row.started_at)),
                html.Td(f"{_number(row.baseline_sys)}/{_number(row.baseline_dia)}"),
                html.Td(f"{_number(row.peak_sys)}/{_number(row.peak_dia)}"),
                html.Td(_number(row.peak_hr), className="num"),
                html.Td(_number(row.lowest_spo2), className="num"),
                html.Td(f"{row.alarms} ({row.high_priority_alarms})", className="num"),
            ],
        )
        for row in rows
    ]
    return html.Table(className="review-table", id="review-course-table", children=[header, *body])


def register_review_callbacks(dash_app: Dash, source: ReviewSource) -> None:
    """The review pages' callbacks; their components exist only on those pages."""

    @dash_app.callback(
        Output("review-page", "data"),
        Input("review-newer", "n_clicks"),
        Input("review-older", "n_clicks"),
        Input("review-site", "value"),
        Input("review-chair", "value"),
        Input("review-patient", "value"),
        Input("review-from", "date"),
        Input("review-to", "date"),
        Input("review-high", "value"),
        State("review-page", "data"),
        prevent_initial_call=True,
    )
    def turn_page(*args: Any) -> int:
        page = int(args[-1] or 1)
        if ctx.triggered_id == "review-newer":
            return max(1, page - 1)
        if ctx.triggered_id == "review-older":
            return page + 1
        return 1  # a changed filter starts again from the newest

    @dash_app.callback(
        Output("review-list", "children"),
        Output("review-page-label", "children"),
        Input("review-page", "data"),
        Input("review-site", "value"),
        Input("review-chair", "value"),
        Input("review-patient", "value"),
        Input("review-from", "date"),
        Input("review-to", "date"),
        Input("review-high", "value"),
    )
    def show_sessions(
        page: int | None,
        site_id: int | None,
        chair_id: int | None,
        patient: str | None,
        start: str | None,
        end: str | None,
        high: list[str] | None,
    ) -> tuple[Any, str]:
        query = SessionListQuery(
            site_id=site_id,
            chair_id=chair_id,
            patient=(patient or "").strip() or None,
            start=_day(start),
            end=_day(end, next_day=True),
            high_alarm=True if high else None,
            page=max(1, int(page or 1)),
            page_size=PAGE_SIZE,
        )
        table, label, _ = session_table(source, query)
        return table, label

    @dash_app.callback(
        Output("review-course", "children"),
        Input("review-patient-id", "data"),
        State("review-session-id", "data"),
    )
    def show_course(patient_id: int, session_id: int) -> html.Table:
        return course_table(source, patient_id, session_id)

    @dash_app.callback(
        Output("review-annotate-result", "children"),
        Output("review-alarm-log", "data"),
        Output("review-notes", "children"),
        Input("review-add", "n_clicks"),
        State("review-session-id", "data"),
        State("review-note", "value"),
        State("review-alarm", "value"),
        State("review-actionable", "value"),
        prevent_initial_call=True,
    )
    def add_annotation(
        _: int,
        session_id: int,
        note: str | None,
        alarm_id: str | None,
        actionable: str | None,
    ) -> tuple[Any, Any, Any]:
        # The author is whoever is signed in: the server's review source fills it in.
        request = AnnotationRequest(
            author="",
            note=note,
            alarm_id=alarm_id,
            actionable=None if actionable is None else actionable == "yes",
        )
        try:
            added = source.annotate(session_id, request)
        except (ReviewRefused, ReviewNotFound, PermissionError) as exc:
            return f"Not added: {exc}", no_update, no_update
        review = source.review(session_id, 20)
        notes = [html.Li(f"{_when(n.at)} {n.author}: {n.text}") for n in review.summary.notes]
        what = "note" if added.kind == "note" else "mark"
        return (
            f"Added {what} by {added.author} at {_when(added.at)}.",
            alarm_records(review.alarm_log),
            notes,
        )
