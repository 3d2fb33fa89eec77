"""Draw each scenario's traces to docs/scenarios/<name>.png, so a tester sees what it does.

    .venv/bin/pip install -e '.[docs]'          # matplotlib
    .venv/bin/python scripts/scenario_pictures.py [NAME ...] [--seed N] [--out DIR]

Each picture is one simulated chair (seed 1 unless told otherwise): what the monitor reports
(dots; flagged values in orange, nothing while it is silent) over the patient's true state
(thin lines), the ketamine effect-site concentration and infusion rate, and the monitor's
clock error. Shaded bands are the scenario's windows (probe off, motion, disconnect, …).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display needed

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.patches import Patch

from simulators.chair import ChairTick, SimulatedChair
from simulators.scenarios import available_scenarios, load_scenario

REPO = Path(__file__).resolve().parent.parent
START = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)
WINDOWS = {  # annotation → (label, colour) of the band it opens
    "probe_off": ("probe off", "tab:purple"),
    "motion": ("motion", "tab:orange"),
    "disconnect": ("device silent", "black"),
    "nibp_failures": ("NIBP failing", "tab:red"),
}
MOMENTS = {  # annotation → label of a vertical line
    "infusion_start": "infusion start",
    "infusion_complete": "infusion end",
    "vasovagal": "vasovagal",
    "desaturation": "desaturation",
}


@dataclass
class Trace:
    """Reported values of one vital: times (min), values, and whether the device flagged them."""

    minutes: list[float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    flagged: list[bool] = field(default_factory=list)

    def add(self, minute: float, value: float, flagged: bool) -> None:
        self.minutes.append(minute)
        self.values.append(value)
        self.flagged.append(flagged)


def reported(ticks: Sequence[ChairTick]) -> dict[str, Trace]:
    traces: dict[str, Trace] = {}
    for tick in ticks:
        if tick.body is None:
            continue
        for item in tick.body["observations"]:
            trace = traces.setdefault(item["vital"], Trace())
            trace.add(tick.elapsed_s / 60, item["value"], bool(item.get("quality")))
    return traces


def dots(axes: Axes, trace: Trace | None, colour: str, label: str, size: float = 2) -> None:
    if trace is None:
        return
    clean = [i for i, flagged in enumerate(trace.flagged) if not flagged]
    noisy = [i for i, flagged in enumerate(trace.flagged) if flagged]
    axes.scatter(
        [trace.minutes[i] for i in clean],
        [trace.values[i] for i in clean],
        s=size,
        color=colour,
        label=label,
        zorder=3,
    )
    if noisy:
        axes.scatter(
            [trace.minutes[i] for i in noisy],
            [trace.values[i] for i in noisy],
            s=size * 2,
            color="tab:orange",
            label=f"{label} (flagged)",
            zorder=4,
        )


def draw(name: str, seed: int, out: Path) -> Path:
    scenario = load_scenario(name)
    chair = SimulatedChair(scenario, seed=seed, start=START)
    ticks = list(chair)
    minutes = [t.elapsed_s / 60 for t in ticks]
    truth = [t.truth for t in ticks]
    traces = reported(ticks)

    figure, panels = plt.subplots(
        6,
        1,
        figsize=(11, 11),
        sharex=True,
        gridspec_kw={"height_ratios": [3, 3, 1.4, 3, 2, 1.2]},
    )
    hr, spo2, pi, bp, drug, clock = panels
    hr.plot(minutes, [v.hr for v in truth], color="0.6", lw=0.8, label="true HR")
    dots(hr, traces.get("hr"), "tab:green", "HR (ECG)")
    dots(hr, traces.get("pr"), "tab:olive", "pulse rate", size=1)
    hr.set_ylabel("/min")

    spo2.plot(minutes, [v.spo2 for v in truth], color="0.6", lw=0.8, label="true SpO2")
    dots(spo2, traces.get("spo2"), "tab:blue", "SpO2")
    spo2.set_ylabel("%")

    pi.plot(minutes, [v.pi for v in truth], color="0.6", lw=0.8, label="true PI")
    dots(pi, traces.get("pi"), "tab:cyan", "perfusion index", size=1)
    pi.set_ylabel("PI %")

    bp.plot(minutes, [v.sbp for v in truth], color="0.75", lw=0.8, label="true SBP / DBP")
    bp.plot(minutes, [v.dbp for v in truth], color="0.75", lw=0.8)
    for vital, marker, colour in (
        ("nibp_sys", "v", "tab:red"),
        ("nibp_mean", "o", "tab:pink"),
        ("nibp_dia", "^", "tab:brown"),
    ):
        trace = traces.get(vital)
        if trace:
            bp.scatter(
                trace.minutes,
                trace.values,
                marker=marker,
                color=colour,
                s=30,
                zorder=3,
                label=vital.replace("nibp_", "NIBP "),
            )
    failed = [t.elapsed_s / 60 for t in ticks if "nibp_failed" in t.annotations]
    if failed:
        low = min(v.dbp for v in truth) - 10
        bp.scatter(
            failed,
            [low] * len(failed),
            marker="x",
            color="tab:red",
            s=30,
            label="NIBP cycle failed",
        )
    bp.set_ylabel("mm[Hg]")

    drug.plot(
        minutes,
        [v.effect_site_ug_per_ml for v in truth],
        color="tab:purple",
        label="effect site (µg/mL)",
    )
    drug.set_ylabel("µg/mL")
    rate = drug.twinx()
    rate.fill_between(
        minutes,
        [v.infusion_rate_mg_per_kg_h for v in truth],
        step="post",
        color="tab:purple",
        alpha=0.12,
    )
    rate.set_ylabel("mg/kg/h")

    clock.plot(
        minutes, [(t.device_time - t.time).total_seconds() for t in ticks], color="0.3", lw=0.8
    )
    clock.set_ylabel("clock s")
    clock.set_xlabel("minutes from the start of the scenario")

    _mark(panels, ticks)
    for axes in panels:
        axes.grid(alpha=0.25)
    for axes, scale in ((hr, 3.0), (spo2, 3.0), (pi, 3.0), (bp, 0.8), (drug, 1.0)):
        axes.legend(loc="upper left", bbox_to_anchor=(1.07, 1.0), fontsize=7, markerscale=scale)
    figure.suptitle(f"{name}: {scenario.description}", fontsize=11, x=0.01, ha="left")
    figure.text(0.01, 0.955, f"one chair, seed {seed}", fontsize=8, color="0.3")
    bands = _bands(ticks)
    if bands:
        figure.legend(handles=bands, loc="upper right", fontsize=8, ncols=len(bands), frameon=False)
    figure.tight_layout(rect=(0, 0, 1, 0.955))
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.png"
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return path


def _mark(panels: Sequence[Axes], ticks: Sequence[ChairTick]) -> None:
    opened: dict[str, float] = {}
    for tick in ticks:
        minute = tick.elapsed_s / 60
        for note in tick.annotations:
            if note in WINDOWS:
                opened[note] = minute
            elif note.endswith("_end") and note[:-4] in opened:
                kind = note[:-4]
                begun = opened.pop(kind)
                for axes in panels:
                    axes.axvspan(begun, minute, color=WINDOWS[kind][1], alpha=0.12)
            elif note in MOMENTS:
                for axes in panels:
                    axes.axvline(minute, color="0.4", lw=0.7, ls="--")
                panels[0].annotate(
                    MOMENTS[note],
                    (minute, 1.01),
                    xycoords=("data", "axes fraction"),
                    fontsize=7,
                    va="bottom",
                    ha="center",
                    color="0.3",
                )


def _bands(ticks: Sequence[ChairTick]) -> list[Patch]:
    """Legend entries for the shaded windows this run has."""
    kinds = sorted({note for tick in ticks for note in tick.annotations if note in WINDOWS})
    return [Patch(color=WINDOWS[k][1], alpha=0.25, label=WINDOWS[k][0]) for k in kinds]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("names", nargs="*", help="scenarios to draw (default: all shipped)")
    parser.add_argument("--seed", type=int, default=1, help="the chair's seed (default 1)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "scenarios")
    args = parser.parse_args(argv)
    for name in args.names or available_scenarios():
        print(draw(name, args.seed, args.out))


if __name__ == "__main__":
    main()
