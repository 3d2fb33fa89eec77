"""The simulators' commands: `vigil scenarios`, `vigil simulate` and `vigil replay`.

Simulated devices reach a running Vigil only through its public doors (HTTP, MLLP, MQTT),
with the URL and device credential given on the command line, exactly as real devices
would; nothing here imports the server or the clinical core. `vigil.cli` adds these
commands to the `vigil` command.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

if TYPE_CHECKING:
    from simulators.doors import Door
    from simulators.scenarios import Scenario
    from simulators.timeline import Run

# Added to `vigil` without a name of its own: its commands become `vigil simulate` etc.
simulator_cli = typer.Typer(no_args_is_help=True)
console = Console()
error_console = Console(stderr=True, soft_wrap=True)  # messages name files: never split them

# The device ids `vigil demo` registers (app.sites.demo.DEMO_DEVICE_PREFIX; a test pins
# that the two agree), so that `vigil simulate` feeds the demo clinic by default.
DEVICE_PREFIX = "demo-monitor-"

Url = Annotated[
    str, typer.Option(help="Base URL of the running Vigil server.", rich_help_panel="Server")
]
Wait = Annotated[
    float,
    typer.Option(
        help="Seconds to wait for the server to answer /healthz before giving up.",
        min=0,
        rich_help_panel="Server",
    ),
]
Speed = Annotated[
    float,
    typer.Option(
        help="Times faster than real time (1 to 1000). Above 1, device times keep their "
        "real spacing and the run is placed in the recent past so that it ends now "
        "(never ahead of the server's clock); a progress bar shows how far it has got.",
        min=1.0,
        max=1000.0,
    ),
]
DEFAULT_URL = "http://127.0.0.1:8000"
DeviceToken = Annotated[
    str | None,
    typer.Option(
        envvar="VIGIL_DEVICE_TOKEN",
        help="The devices' credential (vgd_…): a gateway credential for their site, from "
        "`vigil device-credential issue --site ID` (http and mqtt doors).",
        rich_help_panel="Server",
        show_default=False,
    ),
]


@simulator_cli.command("scenarios")
def list_scenarios(
    name: Annotated[
        str | None,
        typer.Argument(help="Show this scenario's timeline (a name, a+b, or a .toml file)."),
    ] = None,
) -> None:
    """List the simulation scenarios, or show one scenario's timeline.

    Use a name with `vigil simulate --scenario NAME`. Scenarios combine with `+`
    (`steady+probe-off`), and `--scenario` also takes a path to your own .toml file
    (format: docs/SIMULATION.md). Pictures of each: docs/scenarios/*.png.
    """
    from simulators.scenarios import available_scenarios

    if name is not None:
        _show_scenario(_load_scenario(name))
        return
    from rich.table import Table

    table = Table(box=None, show_edge=False, pad_edge=False)
    table.add_column("scenario", style="bold")
    table.add_column("length", justify="right")
    table.add_column("what happens")
    for known in available_scenarios():
        scenario = _load_scenario(known)
        table.add_row(known, _length(scenario), escape(scenario.description))
    console.print(table)
    console.print(
        "\nRun one:  vigil simulate --scenario NAME [--chairs N] [--speed S] [--seed N]"
        "\nDetails:  vigil scenarios NAME"
    )


@simulator_cli.command()
def simulate(
    chairs: Annotated[int, typer.Option(help="How many chairs to simulate.", min=1, max=500)] = 8,
    scenario: Annotated[
        str,
        typer.Option(
            help="What every chair goes through: a name from `vigil scenarios`, names joined "
            "with + (steady+probe-off), or a path to a .toml scenario file."
        ),
    ] = "steady",
    speed: Speed = 1.0,
    seed: Annotated[
        int | None,
        typer.Option(
            help="Seed for repeatable runs: chair k uses seed + k − 1. Unset: a random "
            "seed, printed so the run can be repeated."
        ),
    ] = None,
    duration: Annotated[
        float | None,
        typer.Option(
            help="Simulated seconds each chair runs. Default: the scenario's whole length; "
            "a longer run carries on past its end with the same patient.",
            min=1,
        ),
    ] = None,
    device_prefix: Annotated[
        str, typer.Option(help="Device ids are this prefix plus 01, 02, …")
    ] = DEVICE_PREFIX,
    url: Url = DEFAULT_URL,
    wait: Wait = 10.0,
    door: Annotated[
        str,
        typer.Option(
            help="How the devices reach Vigil: http (POST /api/v1/observations), mllp "
            "(HL7 v2 ORU^R01 over MLLP, one connection per device) or mqtt (JSON on "
            "vigil/v1/devices/{id}/observations). The server must run that adapter "
            "(VIGIL_ADAPTERS=mllp,mqtt)."
        ),
    ] = "http",
    mllp: Annotated[
        str, typer.Option(help="host:port of Vigil's MLLP listener, for --door mllp.")
    ] = "127.0.0.1:2575",
    mqtt: Annotated[
        str, typer.Option(help="host:port of the MQTT broker, for --door mqtt.")
    ] = "127.0.0.1:1883",
    token: DeviceToken = None,
) -> None:
    """Simulated chairs sending a scenario's vitals to a running Vigil through one of its doors.

    Each chair is a patient on a bedside monitor sending once a simulated second, exactly
    as a device would: over HTTP (the default), HL7 v2 over MLLP, or MQTT. The devices
    must be registered and bound to chairs (`vigil demo` registers demo-monitor-01…).
    Example:

        vigil simulate --chairs 12 --scenario hypertensive-responder --speed 10 --seed 7

    Exit status: 0 done; 1 the server refused a batch, could not be reached, or lost
    batches; 2 bad options or scenario file.
    """
    from simulators.fleet import ChairRun, fleet
    from simulators.timeline import TimelineError, timeline_start

    target = _door(door, url, mllp, mqtt, token)
    loaded = _load_scenario(scenario)
    if seed is None:
        seed = secrets.randbelow(1_000_000)
    plan = ChairRun(fleet(loaded, chairs, seed, device_prefix), duration)
    try:
        timeline_start(datetime.now(UTC), plan.span_s, speed)
    except TimelineError as error:
        _fail(f"{error} ({loaded.name!r} has no end of its own)", 2)
    length = _span(plan.span_s) if plan.span_s is not None else "until Ctrl-C"
    last = f"{chairs:02d}" if chairs > 1 else ""
    console.print(
        f"Simulating {chairs} chair{'s' if chairs > 1 else ''} on {loaded.name!r} "
        f"({length}, {speed:g}× real time) over {door} to "
        f"{url if door == 'http' else mllp if door == 'mllp' else mqtt}\n"
        f"  devices {device_prefix}01{'…' + last if last else ''}, seed {seed} "
        f"(repeat with --seed {seed})",
        highlight=False,
        soft_wrap=True,
        markup=False,
    )
    _play(plan, target, speed, wait, bar=speed > 1, label=loaded.name)


def _door(name: str, url: str, mllp: str, mqtt: str, token: str | None) -> Door:
    """The door named on the command line; a bad name or address exits 2 saying why."""
    from simulators.doors import HttpDoor, MllpDoor, MqttDoor

    if name == "http":
        return HttpDoor(url, token)
    if name not in ("mllp", "mqtt"):
        _fail(f"unknown door {name!r}: use http, mllp or mqtt", 2)
    address = mllp if name == "mllp" else mqtt
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        _fail(f"--{name} must be host:port, got {address!r}", 2)
    if name == "mllp":
        return MllpDoor(host, int(port))
    return MqttDoor(host, int(port), token=token)


@simulator_cli.command()
def replay(
    file: Annotated[
        Path,
        typer.Argument(
            help="A session CSV (columns time, vital, value, unit[, device_id][, quality]) "
            "or a Vital Recorder numeric CSV export.",
            show_default=False,
        ),
    ],
    speed: Speed = 1.0,
    device: Annotated[
        str | None,
        typer.Option(
            help="Send every sample as this device (the file may name one device at most). "
            "Required when the file has no device_id column."
        ),
    ] = None,
    url: Url = DEFAULT_URL,
    wait: Wait = 10.0,
    token: DeviceToken = None,
) -> None:
    """Feed a recorded session back into a running Vigil, its times shifted to now.

    Values, units and quality flags are sent as recorded, through the same ingest as
    a device; the spacing of the device times is kept exactly. At speed 1 the
    recording's first sample is stamped now; faster, the last one is, when the replay
    ends. Format: docs/SIMULATION.md. Example:

        vigil replay session.csv --device demo-monitor-02 --speed 20

    Exit status: 0 done; 1 the server refused a batch, could not be reached, or lost
    batches; 2 the file cannot be read (the message names the row and column).
    """
    from simulators.recording import RecordingError
    from simulators.replay import ReplayRun, read_recording

    try:
        plan = ReplayRun(read_recording(file), device)
    except RecordingError as error:
        _fail(str(error), 2)
    samples = len(plan.recording.samples)
    console.print(
        f"Replaying {file} ({samples} samples over {_span(plan.span_s)}, devices "
        f"{', '.join(plan.devices)}) at {speed:g}× against {url}",
        highlight=False,
        soft_wrap=True,
        markup=False,
    )
    from simulators.doors import HttpDoor

    _play(plan, HttpDoor(url, token), speed, wait, bar=True, label="replay")


def _play(plan: Run, url: str | Door, speed: float, wait: float, bar: bool, label: str) -> None:
    """Run a simulation or replay; print its summary; exit 1 when something went wrong."""
    from simulators import progress, sender

    stats = sender.SendStats()
    try:
        progress.play(console, url, plan, speed, stats, wait, bar, label)
    except sender.SimulationError as error:
        if stats.started:
            console.print(progress.summary(stats), highlight=False)
        _fail(str(error), 1)
    except KeyboardInterrupt:
        console.print(f"stopped: {progress.summary(stats)}", highlight=False)
        raise typer.Exit(0) from None
    console.print(progress.summary(stats), highlight=False)
    if stats.undelivered:
        _fail(f"{stats.undelivered} batches did not reach Vigil; the run is incomplete", 1)


def _load_scenario(spec: str) -> Scenario:
    from simulators.scenarios import ScenarioError, load_scenario

    try:
        return load_scenario(spec)
    except ScenarioError as error:
        _fail(str(error), 2)


def _show_scenario(scenario: Scenario) -> None:
    console.print(
        f"[bold]{escape(scenario.name)}[/] ({_length(scenario)}): {escape(scenario.description)}"
    )
    entries = sorted(
        [("infusion " + t.kind, t) for t in scenario.infusion]
        + [(t.kind.replace("_", " "), t) for t in scenario.events],
        key=lambda pair: pair[1].earliest_s,
    )
    for kind, entry in entries:
        low, high = entry.earliest_s / 60, entry.latest_s / 60
        when = f"{low:g}–{high:g}" if high > low else f"{low:g}"
        params = ", ".join(f"{key} {_value(value)}" for key, value in entry.params.items())
        console.print(f"  {when:>9} min  {kind}" + (f": {params}" if params else ""), markup=False)
    from simulators.scenario_schema import MONITOR

    if scenario.patient:
        patient = ", ".join(f"{key} {_value(value)}" for key, value in scenario.patient.items())
        console.print(f"  patient: {patient}", markup=False)
    changed = {k: v for k, v in scenario.monitor.items() if v != MONITOR[k].default}
    if changed:
        monitor = ", ".join(f"{key} {_value(value)}" for key, value in changed.items())
        console.print(f"  monitor: {monitor}", markup=False)
    console.print("  (ranges are drawn per run from the seed)", style="dim")


def _value(value: object) -> str:
    if isinstance(value, tuple):
        return f"[{value[0]:g}, {value[1]:g}]"  # as a scenario file writes a range
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _length(scenario: Scenario) -> str:
    return _span(scenario.duration_s) if scenario.duration_s is not None else "endless"


def _span(seconds: float) -> str:
    return f"{seconds:g} s" if seconds < 120 else f"{round(seconds / 60, 1):g} min"


def _fail(message: str, code: int) -> NoReturn:
    error_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    raise typer.Exit(code)
