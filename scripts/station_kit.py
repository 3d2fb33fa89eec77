"""A scratch Vigil for the tools that drive a real server and a real browser at it:
scripts/screenshots.py and bench/bench_station.py.

A fresh SQLite database seeded with a demo site, people and credentials made with the
`vigil` admin commands (as an IT person would), `vigil serve` waited for, and a browser
signed in through the /login form. Neither folder is an installed package, so the bench
imports this file by path.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import httpx
from playwright.sync_api import Page

from app.settings import REPO_ROOT
from app.sites.demo import seed_demo
from app.storage import migrate
from app.storage.db import Database

VIGIL = str(Path(sys.executable).with_name("vigil"))
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def find_chromium() -> str | None:
    """Debian's Chromium (or VIGIL_TEST_CHROMIUM); Playwright downloads no browser here."""
    return os.environ.get("VIGIL_TEST_CHROMIUM") or shutil.which("chromium")


def chromium_executable() -> str:
    chromium = find_chromium()
    if not chromium:
        raise SystemExit("Chromium is needed: apt-get install chromium")
    return chromium


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def scratch_site(chairs: int, prefix: str) -> Iterator[tuple[dict[str, str], int]]:
    """A migrated scratch database with a demo site of `chairs` chairs: the environment
    that points `vigil` commands at it, and the site's id."""
    with tempfile.TemporaryDirectory(prefix=prefix) as scratch:
        url = f"sqlite:///{Path(scratch) / 'vigil.sqlite'}"
        migrate.upgrade(url, REPO_ROOT / "alembic")
        db = Database(url)
        with db.session() as session:
            site_id = seed_demo(session, chairs=chairs)
        db.close()
        yield {**os.environ, "VIGIL_DATABASE_URL": url}, site_id


def vigil_cli(env: dict[str, str], *args: str, stdin: str | None = None) -> str:
    """Run a `vigil` admin command against the scratch database; its standard output."""
    done = subprocess.run(
        [VIGIL, *args], env=env, input=stdin, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"vigil {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def issue_gateway_credential(env: dict[str, str], site_id: int, label: str) -> str:
    """A gateway credential for every device of the site; the token is the last line."""
    printed = vigil_cli(env, "device-credential", "issue", "--label", label, "--site", str(site_id))
    return printed.strip().splitlines()[-1]


def create_nurse(env: dict[str, str], site_id: int, username: str, name: str | None = None) -> str:
    """A nurse of the site, made with `vigil user create`; returns a new random password."""
    password = secrets.token_urlsafe(18)
    named = ("--name", name) if name else ()
    vigil_cli(
        env,
        *("user", "create", username, "--role", "nurse", *named),
        *("--site", str(site_id), "--password-stdin"),
        stdin=password + "\n",
    )
    return password


def wait_healthy(base: str, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit("vigil serve exited early")
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit("vigil serve did not answer /healthz within 30 s")


def sign_in(page: Page, base: str, next_path: str, username: str, password: str) -> None:
    """Sign the browser in through the /login form, as a nurse would."""
    page.goto(f"{base}/login?next={quote(next_path)}")
    page.fill("#username", username)
    page.fill("#password", password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}{next_path}")
