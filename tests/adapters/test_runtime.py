"""Adapter discovery, configuration and the runtime: failures stay with their adapter."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from importlib.metadata import EntryPoint
from pathlib import Path

import httpx
import pytest

from app.adapters import discovery
from app.adapters.base import Adapter, AdapterContext, BaseAdapter
from app.adapters.discovery import GROUP, available, load_adapters
from app.adapters.events import ConnectionState, LinkEvent
from app.adapters.hl7_mllp import MllpAdapter
from app.adapters.settings import AdapterSettings
from tests.adapters.conftest import MLLP_ENV, AdapterServer, MllpClient, ack_fields
from tests.adapters.conftest import start_adapter_server as start_server
from tests.conftest import Clinic

HERE = "tests.adapters.test_runtime"


class StartCrash:
    """Implements the protocol by hand; its start fails."""

    name = "startcrash"
    state = ConnectionState.DISCONNECTED

    async def start(self, context: AdapterContext) -> None:
        raise RuntimeError("cannot open the serial port")

    async def stop(self) -> None:
        pass


class RunCrash(BaseAdapter):
    """Its run fails every time: the supervisor retries with backoff, forever."""

    restart_initial_s = 0.05
    restart_max_s = 0.2
    ready_timeout_s = 0.5
    attempts = 0

    async def run(self) -> None:
        type(self).attempts += 1
        raise ValueError("vendor SDK exploded")


class Hangs:
    name = "hangs"
    state = ConnectionState.CONNECTING

    async def start(self, context: AdapterContext) -> None:
        await asyncio.sleep(3600)

    async def stop(self) -> None:
        pass


class Ticker(BaseAdapter):
    """A well-behaved adapter: up at once, serves until stopped."""

    async def run(self) -> None:
        await self.mark_connected("ticking")
        await asyncio.Event().wait()


def not_an_adapter() -> object:
    return object()


def factory_crash() -> Adapter:
    raise ImportError("optional dependency vendor_sdk is missing")


def entry(name: str, target: str) -> EntryPoint:
    return EntryPoint(name, f"{HERE}:{target}", GROUP)


TEST_ENTRY_POINTS = (
    entry("startcrash", "StartCrash"),
    entry("runcrash", "RunCrash"),
    entry("hangs", "Hangs"),
    entry("ticker", "Ticker"),
    entry("notadapter", "not_an_adapter"),
    entry("factorycrash", "factory_crash"),
)


def test_discovery_loads_injected_entry_points() -> None:
    adapters, failures = load_adapters(["ticker"], installed=TEST_ENTRY_POINTS)
    assert failures == []
    [ticker] = adapters
    assert isinstance(ticker, Ticker)
    assert ticker.name == "ticker"  # named after its entry point
    assert isinstance(ticker, Adapter)


def test_builtin_adapters_are_found_without_installed_metadata() -> None:
    found = available(installed=[])
    assert found["mllp"].value == "app.adapters.hl7_mllp:MllpAdapter"
    assert found["mqtt"].value == "app.adapters.mqtt:MqttAdapter"
    adapters, failures = load_adapters(["mllp"], installed=[])
    assert failures == []
    assert isinstance(adapters[0], MllpAdapter)


def test_an_installed_entry_point_overrides_a_builtin() -> None:
    override = EntryPoint("mllp", f"{HERE}:Ticker", GROUP)
    adapters, _ = load_adapters(["mllp"], installed=[override])
    assert isinstance(adapters[0], Ticker)


def test_unusable_adapters_are_failures_named_not_exceptions(
    caplog: pytest.LogCaptureFixture,
) -> None:
    names = ["nope", "notadapter", "factorycrash", "ticker", "ticker"]
    adapters, failures = load_adapters(names, installed=TEST_ENTRY_POINTS)
    assert [a.name for a in adapters] == ["ticker"]  # each name once
    reasons = {f.name: f.reason for f in failures}
    assert "no adapter named 'nope'" in reasons["nope"]
    assert "not an adapter" in reasons["notadapter"]
    assert "vendor_sdk is missing" in reasons["factorycrash"]
    assert any("factorycrash" in r.getMessage() for r in caplog.records)


def test_settings_take_a_comma_separated_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIGIL_ADAPTERS", " mllp, mqtt ,, ")
    assert AdapterSettings().adapters == ["mllp", "mqtt"]
    monkeypatch.delenv("VIGIL_ADAPTERS")
    assert AdapterSettings().adapters == []


@pytest.fixture
def troubled_server(
    sqlite_clinic: Clinic, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[AdapterServer]:
    """A server configured with every kind of broken adapter, and the MLLP listener."""
    monkeypatch.setattr(
        discovery,
        "BUILTIN_ENTRY_POINTS",
        (*discovery.BUILTIN_ENTRY_POINTS, *TEST_ENTRY_POINTS),
    )
    names = "startcrash,runcrash,hangs,notadapter,factorycrash,nope,ticker,mllp"
    env = {**MLLP_ENV, "VIGIL_ADAPTERS": names, "VIGIL_ADAPTER_START_TIMEOUT_S": "0.5"}
    yield from start_server(sqlite_clinic, tmp_path, env)


def test_failing_adapters_never_take_the_server_down(
    troubled_server: AdapterServer, caplog: pytest.LogCaptureFixture
) -> None:
    server = troubled_server
    assert httpx.get(f"{server.http_url}/healthz", timeout=10).status_code == 200
    with MllpClient(server.adapter_port("mllp")) as client:
        code, _, _ = ack_fields(client.send(b"MSH|^~\\&|A|B|||||ORU^R01|r-1|P|2.6\r"))
    assert code == "AE"  # served: no device in that message, but answered

    time.sleep(0.5)  # the crashing adapter keeps being retried meanwhile
    adapters = f"{server.http_url}/api/v1/adapters"
    assert httpx.get(adapters, headers=server.clinic.auth("clinician")).status_code == 403
    status = {s["name"]: s for s in httpx.get(adapters, headers=server.clinic.auth("admin")).json()}
    assert set(status) == {
        "startcrash",
        "runcrash",
        "hangs",
        "notadapter",
        "factorycrash",
        "nope",
        "ticker",
        "mllp",
    }
    assert status["mllp"]["state"] == status["ticker"]["state"] == "connected"
    assert "serial port" in status["startcrash"]["error"]
    assert "vendor SDK exploded" in status["runcrash"]["error"]
    assert status["runcrash"]["state"] in ("connecting", "disconnected")
    assert "TimeoutError" in status["hangs"]["error"]
    assert "no adapter named 'nope'" in status["nope"]["error"]
    assert RunCrash.attempts >= 3
    records = [*caplog.get_records("setup"), *caplog.get_records("call")]
    logged = " ".join(r.getMessage() for r in records if r.levelno >= logging.ERROR)
    for name in ("startcrash", "runcrash", "notadapter", "factorycrash", "nope"):
        assert f"adapter {name}" in logged

    ticker = [e for e in server.recorder.links() if e.adapter == "ticker"]
    assert [e.state for e in ticker] == [ConnectionState.CONNECTING, ConnectionState.CONNECTED]


def test_adapters_stop_with_the_server(sqlite_clinic: Clinic, tmp_path: Path) -> None:
    servers = start_server(sqlite_clinic, tmp_path, MLLP_ENV)
    server = next(servers)
    port = server.adapter_port("mllp")
    events = server.recorder
    servers.close()  # stops uvicorn: the lifespan ends, adapters stop before the database
    mllp: list[LinkEvent] = [e for e in events.links() if e.adapter == "mllp"]
    assert [e.state for e in mllp] == [
        ConnectionState.CONNECTING,
        ConnectionState.CONNECTED,
        ConnectionState.DISCONNECTED,
    ]
    assert mllp[-1].reason == "stopped"
    with pytest.raises(ConnectionRefusedError):
        MllpClient(port)


def test_a_misconfigured_adapter_fails_at_creation_with_the_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VIGIL_MLLP_TIMEZONE", "Mars/Olympus_Mons")
    monkeypatch.setenv("VIGIL_MQTT_PORT", "99999")
    adapters, failures = load_adapters(["mllp", "mqtt"], installed=[])
    assert adapters == []
    reasons = {f.name: f.reason for f in failures}
    assert "unknown time zone 'Mars/Olympus_Mons'" in reasons["mllp"]
    assert "port" in reasons["mqtt"]
