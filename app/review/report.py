"""The printable one-page session report: a static trace figure (matplotlib), the summary
figures and the alarm log, as HTML that prints on one A4 page and as a PDF (fpdf2)."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import matplotlib
import matplotlib.dates as mdates
from fpdf import FPDF
from jinja2 import Environment, select_autoescape
from matplotlib.figure import Figure

from contracts.review import AlarmLogEntry, SessionReview, SessionSummary, SessionTrace
from monitor.display import PRIORITY_COLOURS
from monitor.protocol import Priority

PHASE_COLOURS = {
    "checked_in": "#f2f2f2",
    "baseline": "#e6f0fa",
    "infusion": "#fbeee0",
    "recovery": "#e8f5e9",
}
ALARMS_ON_PAGE = 14  # one page: the rest are in the alarm log CSV
SECONDARY_DISPLAY = (
    "Vigil is a secondary display: the bedside monitor's own records and alarms are primary."
)
_FONT = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
_FONT_BOLD = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans-Bold.ttf"


def _clock(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%H:%M:%S") if moment else "—"


def _number(value: float | None, digits: int = 0) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f} s"


def trace_png(trace: SessionTrace, width_in: float = 10.0, height_in: float = 4.6) -> bytes:
    """The trace as a static PNG: HR/PR, SpO2, NIBP against time, phases shaded, alarms."""
    buffer = io.BytesIO()
    trace_figure(trace, width_in, height_in).savefig(buffer, format="png")
    return buffer.getvalue()


def trace_figure(trace: SessionTrace, width_in: float, height_in: float) -> Figure:
    """The report's figure: four rows on one time axis, the last one the alarms."""
    by_vital = {s.vital: s for s in trace.series}
    # A bare Figure, not pyplot: pyplot's global state is not safe across server threads.
    figure = Figure(figsize=(width_in, height_in), dpi=110)
    axes = figure.subplots(4, 1, sharex=True, height_ratios=[3, 2, 3, 1])
    heart, oxygen, pressure, alarms = axes
    for axis in axes:
        for span in trace.phases:
            axis.axvspan(span.start, span.end, color=PHASE_COLOURS.get(span.phase, "#fff"), lw=0)
        for event in trace.events:
            axis.axvline(event.at, color="#777", lw=0.5, ls=":")
        axis.tick_params(labelsize=7)
    for vital, colour in (("hr", "#2ca02c"), ("pr", "#17becf")):
        if vital in by_vital:
            heart.plot(
                by_vital[vital].times,
                by_vital[vital].values,
                lw=0.8,
                color=colour,
                label=vital.upper(),
            )
    heart.set_ylabel("/min", fontsize=7)
    if heart.get_legend_handles_labels()[0]:  # a session may have no such readings
        heart.legend(fontsize=6, loc="upper right")
    if "spo2" in by_vital:
        oxygen.plot(by_vital["spo2"].times, by_vital["spo2"].values, lw=0.8, color="#1f77b4")
    oxygen.axhline(90, color="#d62728", lw=0.5, ls="--")
    oxygen.set_ylabel("SpO2 %", fontsize=7)
    for vital, marker in (("nibp_sys", "v"), ("nibp_dia", "^"), ("nibp_mean", "o")):
        if vital in by_vital:
            pressure.plot(
                by_vital[vital].times,
                by_vital[vital].values,
                marker,
                ms=3,
                color="#9467bd",
                label=by_vital[vital].label,
            )
    pressure.set_ylabel("mmHg", fontsize=7)
    if pressure.get_legend_handles_labels()[0]:  # a session may have no such readings
        pressure.legend(fontsize=6, loc="upper right")
    for lane, alarm in enumerate(trace.alarms):
        alarms.plot(
            [alarm.start, alarm.end],
            [lane, lane],
            lw=3,
            solid_capstyle="butt",
            color=PRIORITY_COLOURS[Priority(alarm.priority)],
        )
    alarms.set_yticks([])
    alarms.set_ylabel("alarms", fontsize=7)
    alarms.set_ylim(-1, max(1, len(trace.alarms)))
    alarms.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M", tz=UTC))  # type: ignore[no-untyped-call]
    # A session with no record after its check-in still gets a readable (one-minute) axis.
    alarms.set_xlim(trace.start, max(trace.end, trace.start + timedelta(minutes=1)))
    figure.tight_layout(pad=0.4, h_pad=0.2)
    return figure


def summary_rows(summary: SessionSummary) -> list[tuple[str, str, str, str, str]]:
    """(vital, baseline, peak, time of peak, lowest) rows as printed."""
    digits = {"spo2": 0, "hr": 0, "pr": 0}
    return [
        (
            f"{v.label} ({v.unit})",
            _number(v.baseline, digits.get(v.vital, 0)),
            _number(v.peak),
            _clock(v.peak_at),
            _number(v.lowest),
        )
        for v in summary.vitals
    ]


