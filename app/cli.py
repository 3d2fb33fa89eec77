"""The server's admin commands: the schema, people who may sign in, device credentials.

They are part of the `vigil` command, which `vigil.cli` composes (with `serve`, `demo` and
the simulators' commands); nothing here starts a server or a simulation.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from app.settings import Settings
from app.storage import migrate
from app.storage.db import Database
from app.storage.models import Role

if TYPE_CHECKING:
    from app.auth.service import AuthService

# Added to `vigil` without a name of its own: its groups become `vigil db`, `vigil user`
# and `vigil device-credential`.
admin_cli = typer.Typer(no_args_is_help=True)
db_cli = typer.Typer(help="Database schema management.", no_args_is_help=True)
admin_cli.add_typer(db_cli, name="db")
user_cli = typer.Typer(help="People who may sign in, and their roles.", no_args_is_help=True)
admin_cli.add_typer(user_cli, name="user")
credential_cli = typer.Typer(help="Device and gateway ingest credentials.", no_args_is_help=True)
admin_cli.add_typer(credential_cli, name="device-credential")
console = Console()
error_console = Console(stderr=True, soft_wrap=True)  # messages name files: never split them


def upgrade_schema(settings: Settings, revision: str = "head") -> None:
    """Create or migrate the schema of the database `settings` name."""
    migrate.upgrade(settings.resolved_database_url, settings.migrations_dir, revision)


@db_cli.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Create or migrate the schema (SQLite by default, VIGIL_DATABASE_URL otherwise)."""
    settings = Settings()
    upgrade_schema(settings, revision)
    current = migrate.current_revision(settings.resolved_database_url)
    console.print(f"database at revision [bold]{current}[/]: {safe_url(settings)}")


def _fail(message: str, code: int) -> NoReturn:
    error_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    raise typer.Exit(code)


def auth_service(db: Database, settings: Settings) -> AuthService:
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
    upgrade_schema(settings)
    db = Database(settings.resolved_database_url)
    try:
        auth = auth_service(db, settings)
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
        users = asyncio.run(auth_service(db, settings).users())
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
    upgrade_schema(settings)
    db = Database(settings.resolved_database_url)
    try:
        issued = asyncio.run(
            auth_service(db, settings).issue_device_credential(
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
            auth_service(db, settings).revoke_device_credential(_cli_actor(), credential_id)
        )
    except VigilError as error:
        _fail(error.message, 1)
    finally:
        db.close()
    console.print(f"credential {credential_id} revoked")


def safe_url(settings: Settings) -> str:
    """The database URL without its password, for printing."""
    from sqlalchemy.engine import make_url

    return make_url(settings.resolved_database_url).render_as_string(hide_password=True)
