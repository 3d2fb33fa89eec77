"""A lost device link is a technical alarm on its chair, on every screen; reconnecting clears it."""

from __future__ import annotations

import json
from typing import Any

from websockets.sync.client import ClientConnection, connect

from tests.adapters.conftest import AdapterServer, MllpClient, ack_fields
from tests.adapters.test_hl7_mllp import HR, oru
from tests.test_alarms_server import alarm_message

LINK_RULE = "device_link_lost"


def link_alarm(ws: ClientConnection, event: str) -> dict[str, Any]:
    return alarm_message(ws, LINK_RULE, event, timeout=10)


def test_a_gateway_that_drops_its_connection_alarms_on_its_chair(
    mllp_server: AdapterServer,
) -> None:
    server = mllp_server
    device = "0011223344556677"
    chair = server.chair_ids()[0]
    server.register(device, chair)
    screen = f"{server.ws_url}/ws/sites/{server.clinic.site_id}"
    with connect(screen, additional_headers=server.clinic.auth("nurse")) as ws:
        assert json.loads(ws.recv(timeout=5))["type"] == "snapshot"
        with MllpClient(server.adapter_port("mllp")) as gateway:
            assert (
                ack_fields(gateway.send(oru("l-1", f"1|{HR.format(80)}", device=device)))[0] == "AA"
            )
        raised = link_alarm(ws, "raised")
        assert raised["chair_id"] == chair
        alarm = raised["alarm"]
        assert alarm["kind"] == "technical"
        assert alarm["text"] == f"{device} disconnected"

        with MllpClient(server.adapter_port("mllp")) as gateway:
            assert (
                ack_fields(gateway.send(oru("l-2", f"1|{HR.format(81)}", device=device)))[0] == "AA"
            )
            cleared = link_alarm(ws, "cleared")
        assert cleared["alarm"]["alarm_id"] == alarm["alarm_id"]