def headline(summary: SessionSummary) -> list[tuple[str, str]]:
    counts = summary.alarm_counts
    return [
        ("Lowest SpO2", f"{_number(summary.lowest_spo2)} % at {_clock(summary.lowest_spo2_at)}"),
        ("Seconds SpO2 below 90 %", f"{summary.seconds_spo2_below_90:.0f}"),
        (
            "Alarms (low/medium/high/crisis)",
            f"{counts.get('low', 0)}/{counts.get('medium', 0)}/"
            f"{counts.get('high', 0)}/{counts.get('crisis', 0)}",
        ),
        ("Median time to acknowledge", _seconds(summary.median_ack_s)),
        ("Total dose", f"{_number(summary.total_dose_mg_per_kg, 2)} mg/kg"),
    ]


def alarm_rows(entries: list[AlarmLogEntry]) -> list[tuple[str, ...]]:
    return [
        (
            _clock(e.raised_at),
            e.priority,
            e.text,
            _clock(e.acknowledged_at),
            e.acknowledged_by or "—",
            _seconds(e.time_to_ack_s),
            _clock(e.cleared_at),
            {True: "yes", False: "no", None: "—"}[e.actionable],
        )
        for e in entries
    ]


ALARM_HEADER = ("raised", "priority", "alarm", "ack'd", "by", "to ack", "cleared", "actionable")

