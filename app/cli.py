"""The `vigil` command."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
import uvicorn
from rich.console import Console
from rich.markup import escape

from app.settings import Settings
from app.sites.demo import DEMO_DEVICE_PREFIX, seed_demo
from app.storage import migrate
from app.storage.db import Database
from app.storage.models import Role
from app.timeutil import utcnow

if TYPE_CHECKING:
    from app.auth.service import AuthService
    from simulators.doors import Door
    from simulators.fleet import ChairPlan
    from simulators.scenarios import Scenario
    from simulators.timeline import Run

cli = typer.Typer(
    name="vigil",
    help="Vigil: real-time vitals monitoring for IV infusion clinics.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",  # paragraphs reflow to the terminal; examples stay verbatim
)
db_cli = typer.Typer(help="Database schema management.", no_args_is_help=True)
cli.add_typer(db_cli, name="db")
user_cli = typer.Typer(help="People who may sign in, and their roles.", no_args_is_help=True)
cli.add_typer(user_cli, name="user")
credential_cli = typer.Typer(help="Device and gateway ingest credentials.", no_args_is_help=True)
cli.add_typer(credential_cli, name="device-credential")
console = Console()
error_console = Console(stderr=True, soft_wrap=True)  # messages name files: never split them

Host = Annotated[str, typer.Option(help="Address to listen on.")]
Port = Annotated[int, typer.Option(help="Port to listen on.", min=1, max=65535)]


def _upgrade(settings: Settings) -> None:
    migrate.upgrade(settings.resolved_database_url, settings.migrations_dir)


@db_cli.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Create or migrate the schema (SQLite by default, VIGIL_DATABASE_URL otherwise)."""
    settings = Settings()
    migrate.upgrade(settings.resolved_database_url, settings.migrations_dir, revision)
    current = migrate.current_revision(settings.resolved_database_url)
    console.print(f"database at revision [bold]{current}[/]: {_safe_url(settings)}")


@cli.command()
def serve(
    host: Host = "127.0.0.1",
    port: Port = 8000,
    upgrade: Annotated[bool, typer.Option(help="Migrate the schema before starting.")] = True,
    access_log: Annotated[
        bool, typer.Option(help="Log every HTTP request (costs ~10 % of a core at 300 chairs).")
    ] = False,
) -> None:
    """Run the Vigil server: API, websockets and the nurse station."""
    from app.main import create_app

    settings = Settings()
    if upgrade:
        _upgrade(settings)
    console.print(f"Vigil on http://{host}:{port}/ (database: {_safe_url(settings)})")
    app = create_app(settings)
    _freeze_startup_objects()
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=access_log)


def _freeze_startup_objects() -> None:
    """Exempt what start-up built (modules, the Dash layout, SQLAlchemy's metadata: some
    230k objects) from the cyclic garbage collector. A full collection otherwise walks them
    all, stalling the event loop, and with it every live feed and ingest, for about 100 ms
    (measured on the 2-core test machine); afterwards it walks only what the server made
    since. Objects are still freed by reference counting as before."""
    gc.collect()
    gc.freeze()


@cli.command()
def demo(
    host: Host = "127.0.0.1",
    port: Port = 8000,
    chairs: Annotated[int, typer.Option(help="Simulated chairs.", min=1, max=60)] = 8,
) -> None:
    """Start a demo clinic: embedded SQLite, simulated chairs and the nurse station."""
    from app.auth.demo import demo_access
    from app.main import create_app
    from simulators import sender
    from simulators.fleet import ChairRun

    settings = Settings()
    _upgrade(settings)
    db = Database(settings.resolved_database_url)
    try:
        with db.session() as session:
            site_id = seed_demo(session, chairs)
        plans = _demo_chairs(db, site_id, chairs, seed=secrets.randbelow(1_000_000))
        access = asyncio.run(demo_access(_auth_service(db, settings), site_id))
    finally:
        db.close()

    async def run() -> None:
        app = create_app(settings)
        _freeze_startup_objects()
        server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
        server_task = asyncio.create_task(server.serve())
        while not server.started:
            if server_task.done():
                return  # uvicorn has already said why (e.g. the port is taken)
            await asyncio.sleep(0.05)
        base = f"http://{host}:{port}"
        console.print(f"[bold green]Vigil demo running[/] with {chairs} simulated chairs.")
        console.print(f"  Nurse station: [bold]{base}/sites/{site_id}[/]")
        console.print(f"  API docs:      {base}/docs")
        console.print("  Demo sign-ins (new passwords on every start):")
        for username, role, password in access.people:
            console.print(
                f"    {role.value:<10} user [bold]{username}[/]  password [bold]{password}[/]"
            )
        console.print("  Stop with Ctrl-C.")
        simulation = asyncio.create_task(
            sender.run(base, ChairRun(plans, endless=True), token=access.gateway_token)
        )
        await server_task
        simulation.cancel()
        with contextlib.suppress(asyncio.CancelledError, sender.SimulationError):
            await simulation

    asyncio.run(run())


# The demo's chairs follow `steady`, joined where their seeded session is; one is a
# hypertensive responder, so the screen has something to show.
_DEMO_RESPONDER_CHAIR = 3


