"""Sign-in hardening: waits that slow a guesser but lock nobody out, the same answers for
every username, and proxy headers believed only from configured proxies (a real
`vigil serve`, since uvicorn's own defaults are what was wrong)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from app.auth.throttle import FORGET_AFTER_S, SignInThrottle
from app.main import create_app
from app.settings import Settings
from app.storage.models import AuditEvent, User
from tests.conftest import PASSWORD, REPO, Clinic, free_port

# The throttle lives in memory; its database lookups are the ones every sign-in makes.
sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

TOKEN_URL = "/api/v1/auth/token"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- the throttle on its own, on a clock the test moves ------------------------------------


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def throttle(clock: Clock) -> SignInThrottle:
    return SignInThrottle(free_failures=3, account_free_failures=10, max_delay_s=60, clock=clock)


def test_waits_grow_per_account_and_address_up_to_the_cap(
    throttle: SignInThrottle, clock: Clock
) -> None:
    waits = []
    for _ in range(12):
        waits.append(throttle.wait_s("ada", "10.0.0.9"))
        clock.now += waits[-1]  # the guesser waits exactly as long as told, then fails
        throttle.failed("ada", "10.0.0.9")
    assert waits == [0, 0, 0, 1, 2, 4, 8, 16, 32, 60, 60, 60]
    # Never a lockout: after the longest wait one more attempt is allowed.
    clock.now += 60
    assert throttle.wait_s("ada", "10.0.0.9") == 0
    # Another address, and another account from the same address, are not slowed.
    assert throttle.wait_s("ada", "10.0.0.10") == 0
    assert throttle.wait_s("bob", "10.0.0.9") == 0


def test_guessing_spread_over_addresses_is_slowed_except_where_the_owner_signs_in(
    throttle: SignInThrottle, clock: Clock
) -> None:
    throttle.succeeded("ada", "10.20.0.7")  # her workstation
    for n in range(10):
        assert throttle.wait_s("ada", f"203.0.113.{n}") == 0
        throttle.failed("ada", f"203.0.113.{n}")
    assert throttle.wait_s("ada", "203.0.113.200") == 1  # a new address waits
    assert throttle.wait_s("ada", "10.20.0.7") == 0  # her own does not
    assert throttle.wait_s("bob", "203.0.113.200") == 0
    for n in range(10, 20):
        clock.now += throttle.wait_s("ada", f"203.0.113.{n}")
        throttle.failed("ada", f"203.0.113.{n}")
    assert 0 < throttle.wait_s("ada", "203.0.113.201") <= 60
    assert throttle.wait_s("ada", "10.20.0.7") == 0
    # A quiet spell forgets the run; the admin's unlock ends it at once.
    clock.now += FORGET_AFTER_S + 61
    throttle.failed("ada", "203.0.113.1")
    assert throttle.wait_s("ada", "203.0.113.202") == 0
    for _ in range(12):
        throttle.failed("ada", "203.0.113.1")
    assert throttle.wait_s("ada", "203.0.113.1") > 0
    throttle.forget("ada")
    assert throttle.wait_s("ada", "203.0.113.1") == 0


# --- over HTTP ------------------------------------------------------------------------------


@pytest.fixture
def strict_app(clinic: Clinic, tmp_path: Path) -> FastAPI:
    """Small thresholds and a one-second cap, so a test can wait out the longest wait."""
    return create_app(
        Settings(
            database_url=clinic.url,
            data_dir=tmp_path,
            sign_in_free_failures=2,
            sign_in_account_free_failures=4,
            sign_in_max_delay_s=1,
        )
    )


def from_address(app: FastAPI, address: str) -> TestClient:
    return TestClient(app, client=(address, 50000))


@sqlite_only
def test_unknown_inactive_and_existing_accounts_get_the_same_answers(
    strict_app: FastAPI, clinic: Clinic
) -> None:
    with Session(create_engine(clinic.url)) as session:
        clinician = session.scalars(select(User).where(User.username == "clinician")).one()
        clinician.active = False
        session.commit()
    transcripts = []
    for number, username in enumerate(["nurse", "no-such-user", "clinician"]):
        client = from_address(strict_app, f"198.51.100.{number}")
        transcript = []
        for password in ["wrong", "wrong", "wrong", PASSWORD]:
            answer = client.post(TOKEN_URL, json={"username": username, "password": password})
            transcript.append((answer.status_code, answer.json()["detail"]))
        transcripts.append(transcript)
    assert transcripts[0][:3] == [(401, "wrong username or password")] * 2 + [
        (429, "too many failed sign-ins for this username: wait before trying again")
    ]
    assert transcripts[1][:3] == transcripts[0][:3]
    assert transcripts[2][:3] == transcripts[0][:3]
    assert "locked" not in str(transcripts)


@sqlite_only
def test_nobody_can_keep_an_account_out_for_longer_than_the_longest_wait(
    strict_app: FastAPI,
) -> None:
    attacker = from_address(strict_app, "203.0.113.5")
    owner = from_address(strict_app, "10.20.0.7")
    assert owner.post(TOKEN_URL, json={"username": "nurse", "password": PASSWORD}).is_success
    # Guesses from many addresses: the account's run slows every new address…
    for n in range(6):
        from_address(strict_app, f"203.0.113.{n}").post(
            TOKEN_URL, json={"username": "nurse", "password": f"guess-{n}"}
        )
    slowed = from_address(strict_app, "203.0.113.99").post(
        TOKEN_URL, json={"username": "nurse", "password": PASSWORD}
    )
    assert slowed.status_code == 429
    # …but not the address the nurse signed in from, and nobody for longer than the cap.
    assert owner.post(TOKEN_URL, json={"username": "nurse", "password": PASSWORD}).is_success
    for _ in range(5):
        attacker.post(TOKEN_URL, json={"username": "nurse", "password": "guess"})
    time.sleep(1.1)
    late = from_address(strict_app, "10.99.0.1")  # the nurse on a new tablet
    assert late.post(TOKEN_URL, json={"username": "nurse", "password": PASSWORD}).is_success


# --- a real `vigil serve`, where the proxy headers matter ------------------------------------


@contextlib.contextmanager
def serve(clinic: Clinic, tmp_path: Path, **env: str) -> Iterator[str]:
    """`python -m vigil serve` on a free port, with `env`; yields its base URL."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "vigil", "serve", "--no-upgrade", "--port", str(port)],
        env={
            **os.environ,
            "PYTHONPATH": str(REPO),
            "VIGIL_DATABASE_URL": clinic.url,
            "VIGIL_DATA_DIR": str(tmp_path),
            "VIGIL_SIGN_IN_RATE": "4/minute",
            **env,
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                output = process.stdout.read().decode() if process.stdout else ""
                pytest.fail(f"vigil serve did not start: {output[-2000:]}")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def sign_in_sources(clinic: Clinic) -> list[str | None]:
    with Session(create_engine(clinic.url)) as session:
        return list(
            session.scalars(
                select(AuditEvent.source)
                .where(AuditEvent.action == "sign_in")
                .order_by(AuditEvent.id)
            )
        )


def _browser_sign_in(url: str, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(
        f"{url}/login",
        data={"username": "nurse", "password": PASSWORD, "next": "/"},
        headers=headers,
        follow_redirects=False,
        timeout=10,
    )


@sqlite_only
def test_forwarded_headers_from_an_unconfigured_proxy_are_not_believed(
    clinic: Clinic, tmp_path: Path
) -> None:
    with serve(clinic, tmp_path) as url:
        # X-Forwarded-Proto is not believed: plain HTTP gets cookies without Secure.
        signed_in = _browser_sign_in(url, {"X-Forwarded-Proto": "https"})
        assert signed_in.status_code == 303, signed_in.text
        assert "secure" not in signed_in.headers["set-cookie"].lower()
        # Nor is X-Forwarded-For: rotating it does not reset the per-address limit.
        answers = [
            httpx.post(
                f"{url}{TOKEN_URL}",
                json={"username": f"nobody-{n}", "password": "x"},
                headers={"X-Forwarded-For": f"198.51.100.{n}"},
                timeout=10,
            ).status_code
            for n in range(4)
        ]
        assert answers == [401, 401, 401, 429]
        assert set(sign_in_sources(clinic)) == {"127.0.0.1"}


@sqlite_only
def test_forwarded_headers_from_a_configured_proxy_are_believed(
    clinic: Clinic, tmp_path: Path
) -> None:
    with serve(clinic, tmp_path, VIGIL_TRUSTED_PROXIES="127.0.0.1") as url:
        answers = [
            httpx.post(
                f"{url}{TOKEN_URL}",
                json={"username": f"nobody-{n}", "password": "x"},
                headers={"X-Forwarded-For": f"198.51.100.{n}"},
                timeout=10,
            ).status_code
            for n in range(6)
        ]
        assert answers == [401] * 6, "each forwarded address has its own budget"
        assert sign_in_sources(clinic) == [f"198.51.100.{n}" for n in range(6)]
        same = [
            httpx.post(
                f"{url}{TOKEN_URL}",
                json={"username": f"nobody-{n}", "password": "x"},
                headers={"X-Forwarded-For": "198.51.100.77"},
                timeout=10,
            ).status_code
            for n in range(5)
        ]
        assert same == [401, 401, 401, 401, 429]
        # The proxy said the browser came over HTTPS: the cookies are Secure.
        signed_in = _browser_sign_in(url, {"X-Forwarded-Proto": "https"})
        assert signed_in.status_code == 303, signed_in.text
        assert "secure" in signed_in.headers["set-cookie"].lower()