_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Vigil session {{ s.session_id }} report</title>
<style>
@page { size: A4; margin: 10mm; }
body { font: 9pt/1.3 "DejaVu Sans", Helvetica, Arial, sans-serif;
  margin: 0 auto; max-width: 190mm; color: #111; }
h1 { font-size: 13pt; margin: 0 0 2mm; }
p.meta { margin: 0 0 2mm; }
img.trace { width: 100%; }
table { border-collapse: collapse; width: 100%; margin-bottom: 2mm; }
th, td { border-bottom: 0.3pt solid #999; padding: 0.6mm 1.2mm; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.cols { display: flex; gap: 4mm; }
.cols > div { flex: 1; }
.notice { font-size: 7pt; color: #444; }
.priority-high, .priority-crisis { color: #b00; font-weight: bold; }
@media print { a { color: inherit; text-decoration: none; } }
</style></head>
<body>
<h1>Session {{ s.session_id }} — {{ s.patient_initials }} ({{ s.patient_pseudonym }})</h1>
<p class="meta">{{ s.site_name }}, {{ s.chair_name }} · {{ started }} → {{ ended }} UTC ·
{{ "%.0f"|format(s.duration_min) }} min · phase {{ s.phase }}</p>
<img class="trace" alt="Trace of HR, PR, SpO2 and NIBP with phases and alarms"
 src="data:image/png;base64,{{ png }}">
<div class="cols">
<div><table id="summary-figures">
<thead><tr><th>vital</th><th>baseline</th><th>peak</th><th>at</th><th>lowest</th></tr></thead>
<tbody>
{% for row in vitals %}<tr><td>{{ row[0] }}</td>
{% for cell in row[1:] %}<td class="num">{{ cell }}</td>{% endfor %}</tr>
{% endfor %}</tbody></table></div>
<div><table id="headline"><tbody>
{% for label, value in lines %}<tr><th>{{ label }}</th><td class="num">{{ value }}</td></tr>
{% endfor %}
{% for limit in limits %}<tr><th>Minutes {{ limit.condition }}</th>
<td class="num">{{ "%.1f"|format(limit.minutes) }}</td></tr>
{% endfor %}</tbody></table></div>
</div>
<table id="alarm-log">
<thead><tr>{% for h in alarm_header %}<th>{{ h }}</th>{% endfor %}</tr></thead><tbody>
{% for row in alarms %}<tr class="priority-{{ row[1] }}">
{% for cell in row %}<td>{{ cell }}</td>{% endfor %}</tr>
{% endfor %}</tbody></table>
{% if more %}<p>{{ more }} more alarms in the full alarm log (alarm-log.csv).</p>{% endif %}
{% if notes %}<p><b>Notes:</b>
{% for n in notes %}{{ n.text }} ({{ n.author }}){% if not loop.last %}; {% endif %}{% endfor %}
</p>{% endif %}
<p class="notice">{{ notice }} Generated {{ generated }} UTC. Times are UTC.</p>
</body></html>
"""
_ENVIRONMENT = Environment(autoescape=select_autoescape(default=True, default_for_string=True))


def _limits_worth_printing(summary: SessionSummary) -> list[object]:
    return [limit for limit in summary.beyond_limits if limit.minutes > 0]


def report_html(report: SessionReview, now: datetime) -> str:
    """The report as one self-contained HTML page (the plot is embedded as a PNG)."""
    s = report.summary
    return _ENVIRONMENT.from_string(_TEMPLATE).render(
        s=s,
        started=s.started_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M"),
        ended=s.ended_at.astimezone(UTC).strftime("%H:%M") if s.ended_at else "open",
        png=base64.b64encode(trace_png(report.trace)).decode("ascii"),
        vitals=summary_rows(s),
        lines=headline(s),
        limits=_limits_worth_printing(s),
        alarm_header=ALARM_HEADER,
        alarms=alarm_rows(report.alarm_log[:ALARMS_ON_PAGE]),
        more=max(0, len(report.alarm_log) - ALARMS_ON_PAGE),
        notes=s.notes,
        notice=SECONDARY_DISPLAY,
        generated=now.astimezone(UTC).strftime("%Y-%m-%d %H:%M"),
    )


def _table(
    pdf: FPDF, header: tuple[str, ...], rows: Sequence[tuple[str, ...]], widths: list[float]
) -> None:
    pdf.set_font("DejaVu", "B", 7)
    for text, width in zip(header, widths, strict=True):
        pdf.cell(width, 4, text, border="B")
    pdf.ln()
    pdf.set_font("DejaVu", "", 7)
    for row in rows:
        for text, width in zip(row, widths, strict=True):
            pdf.cell(width, 3.6, pdf_fit(pdf, text, width), border="B")
        pdf.ln()


def pdf_fit(pdf: FPDF, text: str, width: float) -> str:
    """Shorten text to fit a cell, with an ellipsis, so one page stays one page."""
    if pdf.get_string_width(text) <= width - 1:
        return text
    while text and pdf.get_string_width(text + "…") > width - 1:
        text = text[:-1]
    return text + "…"


def report_pdf(report: SessionReview, now: datetime) -> bytes:
    """The same report as a one-page A4 PDF."""
    s = report.summary
    pdf = FPDF(format="A4")
    pdf.set_auto_page_break(auto=False)
    pdf.set_margins(10, 10, 10)
    pdf.add_font("DejaVu", "", str(_FONT))
    pdf.add_font("DejaVu", "B", str(_FONT_BOLD))
    pdf.add_page()
    pdf.set_title(f"Vigil session {s.session_id} report")
    pdf.set_font("DejaVu", "B", 12)
    pdf.cell(0, 6, f"Session {s.session_id} — {s.patient_initials} ({s.patient_pseudonym})")
    pdf.ln()
    pdf.set_font("DejaVu", "", 8)
    ended = s.ended_at.astimezone(UTC).strftime("%H:%M") if s.ended_at else "open"
    pdf.cell(
        0,
        4,
        f"{s.site_name}, {s.chair_name} · {s.started_at.astimezone(UTC):%Y-%m-%d %H:%M}"
        f" → {ended} UTC · {s.duration_min:.0f} min · phase {s.phase}",
    )
    pdf.ln(5)
    pdf.image(io.BytesIO(trace_png(report.trace)), w=190)
    pdf.ln(1)
    top = pdf.get_y()
    _table(
        pdf, ("vital", "baseline", "peak", "at", "lowest"), summary_rows(s), [26, 16, 14, 17, 14]
    )
    left_bottom = pdf.get_y()
    pdf.set_xy(100, top)
    pdf.set_left_margin(100)
    limits = [
        (f"Minutes {b.condition}", f"{b.minutes:.1f}") for b in s.beyond_limits if b.minutes > 0
    ]
    _table(pdf, ("figure", "value"), [*headline(s), *limits], [55, 35])
    pdf.set_left_margin(10)
    pdf.set_xy(10, max(left_bottom, pdf.get_y()) + 2)
    _table(
        pdf,
        ALARM_HEADER,
        alarm_rows(report.alarm_log[:ALARMS_ON_PAGE]),
        [15, 14, 70, 15, 20, 14, 15, 17],
    )
    more = len(report.alarm_log) - ALARMS_ON_PAGE
    if more > 0:
        pdf.cell(0, 4, f"{more} more alarms in the full alarm log (alarm-log.csv).")
        pdf.ln()
    if s.notes:
        pdf.multi_cell(0, 3.6, "Notes: " + "; ".join(f"{n.text} ({n.author})" for n in s.notes[:6]))
    pdf.set_y(-14)
    pdf.set_font("DejaVu", "", 6)
    pdf.cell(0, 3, f"{SECONDARY_DISPLAY} Generated {now.astimezone(UTC):%Y-%m-%d %H:%M} UTC.")
    return bytes(pdf.output())