def _demo_chairs(db: Database, site_id: int, chairs: int, seed: int) -> list[ChairPlan]:
    from sqlalchemy import select

    from app.storage.models import Chair, InfusionSession
    from simulators.fleet import ChairPlan, chair_seed, device_id, session_position
    from simulators.scenarios import load_scenario

    steady, responder = load_scenario("steady"), load_scenario("hypertensive-responder")
    query = (
        select(Chair.position, InfusionSession.phase, InfusionSession.started_at)
        .join(InfusionSession, InfusionSession.chair_id == Chair.id)
        .where(Chair.site_id == site_id, InfusionSession.ended_at.is_(None))
        .order_by(InfusionSession.started_at)
    )
    now = utcnow()
    with db.session() as session:
        start_at = {
            position: session_position(str(phase), (now - started).total_seconds())
            for position, phase, started in session.execute(query)
        }
    return [
        ChairPlan(
            device_id(DEMO_DEVICE_PREFIX, index),
            responder if index == _DEMO_RESPONDER_CHAIR else steady,
            chair_seed(seed, index),
            skip_s=start_at.get(index, 0),
        )
        for index in range(1, chairs + 1)
    ]


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


@cli.command("scenarios")
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


@cli.command()
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
    ] = DEMO_DEVICE_PREFIX,
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
        timeline_start(utcnow(), plan.span_s, speed)
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


@cli.command()
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


def _auth_service(db: Database, settings: Settings) -> AuthService:
    from app.auth.audit import AuditTrail
    from app.auth.service import AuthService

    return AuthService(db, AuditTrail(db), settings)


def _cli_actor() -> str:
    """Who acts from the command line, for the audit trail: the operating-system user."""
    import getpass

    return f"cli:{getpass.getuser()}"


@user_cli.command("create")
def user_create(
    username: Annotated[str, typer.Argument(help="Sign-in name: lower case, digits, . _ -")],
    role: Annotated[Role, typer.Option(help="nurse, clinician or admin.")],
    name: Annotated[str | None, typer.Option(help="Display name (default: the username).")] = (
        None
    ),
    site: Annotated[
        list[int] | None, typer.Option(help="A site the user may see; repeat for more.")
    ] = None,
    all_sites: Annotated[bool, typer.Option(help="May see every site.")] = False,
    password_stdin: Annotated[
        bool, typer.Option(help="Read the password from standard input (for scripts).")
    ] = False,
) -> None:
    """Create a user, e.g. the first admin: `vigil user create ada --role admin`.

    The password is asked for twice (hidden), or read from stdin with --password-stdin.
    """
    import re
    import sys

    from app.auth.schemas import USERNAME_PATTERN
    from app.errors import VigilError

    if not re.match(USERNAME_PATTERN, username):
        _fail(
            f"username {username!r}: use 2-64 of a-z 0-9 . _ - (starting with a letter or digit)", 2
        )
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    settings = Settings()
    _upgrade(settings)
    db = Database(settings.resolved_database_url)
    try:
        auth = _auth_service(db, settings)
        user = asyncio.run(
            auth.create_user(
                _cli_actor(),
                username=username,
                display_name=name or username,
                role=role,
                password=password,
                site_ids=site or [],
                all_sites=all_sites,
            )
        )
    except VigilError as error:
        _fail(error.message, 1)
    finally:
        db.close()
    scope = "every site" if all_sites or role is Role.ADMIN else f"sites {site or []}"
    console.print(f"created {role.value} {user.username!r} (id {user.id}), {scope}", markup=False)


@user_cli.command("list")
def user_list() -> None:
    """Every user with role, sites and state."""
    settings = Settings()
    db = Database(settings.resolved_database_url)
    try:
        users = asyncio.run(_auth_service(db, settings).users())
    finally:
        db.close()
    for user, sites in users:
        scope = "all sites" if user.all_sites or user.role is Role.ADMIN else f"sites {sites}"
        state = "active" if user.active else "deactivated"
        console.print(
            f"{user.id:>4}  {user.username:<20} {user.role.value:<10} {scope:<16} {state}",
            markup=False,
        )


@credential_cli.command("issue")
def credential_issue(
    label: Annotated[str, typer.Option(help="What the credential is for.")],
    device: Annotated[str | None, typer.Option(help="Bind to this one device id…")] = None,
    site: Annotated[
        int | None, typer.Option(help="…or a gateway credential for every device at a site.")
    ] = None,
) -> None:
    """Issue a device or gateway credential; the token is printed once."""
    from app.errors import VigilError

    settings = Settings()
    _upgrade(settings)
    db = Database(settings.resolved_database_url)
    try:
        issued = asyncio.run(
            _auth_service(db, settings).issue_device_credential(
                _cli_actor(), label=label, device_identifier=device, site_id=site
            )
        )
    except VigilError as error:
        _fail(error.message, 1)
    finally:
        db.close()
    console.print(f"credential {issued.credential.id} ({label}):", markup=False)
    print(issued.token)


@credential_cli.command("revoke")
def credential_revoke(credential_id: Annotated[int, typer.Argument()]) -> None:
    """Revoke a device credential: its next batch, on any door, is refused."""
    from app.errors import VigilError

    settings = Settings()
    db = Database(settings.resolved_database_url)
    try:
        asyncio.run(
            _auth_service(db, settings).revoke_device_credential(_cli_actor(), credential_id)
        )
    except VigilError as error:
        _fail(error.message, 1)
    finally:
        db.close()
    console.print(f"credential {credential_id} revoked")


def _safe_url(settings: Settings) -> str:
    from sqlalchemy.engine import make_url

    return make_url(settings.resolved_database_url).render_as_string(hide_password=True)


def main() -> None:
    cli()
