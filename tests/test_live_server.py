"""A real uvicorn server: posts over HTTP arrive on real websocket clients."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from app.main import create_app
from app.settings import Settings
from monitor.display import (
    ALARM_LEVELS,
    CONTINUOUS_FRESH_S,
    LEVEL_COLOURS,
    PRIORITY_COLOURS,
    PRIORITY_LEVEL,
    fresh_s,
)
from monitor.protocol import DEFAULT_PROTOCOL_PATH, PRIORITIES, Phase, load_protocol
from monitor.vitals import Vital
from tests.conftest import Clinic, LiveServer


def post(
    server: LiveServer, clinic: Clinic, device: str, observations: list[dict[str, Any]]
) -> httpx.Response:
    return httpx.post(
        f"{server.http_url}/api/v1/observations",
        json={"device_id": device, "observations": observations},
        headers=clinic.device_auth,
        timeout=30,
    )


def reading(vital: str, value: float, unit: str, at: datetime | None = None) -> dict[str, Any]:
    moment = at or datetime.now(UTC)
    return {"vital": vital, "value": value, "unit": unit, "device_time": moment.isoformat()}


def next_of(ws: ClientConnection, kind: str, timeout: float = 5.0) -> dict[str, Any]:
    """The next message of `kind`, skipping heartbeats and alarm transitions."""
    deadline = time.monotonic() + timeout
    while True:
        message: dict[str, Any] = json.loads(
            ws.recv(timeout=max(0.01, deadline - time.monotonic()))
        )
        if message["type"] == kind:
            return message
        assert message["type"] in {"heartbeat", "alarm"}, message


def deltas_until(ws: ClientConnection, samples: int, timeout: float = 10) -> list[dict[str, Any]]:
    """Every delta (samples or alarm) up to and including the `samples`-th samples message."""
    deltas: list[dict[str, Any]] = []
    while sum(d["type"] == "samples" for d in deltas) < samples:
        message = json.loads(ws.recv(timeout=timeout))
        if message["type"] != "heartbeat":
            deltas.append(message)
    return deltas


def site_url(server: LiveServer, clinic: Clinic) -> str:
    return f"{server.ws_url}/ws/sites/{clinic.site_id}"


def test_snapshot_then_numbered_deltas(live_server: LiveServer, clinic: Clinic) -> None:
    with connect(site_url(live_server, clinic), additional_headers=clinic.auth()) as ws:
        snapshot = next_of(ws, "snapshot")
        assert snapshot["site_id"] == clinic.site_id
        assert [c["devices"] for c in snapshot["chairs"]] == [[clinic.device(i)] for i in (1, 2, 3)]
        assert all(c["session"]["phase"] for c in snapshot["chairs"])
        chair_2 = snapshot["chairs"][1]["chair_id"]

        response = post(live_server, clinic, clinic.device(2), [reading("spo2", 93, "%")])
        assert response.status_code == 201

        delta = next_of(ws, "samples")
        assert delta["seq"] > snapshot["seq"]
        assert delta["chair_id"] == chair_2
        assert [(s["vital"], s["value"]) for s in delta["samples"]] == [("spo2", 93)]
        assert delta["samples"][0]["received_time"].endswith("Z")

    # A screen that connects later starts from a snapshot holding the value and its age.
    time.sleep(0.3)
    with connect(site_url(live_server, clinic), additional_headers=clinic.auth()) as late:
        snapshot = next_of(late, "snapshot")
        spo2 = snapshot["chairs"][1]["vitals"]["spo2"]
        assert spo2["value"] == 93
        assert spo2["age_s"] >= 0.3


def test_every_client_receives_every_delta_in_order(
    live_server: LiveServer, clinic: Clinic
) -> None:
    with (
        connect(site_url(live_server, clinic), additional_headers=clinic.auth()) as first,
        connect(site_url(live_server, clinic), additional_headers=clinic.auth()) as second,
    ):
        start = [next_of(first, "snapshot")["seq"], next_of(second, "snapshot")["seq"]]
        for n in range(5):
            assert post(
                live_server, clinic, clinic.device(1), [reading("hr", 70 + n, "/min")]
            ).is_success
        for ws, seq in zip((first, second), start, strict=True):
            deltas = deltas_until(ws, samples=5)
            # Every delta (samples and alarm transitions) arrives, numbered without a gap.
            assert [d["seq"] for d in deltas] == list(range(seq + 1, seq + 1 + len(deltas)))
            values = [d["samples"][0]["value"] for d in deltas if d["type"] == "samples"]
            assert values == [70, 71, 72, 73, 74]


def test_unknown_site_is_refused_with_a_reason(live_server: LiveServer, clinic: Clinic) -> None:
    # The admin may see every site, so the site's absence is what is refused.
    with (
        connect(
            f"{live_server.ws_url}/ws/sites/4242", additional_headers=clinic.auth("admin")
        ) as ws,
        pytest.raises(ConnectionClosed) as info,
    ):
        ws.recv(timeout=5)
    assert info.value.rcvd is not None
    assert info.value.rcvd.code == 4404
    assert "4242" in info.value.rcvd.reason


def test_client_may_ask_for_a_resync_and_bad_requests_are_answered(
    live_server: LiveServer, clinic: Clinic
) -> None:
    with connect(site_url(live_server, clinic), additional_headers=clinic.auth()) as ws:
        next_of(ws, "snapshot")
        ws.send("hello")
        assert "resync" in next_of(ws, "error")["detail"]
        ws.send(json.dumps({"type": "resync"}))
        assert next_of(ws, "resync")["site_id"] == clinic.site_id
        assert next_of(ws, "snapshot")["site_id"] == clinic.site_id


@pytest.fixture
def quick_server(settings: Settings) -> Iterator[LiveServer]:
    """Heartbeats every 0.2 s and an 8-message client queue, to show both quickly."""
    app = create_app(settings.model_copy(update={"heartbeat_s": 0.2, "client_queue_size": 8}))
    server = LiveServer(app)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_idle_link_carries_heartbeats(quick_server: LiveServer, clinic: Clinic) -> None:
    with connect(site_url(quick_server, clinic), additional_headers=clinic.auth()) as ws:
        snapshot = next_of(ws, "snapshot")
        beat = json.loads(ws.recv(timeout=2))
        assert beat == {**beat, "type": "heartbeat", "seq": snapshot["seq"]}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_stuck_client_is_bounded_and_resynced_while_others_keep_up(
    quick_server: LiveServer, clinic: Clinic
) -> None:
    # The stuck client: a small receive buffer and a one-message client queue, never read.
    # (A receive buffer set before connecting also fixes TCP's window scale: 64 kB still
    # drains quickly afterwards, where 4 kB would crawl.)
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
    raw.connect(("127.0.0.1", quick_server.port))
    with connect(
        site_url(quick_server, clinic),
        additional_headers=clinic.auth(),
        sock=raw,
        max_queue=1,
        compression=None,
        ping_interval=None,
    ) as stuck:
        with connect(site_url(quick_server, clinic), additional_headers=clinic.auth()) as healthy:
            last_seq = next_of(healthy, "snapshot")["seq"]
            start = datetime.now(UTC) - timedelta(minutes=5)
            posts = 60
            for n in range(posts):
                # 1,000 readings a post make ~100 kB messages, enough to fill the socket buffers.
                batch = [
                    reading(
                        "hr", 60 + (i % 40), "/min", start + timedelta(milliseconds=n * 1000 + i)
                    )
                    for i in range(1000)
                ]
                assert post(quick_server, clinic, clinic.device(1), batch).status_code == 201
                seqs = [d["seq"] for d in deltas_until(healthy, samples=1)]
                assert seqs == list(range(last_seq + 1, last_seq + 1 + len(seqs))), (
                    "no gap, in order"
                )
                last_seq = seqs[-1]
            subscriptions = [
                s for s in quick_server.app.state.live.hub._subscribers[clinic.site_id]
            ]
            assert max(s.qsize() for s in subscriptions) <= 8
            assert any(s.resyncs >= 1 for s in subscriptions), "the stuck client fell behind"
        # Once it reads again, the stuck client is told to resync and gets a fresh snapshot.
        kinds: list[str] = []
        while "snapshot" not in kinds[1:]:
            kinds.append(json.loads(stuck.recv(timeout=10))["type"])
        assert kinds[0] == "snapshot"
        assert "resync" in kinds
        assert kinds[kinds.index("resync") + 1] == "snapshot"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_snapshot_carries_the_running_protocol_s_display_facts(
    settings: Settings, clinic: Clinic, tmp_path: Path
) -> None:
    """The station takes freshness, priority order and colours from the snapshot; they are
    monitor's definitions under the clinic's protocol file, not the default's."""
    text = DEFAULT_PROTOCOL_PATH.read_text(encoding="utf-8")
    text = text.replace(
        "interval_s = { baseline = 300, infusion = 300, recovery = 900 }",
        "interval_s = { baseline = 240, infusion = 180, recovery = 600 }",
    ).replace("grace_s = 120", "grace_s = 90")
    path = tmp_path / "clinic.toml"
    path.write_text(text, encoding="utf-8")
    protocol = load_protocol(path)
    server = LiveServer(create_app(settings.model_copy(update={"protocol_file": path})))
    server.start()
    try:
        with connect(site_url(server, clinic), additional_headers=clinic.auth()) as ws:
            display = next_of(ws, "snapshot")["display"]
    finally:
        server.stop()

    fresh = display["fresh_s"]
    assert fresh["nibp_sys"]["infusion"] == 180 + 90  # the clinic's interval and grace
    assert fresh["nibp_dia"]["recovery"] == 600 + 90
    assert fresh["hr"]["infusion"] == CONTINUOUS_FRESH_S
    for vital in Vital:
        assert fresh[vital.value]["no_session"] == fresh_s(protocol, vital, None)
        for phase in Phase:
            assert fresh[vital.value][phase.value] == fresh_s(protocol, vital, phase), phase
    assert display["priority_order"] == [p.value for p in PRIORITIES]
    assert display["alarm_levels"] == [level.value for level in ALARM_LEVELS]
    assert display["priority_level"] == {p.value: PRIORITY_LEVEL[p].value for p in PRIORITIES}
    assert display["priority_colours"] == {p.value: PRIORITY_COLOURS[p] for p in PRIORITIES}
    assert display["level_colours"] == {lv.value: LEVEL_COLOURS[lv] for lv in ALARM_LEVELS}
