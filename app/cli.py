"""The server's admin commands: the schema, people who may sign in, device credentials,
the audit trail's export and retention, backup and restore.

They are part of the `vigil` command, which `vigil.cli` composes (with `serve`, `demo` and
the simulators' commands); nothing here starts a server or a simulation.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from app.auth.audit import ExportFormat
from app.settings import Settings
from app.storage import migrate
from app.storage.db import Database
from app.storage.models import Role

if TYPE_CHECKING:
    from app.auth.service import AuthService

# Added to `vigil` without a name of its own: its groups become `vigil db`, `vigil user`,
# `vigil device-credential` and `vigil audit`.
admin_cli = typer.Typer(no_args_is_help=True)
db_cli = typer.Typer(help="Database schema management.", no_args_is_help=True)
admin_cli.add_typer(db_cli, name="db")
user_cli = typer.Typer(help="People who may sign in, and their roles.", no_args_is_help=True)
admin_cli.add_typer(user_cli, name="user")
credential_cli = typer.Typer(help="Device and gateway ingest credentials.", no_args_is_help=True)
admin_cli.add_typer(credential_cli, name="device-credential")
audit_cli = typer.Typer(
    help="The audit trail: export for the clinic's records, prune by retention.",
    no_args_is_help=True,
)
admin_cli.add_typer(audit_cli, name="audit")
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


@audit_cli.command("export")
def audit_export(
    from_: Annotated[
        str | None,
        typer.Option("--from", help="First day (YYYY-MM-DD, UTC) or time (ISO 8601) to include."),
    ] = None,
    to: Annotated[
        str | None,
        typer.Option(help="Last day to include (YYYY-MM-DD), or the time to stop before."),
    ] = None,
    export_format: Annotated[
        ExportFormat, typer.Option("--format", help="csv, or jsonl (one JSON object a line).")
    ] = ExportFormat.CSV,
    out: Annotated[
        Path | None, typer.Option(help="Write to this file (default: standard output).")
    ] = None,
) -> None:
    """Export the audit trail, oldest first: `vigil audit export --from 2026-01-01 --to
    2026-03-31 --format csv --out q1.csv`. The export is itself recorded in the trail."""
    from app.auth.audit import AuditTrail, ExportRange, export_text, parse_bound

    try:
        span = ExportRange(
            None if from_ is None else parse_bound(from_, end=False),
            None if to is None else parse_bound(to, end=True),
        )
    except ValueError as error:
        _fail(f"--from/--to: a date (YYYY-MM-DD) or an ISO 8601 time ({error})", 2)
    settings = Settings()
    db = Database(settings.resolved_database_url)
    try:
        asyncio.run(
            AuditTrail(db).record(
                _cli_actor(),
                "audit_exported",
                detail={"format": export_format.value, **span.as_detail()},
            )
        )
        target = sys.stdout if out is None else out.open("w", encoding="utf-8", newline="")
        try:
            with db.session() as session:
                for text in export_text(session, span, export_format):
                    target.write(text)
        finally:
            if target is not sys.stdout:
                target.close()
    finally:
        db.close()
    if out is not None:
        error_console.print(f"audit trail written to {out}", markup=False, highlight=False)


@audit_cli.command("prune")
def audit_prune(
    days: Annotated[
        int | None,
        typer.Option(help="Keep this many days (default: VIGIL_AUDIT_RETENTION_DAYS).", min=1),
    ] = None,
) -> None:
    """Delete audit events older than the retention period, and record the prune in the
    trail itself. Without --days and VIGIL_AUDIT_RETENTION_DAYS, the trail is kept forever
    and nothing is deleted. Safe while the server runs."""
    from app.auth.audit import AuditTrail
    from app.timeutil import iso

    settings = Settings()
    retention = days or settings.audit_retention_days
    if retention is None:
        console.print("VIGIL_AUDIT_RETENTION_DAYS is unset: the audit trail is kept forever.")
        return
    db = Database(settings.resolved_database_url)
    try:
        result = asyncio.run(AuditTrail(db).prune(_cli_actor(), retention))
    finally:
        db.close()
    console.print(
        f"deleted {result.deleted} audit events from before {iso(result.cutoff)} "
        f"(retention {retention} days)",
        markup=False,
        soft_wrap=True,
    )


@admin_cli.command("backup")
def backup_command(
    file: Annotated[Path, typer.Argument(help="Where to write the backup (replaced if present).")],
) -> None:
    """Back up the database to FILE, safe while the server runs. SQLite: a copy through
    SQLite's online backup API. PostgreSQL: `pg_dump --format=custom` (needs the PostgreSQL
    client tools). The backup is recorded in the audit trail."""
    from app.auth.audit import AuditTrail
    from app.storage.backup import BackupError, backup

    settings = Settings()
    try:
        backup(settings.resolved_database_url, file)
    except BackupError as error:
        _fail(str(error), 1)
    db = Database(settings.resolved_database_url)
    try:
        asyncio.run(
            AuditTrail(db).record(_cli_actor(), "database_backed_up", detail={"file": file.name})
        )
    finally:
        db.close()
    size_mb = file.stat().st_size / 1e6
    console.print(
        f"backed up {safe_url(settings)} to {file} ({size_mb:.1f} MB)",
        markup=False,
        soft_wrap=True,  # file names are never split
    )


@admin_cli.command("restore")
def restore_command(
    file: Annotated[Path, typer.Argument(help="A backup made by `vigil backup`.")],
    replace: Annotated[bool, typer.Option(help="Overwrite a database that is not empty.")] = False,
) -> None:
    """Restore FILE into the database VIGIL_DATABASE_URL names (an empty one, unless
    --replace), then bring its schema up to date. Stop the server first. PostgreSQL needs
    `pg_restore` from the PostgreSQL client tools."""
    from app.auth.audit import AuditTrail
    from app.storage.backup import BackupError, restore

    settings = Settings()
    try:
        restored = restore(settings.resolved_database_url, file, replace=replace)
    except BackupError as error:
        _fail(str(error), 1)
    upgrade_schema(settings)
    db = Database(settings.resolved_database_url)
    try:
        asyncio.run(
            AuditTrail(db).record(
                _cli_actor(),
                "database_restored",
                detail={"file": file.name, "revision": restored.revision},
            )
        )
    finally:
        db.close()
    counts = ", ".join(f"{count} {table}" for table, count in restored.counts.items())
    console.print(
        f"restored {file} (schema revision {restored.revision}) into {safe_url(settings)}: "
        f"{counts}",
        markup=False,
        soft_wrap=True,
    )


def safe_url(settings: Settings) -> str:
    """The database URL without its password, for printing."""
    from sqlalchemy.engine import make_url

    return make_url(settings.resolved_database_url).render_as_string(hide_password=True)
