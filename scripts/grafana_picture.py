"""Draw the panels of docs/grafana/vigil.json from real scrapes of a running Vigil demo.

No Grafana can be run on the machine this was made on (Debian does not package it and its
own downloads are out of reach), so this is not a Grafana screenshot: it starts `vigil
demo` (8 simulated chairs posting over HTTP, the MLLP and MQTT adapters on), opens two
nurse screens on the live feed, sends one batch with a wrong credential every 10 s (so the
refusals panel shows something), scrapes GET /metrics every few seconds, then evaluates
each panel's own PromQL from the dashboard file over those scrapes and draws the panels
where the dashboard puts them. Rates are over 30 s windows (Grafana's $__rate_interval).

    .venv/bin/python scripts/grafana_picture.py [--seconds 120] [--out docs/grafana/vigil.png]

The PromQL evaluator understands what the dashboard uses and nothing more: selectors with
=, != and =~ matchers, rate() and increase() over a range, sum [by (...)], one division,
`> number` and histogram_quantile(); an expression outside that fails loudly (tests/test_grafana.py
runs every panel's expression through it against a real scrape).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
DASHBOARD = REPO / "docs" / "grafana" / "vigil.json"
RATE_WINDOW_S = 30.0
TOKEN = "grafana-picture"

Labels = tuple[tuple[str, str], ...]
Vector = dict[Labels, float]


# --- scrapes ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scrape:
    at: float  # seconds since the first scrape
    samples: dict[tuple[str, Labels], float]


def parse_exposition(text: str) -> dict[tuple[str, Labels], float]:
    """Prometheus text format → {(sample name, labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


# --- a small PromQL ------------------------------------------------------------------------

_TOKEN = re.compile(
    r'\s*(?:\d+[smh](?!\w)|\d+(?:\.\d+)?(?!\w)|[A-Za-z_:][\w:]*|"[^"]*"|!=|=~|[(){}\[\],=/>])'
)


def tokens(expr: str) -> list[str]:
    expr = expr.replace("$__rate_interval", f"{int(RATE_WINDOW_S)}s").strip()
    found, position = [], 0
    while position < len(expr):
        match = _TOKEN.match(expr, position)
        if match is None or match.end() == position:
            raise ValueError(f"cannot read {expr[position:]!r} in {expr!r}")
        found.append(match.group().strip())
        position = match.end()
    return found


@dataclass
class Selector:
    name: str
    matchers: list[tuple[str, str, str]]  # (label, op, value)
    range_s: float | None = None

    def matches(self, labels: Labels) -> bool:
        values = dict(labels)
        for label, op, wanted in self.matchers:
            have = values.get(label, "")
            if op == "=" and have != wanted:
                return False
            if op == "!=" and have == wanted:
                return False
            if op == "=~" and not re.fullmatch(wanted, have):
                return False
        return True


@dataclass
class Call:
    function: str  # rate, increase, histogram_quantile, sum
    args: list[Node]
    by: tuple[str, ...] = ()


@dataclass
class Divide:
    left: Node
    right: Node


@dataclass
class Above:
    """`vector > number`: only the samples above it."""

    vector: Node
    threshold: float


@dataclass
class Number:
    value: float


Node = Selector | Call | Divide | Above | Number


class _Parser:
    def __init__(self, expr: str) -> None:
        self.expr = expr
        self.tokens = tokens(expr)
        self.position = 0

    def peek(self) -> str | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def take(self, expected: str | None = None) -> str:
        token = self.peek()
        if token is None or (expected is not None and token != expected):
            raise ValueError(
                f"expected {expected or 'more'} at token {self.position} of {self.expr!r}"
            )
        self.position += 1
        return token

    def parse(self) -> Node:
        node = self.expression()
        if self.peek() is not None:
            raise ValueError(f"unexpected {self.peek()!r} in {self.expr!r}")
        return node

    def expression(self) -> Node:
        node = self.term()
        if self.peek() == "/":
            self.take("/")
            node = Divide(node, self.term())
        if self.peek() == ">":
            self.take(">")
            node = Above(node, float(self.take()))
        return node

    def term(self) -> Node:
        token = self.take()
        if re.fullmatch(r"\d+(\.\d+)?", token):
            return Number(float(token))
        if token in ("rate", "increase", "histogram_quantile"):
            self.take("(")
            args = [self.expression()]
            while self.peek() == ",":
                self.take(",")
                args.append(self.expression())
            self.take(")")
            return Call(token, args)
        if token == "sum":
            by: tuple[str, ...] = ()
            if self.peek() == "by":
                self.take("by")
                by = self.label_list()
            self.take("(")
            inner = self.expression()
            self.take(")")
            return Call("sum", [inner], by)
        if re.fullmatch(r"[A-Za-z_:][\w:]*", token):
            return self.selector(token)
        raise ValueError(f"unexpected {token!r} in {self.expr!r}")

    def label_list(self) -> tuple[str, ...]:
        self.take("(")
        labels = [self.take()]
        while self.peek() == ",":
            self.take(",")
            labels.append(self.take())
        self.take(")")
        return tuple(labels)

    def selector(self, name: str) -> Selector:
        selector = Selector(name, [])
        if self.peek() == "{":
            self.take("{")
            while self.peek() != "}":
                label, op, value = self.take(), self.take(), self.take()
                if op not in ("=", "!=", "=~") or not value.startswith('"'):
                    raise ValueError(f"bad matcher {label}{op}{value} in {self.expr!r}")
                selector.matchers.append((label, op, value.strip('"')))
                if self.peek() == ",":
                    self.take(",")
            self.take("}")
        if self.peek() == "[":
            self.take("[")
            duration = self.take()
            self.take("]")
            factor = {"s": 1, "m": 60, "h": 3600}[duration[-1]]
            selector.range_s = float(duration[:-1]) * factor
        return selector


def parse(expr: str) -> Node:
    return _Parser(expr).parse()


def metric_names(node: Node) -> set[str]:
    """Every metric (sample) name an expression reads."""
    if isinstance(node, Selector):
        return {node.name}
    if isinstance(node, Call):
        return set().union(*(metric_names(arg) for arg in node.args))
    if isinstance(node, Divide):
        return metric_names(node.left) | metric_names(node.right)
    if isinstance(node, Above):
        return metric_names(node.vector)
    return set()


def evaluate(node: Node, scrapes: list[Scrape], index: int) -> Vector | float:
    """`node` at the time of scrapes[index]."""
    if isinstance(node, Number):
        return node.value
    if isinstance(node, Selector):
        if node.range_s is not None:
            raise ValueError(f"a range selector outside rate() or increase(): {node.name}")
        return _instant(node, scrapes[index])
    if isinstance(node, Above):
        vector = evaluate(node.vector, scrapes, index)
        if not isinstance(vector, dict):
            raise ValueError("only vector > number is supported")
        return {labels: value for labels, value in vector.items() if value > node.threshold}
    if isinstance(node, Divide):
        left, right = evaluate(node.left, scrapes, index), evaluate(node.right, scrapes, index)
        if not isinstance(left, dict) or not isinstance(right, dict):
            raise ValueError("only vector / vector is supported")
        return {k: _divide(v, right[k]) for k, v in left.items() if k in right}
    if node.function in ("rate", "increase"):
        (selector,) = node.args
        if not isinstance(selector, Selector) or selector.range_s is None:
            raise ValueError(f"{node.function}() needs a range selector")
        return _change(selector, scrapes, index, per_second=node.function == "rate")
    if node.function == "sum":
        (inner,) = node.args
        vector = evaluate(inner, scrapes, index)
        if not isinstance(vector, dict):
            raise ValueError("sum() of a number")
        summed: Vector = {}
        for labels, value in vector.items():
            key = tuple((k, v) for k, v in labels if k in node.by)
            summed[key] = summed.get(key, 0.0) + value
        return summed
    if node.function == "histogram_quantile":
        quantile, inner = node.args
        q = evaluate(quantile, scrapes, index)
        buckets = evaluate(inner, scrapes, index)
        if not isinstance(q, float) or not isinstance(buckets, dict):
            raise ValueError("histogram_quantile(number, vector)")
        return _quantile(q, buckets)
    raise ValueError(f"unknown function {node.function}")


def _instant(selector: Selector, scrape: Scrape) -> Vector:
    return {
        labels: value
        for (name, labels), value in scrape.samples.items()
        if name == selector.name and selector.matches(labels)
    }


def _change(selector: Selector, scrapes: list[Scrape], index: int, *, per_second: bool) -> Vector:
    now = scrapes[index]
    assert selector.range_s is not None
    first = next((s for s in scrapes[: index + 1] if s.at >= now.at - selector.range_s - 1e-9), now)
    span = now.at - first.at
    if span <= 0:
        return {}
    earlier = _instant(selector, first)
    return {
        labels: (value - earlier.get(labels, 0.0)) / (span if per_second else 1.0)
        for labels, value in _instant(selector, now).items()
    }


def _divide(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else math.nan


def _quantile(q: float, buckets: Vector) -> Vector:
    """Prometheus' histogram_quantile: linear within the bucket the rank falls in."""
    groups: dict[Labels, list[tuple[float, float]]] = {}
    for labels, count in buckets.items():
        le = dict(labels).get("le")
        if le is None:
            continue
        rest = tuple((k, v) for k, v in labels if k != "le")
        groups.setdefault(rest, []).append((float(le), count))
    result: Vector = {}
    for labels, pairs in groups.items():
        pairs.sort()
        total = pairs[-1][1]
        if total <= 0:
            result[labels] = math.nan
            continue
        rank = q * total
        lower_bound, lower_count = 0.0, 0.0
        for upper_bound, count in pairs:
            if count >= rank:
                if math.isinf(upper_bound):
                    result[labels] = lower_bound
                else:
                    share = (
                        (rank - lower_count) / (count - lower_count) if count > lower_count else 0
                    )
                    result[labels] = lower_bound + (upper_bound - lower_bound) * share
                break
            lower_bound, lower_count = upper_bound, count
    return result


def legend(template: str, labels: Labels) -> str:
    values = dict(labels)
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: values.get(m.group(1), ""), template).strip()


def panel_series(
    panel: dict[str, Any], scrapes: list[Scrape]
) -> dict[str, list[tuple[float, float]]]:
    """Each legend → [(seconds, value)] of a panel's targets over the scrapes."""
    series: dict[str, list[tuple[float, float]]] = {}
    for target in panel["targets"]:
        node = parse(target["expr"])
        for index, scrape in enumerate(scrapes):
            result = evaluate(node, scrapes, index)
            vector = result if isinstance(result, dict) else {(): result}
            for labels, value in vector.items():
                name = legend(target.get("legendFormat", ""), labels) or target["expr"]
                series.setdefault(name, []).append((scrape.at, value))
    return series


# --- the demo ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.contextmanager
def running_demo() -> Iterator[tuple[str, dict[str, str]]]:
    """`vigil demo` in a scratch data directory, metrics and both adapters on; yields its
    base URL and the sign-ins it printed (username → password)."""
    data = Path(tempfile.mkdtemp(prefix="vigil-grafana-"))
    port, mllp_port = free_port(), free_port()
    env = {
        **os.environ,
        "VIGIL_DATA_DIR": str(data),
        "VIGIL_METRICS_TOKEN": TOKEN,
        "VIGIL_ADAPTERS": "mllp,mqtt",
        "VIGIL_MLLP_PORT": str(mllp_port),
        "VIGIL_MQTT_TOPIC_PREFIX": f"vigil-picture/{port}",
        "VIGIL_MQTT_CLIENT_ID": f"vigil-picture-{port}",
        "COLUMNS": "200",
    }
    vigil = shutil.which("vigil", path=str(Path(sys.executable).parent)) or "vigil"
    process = subprocess.Popen(
        [vigil, "demo", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    people: dict[str, str] = {}
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 60
        for line in process.stdout:
            found = re.search(r"user (\S+)\s+password (\S+)", line)
            if found:
                people[found.group(1)] = found.group(2)
            if "Stop with Ctrl-C" in line:
                break
            if time.monotonic() > deadline:
                raise SystemExit("the demo did not start within 60 s")
        if "nurse" not in people:
            raise SystemExit("the demo printed no sign-ins")
        threading.Thread(target=process.stdout.read, daemon=True).start()  # keep it drained
        yield f"http://127.0.0.1:{port}", people
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
        shutil.rmtree(data, ignore_errors=True)


async def screens(base: str, token: str, count: int, stop: asyncio.Event) -> None:
    """`count` nurse screens on site 1's live feed, reading until `stop`."""
    import websockets

    url = base.replace("http", "ws", 1) + "/ws/sites/1"

    async def one() -> None:
        async with websockets.connect(
            url, additional_headers={"Authorization": f"Bearer {token}"}
        ) as ws:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(ws.recv(), 1)

    await asyncio.gather(*(one() for _ in range(count)))


async def record(base: str, people: dict[str, str], seconds: float, every: float) -> list[Scrape]:
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        signed_in = await client.post(
            "/api/v1/auth/token", json={"username": "nurse", "password": people["nurse"]}
        )
        signed_in.raise_for_status()
        token = signed_in.json()["access_token"]
        stop = asyncio.Event()
        watching = asyncio.create_task(screens(base, token, 2, stop))
        scrapes: list[Scrape] = []
        started = time.monotonic()
        next_refusal = started
        while (now := time.monotonic()) - started <= seconds:
            if now >= next_refusal:  # a device with a wrong credential, every 10 s
                reading = {"vital": "hr", "value": 70, "unit": "/min",
                           "device_time": datetime.now(UTC).isoformat()}  # fmt: skip
                await client.post(
                    "/api/v1/observations",
                    json={"device_id": "demo-monitor-01", "observations": [reading]},
                    headers={"Authorization": "Bearer vgd_wrong"},
                )
                next_refusal += 10
            answer = await client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
            answer.raise_for_status()
            scrapes.append(Scrape(now - started, parse_exposition(answer.text)))
            await asyncio.sleep(max(0.0, every - (time.monotonic() - now)))
        stop.set()
        await watching
        return scrapes


# --- drawing ------------------------------------------------------------------------------

BACKGROUND, PANEL, TEXT, GRID = "#111217", "#181b1f", "#ccccdc", "#2c3235"
PALETTE = ["#73bf69", "#f2cc0c", "#5794f2", "#ff780a", "#f2495c", "#b877d9", "#8ab8ff", "#fade2a"]


def draw(dashboard: dict[str, Any], scrapes: list[Scrape], out: Path, caption: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = dashboard["panels"]
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    figure = plt.figure(figsize=(19.2, 2.6 + rows * 0.4), facecolor=BACKGROUND)
    figure.suptitle(
        f"{dashboard['title']}: panels of docs/grafana/vigil.json drawn from a scrape, "
        "not a Grafana screenshot",
        color=TEXT,
        fontsize=15,
        x=0.01,
        ha="left",
    )
    figure.text(0.01, 0.945, caption, color="#8e8e8e", fontsize=10, ha="left")
    grid = figure.add_gridspec(rows, 24, left=0.035, right=0.99, top=0.92, bottom=0.04,
                               hspace=9.0, wspace=2.2)  # fmt: skip
    for panel in panels:
        at = panel["gridPos"]
        axes = figure.add_subplot(
            grid[at["y"] : at["y"] + at["h"], at["x"] : at["x"] + at["w"]], facecolor=PANEL
        )
        axes.set_title(panel["title"], color=TEXT, fontsize=11, loc="left")
        for side in axes.spines.values():
            side.set_color(GRID)
        axes.tick_params(colors="#8e8e8e", labelsize=8)
        axes.grid(color=GRID, linewidth=0.6)
        series = panel_series(panel, scrapes)
        unit = panel["fieldConfig"]["defaults"].get("unit", "short")
        if panel["type"] == "stat":
            _stat(axes, panel, series, unit)
        else:
            _timeseries(axes, panel, series, unit)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=100, facecolor=BACKGROUND)
    plt.close(figure)


def _scale(unit: str) -> tuple[float, str]:
    return (1000.0, "ms") if unit == "s" else (1.0, "")


def _timeseries(axes: Any, panel: dict[str, Any], series: dict[str, list[tuple[float, float]]],
                unit: str) -> None:  # fmt: skip
    factor, suffix = _scale(unit)
    bars = panel["fieldConfig"]["defaults"].get("custom", {}).get("drawStyle") == "bars"
    for number, (name, points) in enumerate(sorted(series.items())):
        xs = [x for x, _ in points]
        ys = [y * factor for _, y in points]
        colour = PALETTE[number % len(PALETTE)]
        if bars:
            axes.bar(xs, ys, width=3, color=colour, label=name, alpha=0.85)
        else:
            axes.plot(xs, ys, color=colour, linewidth=1.8, label=name)
    if not series:
        axes.text(0.5, 0.5, "No data", color="#8e8e8e", ha="center", va="center",
                  transform=axes.transAxes)  # fmt: skip
    limits = panel["fieldConfig"]["defaults"]
    if "min" in limits and "max" in limits:
        axes.set_ylim(limits["min"] - 0.05, limits["max"] + 0.05)
    if suffix:
        axes.set_ylabel(suffix, color="#8e8e8e", fontsize=8)
    if series:
        axes.legend(loc="upper left", fontsize=7, facecolor=PANEL, edgecolor=GRID,
                    labelcolor=TEXT, ncol=2)  # fmt: skip


def _stat(axes: Any, panel: dict[str, Any], series: dict[str, list[tuple[float, float]]],
          unit: str) -> None:  # fmt: skip
    defaults = panel["fieldConfig"]["defaults"]
    ((_, points),) = series.items()
    last = points[-1][1]
    colour = "green"
    for step in defaults["thresholds"]["steps"]:
        if step["value"] is None or last >= step["value"]:
            colour = step["color"]
    shown = f"{last:.2f} s" if unit == "s" else f"{last:g}"
    for mapping in defaults.get("mappings", []):
        shown = mapping["options"].get(f"{last:g}", {}).get("text", shown)
    axes.set_facecolor({"green": "#1a7f37", "orange": "#b35c00", "red": "#a4161a"}[colour])
    axes.text(0.5, 0.55, shown, color="white", fontsize=34, ha="center", va="center",
              transform=axes.transAxes, weight="bold")  # fmt: skip
    twin = axes.twinx()
    twin.plot([x for x, _ in points], [y for _, y in points], color="white", alpha=0.35)
    twin.set_axis_off()
    axes.set_xticks([])
    axes.set_yticks([])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--every", type=float, default=5.0, help="seconds between scrapes")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "grafana" / "vigil.png")
    arguments = parser.parse_args(argv)
    dashboard = json.loads(DASHBOARD.read_text())
    with running_demo() as (base, people):
        scrapes = asyncio.run(record(base, people, arguments.seconds, arguments.every))
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    caption = (
        f"vigil demo (8 simulated chairs over HTTP, MLLP and MQTT adapters on, 2 nurse "
        f"screens, a wrong credential every 10 s), {len(scrapes)} scrapes of GET /metrics "
        f"every {arguments.every:g} s over {arguments.seconds:g} s, {when}; rates over "
        f"{RATE_WINDOW_S:g} s; x axes: seconds into the scrape"
    )
    draw(dashboard, scrapes, arguments.out, caption)
    print(f"wrote {arguments.out} from {len(scrapes)} scrapes")


if __name__ == "__main__":
    main()
