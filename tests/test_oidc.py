"""Single sign-on against a real OpenID Connect provider: panva's oidc-provider (the
certified reference implementation for Node), started by the test on a loopback port with
a login form, and Vigil's real server signing people in through it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect
from pydantic import SecretStr

from app.auth.oidc import NoVigilAccess, map_claims
from app.settings import Settings
from app.storage.models import Role
from tests.browser_kit import browser  # noqa: F401  (a fixture)
from tests.conftest import PASSWORD, REPO, Clinic, LiveServer, free_port
from vigil.server import create_server

on_sqlite = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

PROVIDER_DIR = REPO / "tests" / "oidc_provider"
# Another loopback address than Vigil's 127.0.0.1, so the provider is another *site*, as a
# clinic's real one is: SameSite cookie rules then apply as they do in production.
PROVIDER_HOST = "127.0.0.2"
CLIENT_SECRET = "vigil-test-client-secret"  # only ever given to the provider the test starts
ROLE_MAP = {"icu-nurses": "nurse", "clinicians": "clinician", "vigil-admins": "admin"}


def accounts(site_id: int) -> dict[str, dict[str, Any]]:
    """The provider's people; `groups` carries both role and site claims, as many IdPs do."""
    return {
        "nina-sub": {
            "password": "nina-pw",
            "preferred_username": "Nina.Nurse@clinic.example",
            "name": "Nina Nurse",
            "groups": ["icu-nurses", f"site-{site_id}"],
        },
        "ada-sub": {
            "password": "ada-pw",
            "preferred_username": "ada.admin",
            "name": "Ada Admin",
            "groups": ["vigil-admins"],
        },
        "rex-sub": {
            "password": "rex-pw",
            "preferred_username": "rex",
            "groups": ["visitors"],
        },
        "lost-sub": {
            "password": "pw",
            "preferred_username": "lost",
            "groups": ["icu-nurses", "site-gone"],  # mapped to a site Vigil does not have
        },
        "local-nurse-sub": {
            "password": "pw",
            "preferred_username": "nurse",  # the clinic's local (password) nurse has this name
            "groups": ["icu-nurses"],
        },
    }


@dataclass
class Provider:
    issuer: str
    accounts_file: Path

    def set_account(self, subject: str, **claims: Any) -> None:
        """Change a person's claims at the provider, as its administrator would."""
        people = json.loads(self.accounts_file.read_text())
        people[subject].update(claims)
        self.accounts_file.write_text(json.dumps(people))


@dataclass
class SsoWorld:
    provider: Provider
    server: LiveServer
    clinic: Clinic


