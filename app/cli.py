"""The `vigil` command."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Annotated

import typer
import uvicorn
from rich.console import Console

from app.settings import Settings
from app.sites.demo import DEMO_DEVICE_PREFIX, seed_demo
from app.storage import migrate
from app.storage.db import Database

cli = typer.Typer(
    name="vigil",
    help="Vigil: real-time vitals monitoring for IV infusion clinics.",
    no_args_is_help=True,
    add_completion=False,
)
db_cli = typer.Typer(help="Database schema management.", no_args_is_help=True)
cli.add_typer(db_cli, name="db")
console = Console()

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
) -> None:
    """Run the Vigil server: API, websockets and the nurse station."""
    from app.main import create_app

    settings = Settings()
    if upgrade:
        _upgrade(settings)
    console.print(f"Vigil on http://{host}:{port}/ (database: {_safe_url(settings)})")
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info")


@cli.command()
def demo(
    host: Host = "127.0.0.1",
    port: Port = 8000,
    chairs: Annotated[int, typer.Option(help="Simulated chairs.", min=1, max=60)] = 8,
) -> None:
    """Start a demo clinic: embedded SQLite, simulated chairs and the nurse station."""
    from app.main import create_app
    from simulators import http_sender

    settings = Settings()
    _upgrade(settings)
    db = Database(settings.resolved_database_url)
    try:
        with db.session() as session:
            site_id = seed_demo(session, chairs)
    finally:
        db.close()

    async def run() -> None:
        server = uvicorn.Server(
            uvicorn.Config(create_app(settings), host=host, port=port, log_level="warning")
        )
        server_task = asyncio.create_task(server.serve())
        while not server.started:
            if server_task.done():
                return  # uvicorn has already said why (e.g. the port is taken)
            await asyncio.sleep(0.05)
        base = f"http://{host}:{port}"
        console.print(f"[bold green]Vigil demo running[/] with {chairs} simulated chairs.")
        console.print(f"  Nurse station: [bold]{base}/sites/{site_id}[/]")
        console.print(f"  API docs:      {base}/docs")
        console.print("  Stop with Ctrl-C.")
        monitors = http_sender.make_monitors(chairs, DEMO_DEVICE_PREFIX, 180.0, seed=None)
        simulation = asyncio.create_task(http_sender.run(base, monitors))
        await server_task
        simulation.cancel()
        with contextlib.suppress(asyncio.CancelledError, http_sender.SimulationError):
            await simulation

    asyncio.run(run())


@cli.command()
def simulate(
    chairs: Annotated[int, typer.Option(help="How many chairs to simulate.", min=1)] = 8,
    url: Annotated[str, typer.Option(help="Base URL of the Vigil server.")] = (
        "http://127.0.0.1:8000"
    ),
    device_prefix: Annotated[
        str, typer.Option(help="Device ids are this prefix plus 01, 02, …")
    ] = DEMO_DEVICE_PREFIX,
    nibp_interval: Annotated[float, typer.Option(help="Seconds between NIBP readings.")] = 180.0,
    duration: Annotated[
        float | None, typer.Option(help="Seconds to run; unset runs until Ctrl-C.")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed, for repeatable runs.")] = None,
) -> None:
    """Send plausible 1 Hz vitals from simulated chairs to a running server over HTTP."""
    from simulators import http_sender

    monitors = http_sender.make_monitors(chairs, device_prefix, nibp_interval, seed)
    console.print(f"Simulating {chairs} chairs against {url} (devices {device_prefix}01…)")
    try:
        stats = asyncio.run(http_sender.run(url, monitors, duration))
    except http_sender.SimulationError as error:
        console.print(f"[bold red]error:[/] {error}")
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        raise typer.Exit(0) from None
    console.print(
        f"sent {stats.batches} batches ({stats.observations} observations); "
        f"{stats.connection_failures} failed to connect"
    )


def _safe_url(settings: Settings) -> str:
    from sqlalchemy.engine import make_url

    return make_url(settings.resolved_database_url).render_as_string(hide_password=True)


def main() -> None:
    cli()
