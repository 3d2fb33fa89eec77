"""The `vigil` command: the server's admin commands, `serve`, `demo` and the simulators'.

`serve` and `demo` run the composed server (`vigil.server`); the demo also plans simulated
chairs from the demo clinic it seeds and drives them through the public ingest door. The
admin commands come from `app.cli`, the simulators' from `simulators.cli`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import secrets
from typing import TYPE_CHECKING, Annotated, Any

import typer
import uvicorn
from rich.console import Console

from app.cli import admin_cli, auth_service, safe_url, upgrade_schema
from app.observability.logs import configure_logging
from app.settings import Settings
from app.sites.demo import device_identifier, running_sessions, seed_demo
from app.storage.db import Database
from app.timeutil import utcnow
from simulators.cli import simulator_cli

if TYPE_CHECKING:
    from simulators.fleet import ChairPlan

cli = typer.Typer(
    name="vigil",
    help="Vigil: real-time vitals monitoring for IV infusion clinics.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",  # paragraphs reflow to the terminal; examples stay verbatim
)
console = Console()
log = logging.getLogger("vigil.serve")

Host = Annotated[str, typer.Option(help="Address to listen on.")]
Port = Annotated[int, typer.Option(help="Port to listen on.", min=1, max=65535)]


@cli.command()
def serve(
    host: Host = "127.0.0.1",
    port: Port = 8000,
    upgrade: Annotated[bool, typer.Option(help="Migrate the schema before starting.")] = True,
    access_log: Annotated[
        bool,
        typer.Option(
            help="Log every HTTP request (costs ~7 % of a core at 300 chairs); "
            "VIGIL_ACCESS_LOG=true does the same."
        ),
    ] = False,
) -> None:
    """Run the Vigil server: API, websockets and the nurse station.

    Logs go to standard error, one JSON event per line unless VIGIL_LOG_FORMAT=text.
    """
    from vigil.server import create_server

    settings = Settings()
    if access_log:
        settings = settings.model_copy(update={"access_log": True})
    level = settings.log_level or "INFO"
    configure_logging(level, settings.log_format or "json")
    if upgrade:
        upgrade_schema(settings)
    log.info(
        "Vigil on http://%s:%s/ (database: %s)",
        host,
        port,
        safe_url(settings),
        extra={"database": safe_url(settings)},
    )
    app = create_server(settings)
    _freeze_startup_objects()
    # log_config=None: uvicorn keeps the configuration above (its loggers included); the
    # request lines come from Vigil's own middleware, which knows the request id.
    uvicorn.run(
        app, host=host, port=port, log_config=None, access_log=False, **proxy_options(settings)
    )


def proxy_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's proxy handling as VIGIL_TRUSTED_PROXIES says. uvicorn on its own believes
    X-Forwarded-For from 127.0.0.1 (or FORWARDED_ALLOW_IPS), so any local process could
    claim to be any address and walk past the sign-in limits; Vigil believes no proxy
    unless one is configured."""
    trusted = [str(network) for network in settings.trusted_proxies]
    return {"proxy_headers": bool(trusted), "forwarded_allow_ips": trusted}


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
    from simulators import sender
    from simulators.fleet import ChairRun
    from vigil.server import create_server

    settings = Settings()
    # The demo talks to a person at a terminal: text, and only what needs their attention.
    level = settings.log_level or "WARNING"
    configure_logging(level, settings.log_format or "text")
    upgrade_schema(settings)
    db = Database(settings.resolved_database_url)
    try:
        with db.session() as session:
            site_id = seed_demo(session, chairs)
        plans = _demo_chairs(db, site_id, chairs, seed=secrets.randbelow(1_000_000))
        access = asyncio.run(demo_access(auth_service(db, settings), site_id))
    finally:
        db.close()

    async def run() -> None:
        app = create_server(settings)
        _freeze_startup_objects()
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_config=None,
            access_log=False,
            **proxy_options(settings),
        )
        server = uvicorn.Server(config)
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
    """One simulated chair per seeded chair, sending as the device the seed bound to it."""
    from simulators.fleet import ChairPlan, chair_seed, session_position
    from simulators.scenarios import load_scenario

    steady, responder = load_scenario("steady"), load_scenario("hypertensive-responder")
    now = utcnow()
    with db.session() as session:
        start_at = {
            position: session_position(phase, (now - started).total_seconds())
            for position, (phase, started) in running_sessions(session, site_id).items()
        }
    return [
        ChairPlan(
            device_identifier(index),
            responder if index == _DEMO_RESPONDER_CHAIR else steady,
            chair_seed(seed, index),
            skip_s=start_at.get(index, 0),
        )
        for index in range(1, chairs + 1)
    ]


# Added after `serve` and `demo`, in the order `vigil --help` lists them.
cli.add_typer(simulator_cli)
cli.add_typer(admin_cli)


def main() -> None:
    cli()