def start_provider(port: int, redirect_uri: str, accounts_file: Path) -> subprocess.Popen[str]:
    node = shutil.which("node")
    if node is None:
        pytest.fail(
            "node is required for the single sign-on tests (Debian: apt-get install nodejs)"
        )
    if not (PROVIDER_DIR / "node_modules" / "oidc-provider").is_dir():
        pytest.fail(
            "the test OpenID provider is not installed: run scripts/test.sh, or "
            "npm ci --prefix tests/oidc_provider"
        )
    client = {
        "client_id": "vigil",
        "client_secret": CLIENT_SECRET,
        "redirect_uris": [redirect_uri],
        "grant_types": ["authorization_code"],
        "response_types": ["code"],
    }
    process = subprocess.Popen(
        [node, str(PROVIDER_DIR / "provider.mjs")],
        env={
            "PATH": "/usr/bin:/bin",
            "OIDC_HOST": PROVIDER_HOST,
            "OIDC_PORT": str(port),
            "OIDC_CLIENTS": json.dumps([client]),
            "OIDC_ACCOUNTS_FILE": str(accounts_file),
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    ready = process.stdout.readline()
    if not ready.startswith("ready "):
        process.kill()
        pytest.fail(f"the test OpenID provider did not start: {ready}{process.stderr.read()}")
    # Drain its output from now on, so a chatty provider never blocks on a full pipe.
    for stream in (process.stdout, process.stderr):
        threading.Thread(target=stream.read, daemon=True).start()
    return process


@pytest.fixture
def sso(clinic: Clinic, tmp_path: Path) -> Iterator[SsoWorld]:
    """The clinic's server with single sign-on configured, and the provider it trusts."""
    provider_port = free_port()
    issuer = f"http://{PROVIDER_HOST}:{provider_port}"
    settings = Settings(
        database_url=clinic.url,
        data_dir=tmp_path,
        oidc_issuer=issuer,
        oidc_client_id="vigil",
        oidc_client_secret=SecretStr(CLIENT_SECRET),
        oidc_provider_name="Test IdP",
        oidc_scopes="openid profile email groups",
        oidc_role_map=ROLE_MAP,
        oidc_site_map={
            f"site-{clinic.site_id}": [clinic.site_id],
            "everywhere": "*",
            "site-gone": [9999],
        },
    )
    server = LiveServer(create_server(settings))
    accounts_file = tmp_path / "idp-accounts.json"
    accounts_file.write_text(json.dumps(accounts(clinic.site_id)))
    provider = start_provider(provider_port, f"{server.http_url}/auth/oidc/callback", accounts_file)
    server.start()
    try:
        yield SsoWorld(Provider(issuer, accounts_file), server, clinic)
    finally:
        server.stop()
        provider.terminate()
        provider.wait(timeout=10)


def sign_in_with_provider(
    agent: httpx.Client, world: SsoWorld, login: str, password: str, next_path: str = "/"
) -> httpx.Response:
    """What a person does: open Vigil's sign-in page, follow "Sign in with Test IdP", fill
    in the provider's form. Returns Vigil's answer to the provider's redirect back."""
    page = agent.get(f"{world.server.http_url}/login", params={"next": next_path})
    link = re.search(r'<a class="sso" href="([^"]+)">Sign in with Test IdP</a>', page.text)
    assert link, page.text
    form_page = agent.get(urljoin(world.server.http_url, link.group(1).replace("&amp;", "&")))
    assert form_page.url.host == PROVIDER_HOST, "the provider's own page asks"
    action = re.search(r'action="([^"]+)"', form_page.text)
    assert action, form_page.text
    return agent.post(
        urljoin(str(form_page.url), action.group(1)), data={"login": login, "password": password}
    )


def me(agent: httpx.Client, world: SsoWorld) -> dict[str, Any]:
    answer = agent.get(f"{world.server.http_url}/api/v1/auth/me")
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def audit(world: SsoWorld, action: str) -> list[dict[str, Any]]:
    trail: list[dict[str, Any]] = httpx.get(
        f"{world.server.http_url}/api/v1/audit",
        params={"action": action},
        headers=world.clinic.auth("admin"),
    ).json()
    return trail


@on_sqlite
def test_first_sign_in_creates_the_person_and_the_next_updates_them(sso: SsoWorld) -> None:
    site_id = sso.clinic.site_id
    with httpx.Client(follow_redirects=True) as agent:
        landed = sign_in_with_provider(agent, sso, "nina-sub", "nina-pw", f"/sites/{site_id}")
        assert landed.status_code == 200, landed.text
        assert landed.url.path == "/auth/oidc/callback"
        assert f'content="0;url=/sites/{site_id}"' in landed.text
        cookie = next(c for c in agent.cookies.jar if c.name == "vigil_session")
        assert cookie.has_nonstandard_attr("HttpOnly")
        # The same session as a password sign-in: the station opens, the API knows her.
        assert agent.get(f"{sso.server.http_url}/sites/{site_id}").status_code == 200
        nina = me(agent, sso)
    assert (nina["username"], nina["display_name"]) == ("nina.nurse-clinic.example", "Nina Nurse")
    assert (nina["role"], nina["site_ids"]) == ("nurse", [site_id])

    # At the provider, she moves to the clinicians and to every site.
    sso.provider.set_account(
        "nina-sub", name="Dr Nina Nurse", groups=["icu-nurses", "clinicians", "everywhere"]
    )
    with httpx.Client(follow_redirects=True) as agent:
        assert sign_in_with_provider(agent, sso, "nina-sub", "nina-pw").status_code == 200
        again = me(agent, sso)
    assert (again["username"], again["display_name"], again["role"]) == (
        "nina.nurse-clinic.example", "Dr Nina Nurse", "clinician",
    )  # fmt: skip
    assert again["site_ids"] is None, "every site"

    created = audit(sso, "user_created")
    assert [e["detail"]["username"] for e in created] == ["nina.nurse-clinic.example"]
    assert created[0]["actor"] == f"oidc:{sso.provider.issuer.removeprefix('http://')}"
    changed = audit(sso, "user_changed")
    assert changed[0]["detail"] == {
        "via": "oidc", "display_name": "Dr Nina Nurse", "role": "clinician", "all_sites": True,
        "sites": [],
    }  # fmt: skip
    sign_ins = [e for e in audit(sso, "sign_in") if e["actor"] == "nina.nurse-clinic.example"]
    assert [e["detail"] for e in sign_ins] == [{"kind": "session", "via": "oidc"}] * 2

    # An account made by single sign-on has no password that could sign it in.
    by_password = httpx.post(
        f"{sso.server.http_url}/api/v1/auth/token",
        json={"username": "nina.nurse-clinic.example", "password": "!oidc"},
    )
    assert by_password.status_code == 401


@on_sqlite
def test_who_the_provider_vouches_for_but_vigil_does_not_admit(sso: SsoWorld) -> None:
    with httpx.Client(follow_redirects=True) as agent:
        no_role = sign_in_with_provider(agent, sso, "rex-sub", "rex-pw")
        assert no_role.status_code == 403
        assert "has no Vigil role" in no_role.text
        assert "vigil_session" not in agent.cookies

    # A provider account whose name a local account already has never takes it over.
    with httpx.Client(follow_redirects=True) as agent:
        taken = sign_in_with_provider(agent, sso, "local-nurse-sub", "pw")
        assert taken.status_code == 403
        assert "not linked to this sign-on" in taken.text
        assert "vigil_session" not in agent.cookies

    # A site map naming a site Vigil lacks is a setting to fix, said as such.
    with httpx.Client(follow_redirects=True) as agent:
        lost = sign_in_with_provider(agent, sso, "lost-sub", "pw")
        assert lost.status_code == 403
        assert "settings are wrong (no site with id 9999)" in lost.text

    # An account an admin deactivated in Vigil stays out, whatever the provider says.
    with httpx.Client(follow_redirects=True) as agent:
        assert sign_in_with_provider(agent, sso, "ada-sub", "ada-pw").status_code == 200
        ada = me(agent, sso)
    assert ada["role"] == "admin"
    deactivated = httpx.patch(
        f"{sso.server.http_url}/api/v1/users/{ada['user_id']}",
        json={"active": False},
        headers=sso.clinic.auth("admin"),
    )
    assert deactivated.status_code == 200, deactivated.text
    with httpx.Client(follow_redirects=True) as agent:
        out = sign_in_with_provider(agent, sso, "ada-sub", "ada-pw")
        assert out.status_code == 403
        assert "deactivated" in out.text

    # A callback that did not start here (no state cookie, a forged state) signs no one in.
    forged = httpx.get(
        f"{sso.server.http_url}/auth/oidc/callback", params={"code": "x", "state": "forged"}
    )
    assert forged.status_code == 401
    assert "did not complete" in forged.text
    assert "vigil_session" not in forged.cookies

    outcomes = {(e["actor"], e["outcome"]) for e in audit(sso, "sign_in")}
    assert ("rex", "no_role") in outcomes
    assert ("nurse", "username_taken") in outcomes
    assert ("ada.admin", "deactivated") in outcomes
    assert ("lost", "misconfigured") in outcomes
    assert any(outcome == "sso_failed" for _, outcome in outcomes)


@on_sqlite
def test_without_a_provider_there_is_no_sso_link(live_server: LiveServer) -> None:
    page = httpx.get(f"{live_server.http_url}/login")
    assert "Sign in with" not in page.text
    assert httpx.get(f"{live_server.http_url}/auth/oidc/login").status_code in (404, 401)


@pytest.mark.browser
@on_sqlite
def test_a_nurse_signs_in_with_the_provider_in_a_browser(
    sso: SsoWorld,
    browser: Browser,  # noqa: F811  (the fixture imported above)
) -> None:
    """In Chromium: the station sends her to sign in, the provider's form (on another site)
    signs her in, and she lands on the station, signed in: the session cookie is
    SameSite=Strict, which a browser withholds on a redirect chain another site began, so
    Vigil's callback must move on by a page of its own rather than a redirect."""
    context = browser.new_context()
    page: Page = context.new_page()
    try:
        station = f"{sso.server.http_url}/sites/{sso.clinic.site_id}"
        page.goto(station)
        page.click("text=Sign in with Test IdP")
        page.fill("input[name=login]", "nina-sub")
        page.fill("input[name=password]", "nina-pw")
        page.click("button[type=submit]")
        page.wait_for_url(station, timeout=15000)
        expect(page.locator("#link-status")).to_have_text("live", timeout=15000)
    finally:
        context.close()


def test_claims_map_to_the_highest_role_and_every_mapped_site() -> None:
    settings = Settings(
        oidc_issuer="https://idp.example",
        oidc_client_id="vigil",
        oidc_role_map=ROLE_MAP,
        oidc_site_map={"north": [1], "south": [2, 3], "leads": "*"},
        oidc_sites_claim="sites",
    )
    person = map_claims(
        {
            "sub": "s-1",
            "preferred_username": "Ann O'Neil",
            "groups": ["icu-nurses", "clinicians", "unknown"],
            "sites": ["north", "south"],
        },
        settings,
    )
    assert (person.role, person.site_ids, person.all_sites) == (Role.CLINICIAN, (1, 2, 3), False)
    assert (person.username, person.display_name) == ("ann-o-neil", "ann-o-neil")
    single = map_claims({"sub": "s-2", "groups": "vigil-admins", "sites": "leads"}, settings)
    assert (single.role, single.all_sites, single.username) == (Role.ADMIN, True, "s-2")
    with pytest.raises(NoVigilAccess, match="no Vigil role"):
        map_claims({"sub": "s-3", "groups": ["unknown"]}, settings)
    with pytest.raises(NoVigilAccess, match="no subject"):
        map_claims({"groups": ["icu-nurses"]}, settings)


@on_sqlite
def test_password_fixture_still_signs_the_local_nurse_in(sso: SsoWorld) -> None:
    """Single sign-on sits beside passwords: the local sign-in is unchanged."""
    with httpx.Client() as agent:
        signed_in = agent.post(
            f"{sso.server.http_url}/login",
            data={"username": "nurse", "password": PASSWORD, "next": "/"},
        )
        assert signed_in.status_code == 303
        assert "vigil_session" in agent.cookies
