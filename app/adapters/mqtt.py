"""MQTT: devices publish batches to a broker; Vigil subscribes, stores, and answers each one.

Topic layout (prefix `vigil/v1` by default, VIGIL_MQTT_TOPIC_PREFIX):

- `{prefix}/devices/{device_id}/observations`, device → Vigil, QoS 1: one batch, the JSON of
  `POST /api/v1/observations` plus `token`, the device's (or its site gateway's) credential
  (`vgd_…`), checked on every batch; `device_id` may be left out (the topic names it) and
  an optional `ref` is echoed in the answer.
- `{prefix}/devices/{device_id}/ack`, Vigil → device, QoS 1: the answer HTTP would give,
  `{"ref": ..., "status": 201, "accepted": 4, "stored": 4, "duplicates": 0, ...}` or
  `{"ref": ..., "status": 422, "detail": [...], "code": "invalid_request"}`. A batch
  delivered twice (QoS 1 is at least once) is stored once, its samples in `duplicates`.
- `{prefix}/devices/{device_id}/alerts`, device → Vigil, QoS 1: one of the device's own
  alerts, the JSON of `POST /api/v1/alerts` plus `token` (and optional `ref`);
  `device_id` may be left out. Answered on `ack` like a batch (status 200, or the error).
- `{prefix}/devices/{device_id}/status`, device → Vigil, retained: `online` when it connects,
  and `offline` as its MQTT last will. Vigil reports both on the adapter event bus; an
  `offline` (or a lost broker) is a lost device link for the alarm engine. Status carries no
  credential (a last will is fixed at connect): restrict who may publish on a device's
  topics with the broker's ACLs (docs/SECURITY.md).

Vigil keeps a persistent session (clean session off, fixed client id), so QoS 1 batches
published while it was away are delivered when it reconnects.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import ssl
from typing import Any

import aiomqtt
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.adapters.alerts import AlertAccepted, validate_alert
from app.adapters.base import (
    BaseAdapter,
    DeviceRef,
    accepted_reply,
    error_reply,
    validate_batch,
)
from app.adapters.events import ConnectionState
from app.errors import FieldProblem, InvalidRequest, VigilError
from app.observability.metrics import door_answered

log = logging.getLogger(__name__)


class MqttSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VIGIL_MQTT_", extra="ignore")

    host: str = Field(default="127.0.0.1", description="Broker host.")
    port: int = Field(default=1883, ge=1, le=65535, description="Broker port (8883 with TLS).")
    username: str | None = Field(default=None, description="Broker user, if it asks for one.")
    password: SecretStr | None = Field(default=None, description="Broker password.")
    client_id: str = Field(
        default_factory=lambda: f"vigil-{socket.gethostname()}",
        description="MQTT client id; keep it fixed so that the broker keeps Vigil's session.",
    )
    topic_prefix: str = Field(default="vigil/v1", description="Topics start with this.")
    qos: int = Field(default=1, ge=0, le=2, description="QoS of subscriptions and answers.")
    keepalive_s: int = Field(default=30, ge=5, description="MQTT keepalive.")
    persistent_session: bool = Field(
        default=True, description="Ask the broker to queue QoS≥1 batches while Vigil is away."
    )
    tls: bool = Field(default=False, description="Connect with TLS.")
    ca_file: str | None = Field(default=None, description="CA bundle for the broker's cert.")
    reconnect_min_s: float = Field(default=1.0, gt=0, description="First reconnect wait.")
    reconnect_max_s: float = Field(default=30.0, gt=0, description="Longest reconnect wait.")


class MqttAdapter(BaseAdapter):
    """Subscribes to devices' batches and status on an MQTT broker."""

    name = "mqtt"
    expected_errors = (OSError, aiomqtt.MqttError)

    def __init__(self, settings: MqttSettings | None = None, name: str | None = None) -> None:
        super().__init__(name)
        self.settings = settings or MqttSettings()
        self.restart_initial_s = self.settings.reconnect_min_s
        self.restart_max_s = self.settings.reconnect_max_s
        self._devices: dict[str, DeviceRef] = {}  # devices seen online since connecting

    def topic(self, device_id: str, leaf: str) -> str:
        return f"{self.settings.topic_prefix}/devices/{device_id}/{leaf}"

    async def run(self) -> None:
        settings = self.settings
        tls = ssl.create_default_context(cafile=settings.ca_file) if settings.tls else None
        reason = "broker connection lost"
        try:
            async with aiomqtt.Client(
                settings.host,
                settings.port,
                username=settings.username,
                password=settings.password.get_secret_value() if settings.password else None,
                identifier=settings.client_id,
                clean_session=not settings.persistent_session,
                keepalive=settings.keepalive_s,
                tls_context=tls,
                logger=log,
                # paho leaves Nagle on: our answer would wait behind the PUBACK paho just
                # sent until the broker's delayed ACK (tens of ms), capping at ~50 batches/s.
                socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
            ) as client:
                for leaf in ("observations", "alerts", "status"):
                    await client.subscribe(self.topic("+", leaf), qos=settings.qos)
                await self.mark_connected(f"subscribed at {settings.host}:{settings.port}")
                async for message in client.messages:
                    await self._on_message(client, message)
        except asyncio.CancelledError:
            reason = "Vigil stopped"
            raise
        finally:
            # Without the broker, no device on it can reach Vigil: each link is lost.
            devices, self._devices = self._devices, {}
            for device in devices.values():
                await self.publish_link(ConnectionState.DISCONNECTED, device, reason=reason)

    async def _on_message(self, client: aiomqtt.Client, message: aiomqtt.Message) -> None:
        parts = message.topic.value.split("/")
        prefix = self.settings.topic_prefix.split("/")
        if len(parts) != len(prefix) + 3 or parts[-3] != "devices":
            return
        device_id, leaf = parts[-2], parts[-1]
        payload = message.payload if isinstance(message.payload, bytes) else b""
        try:
            if leaf in ("observations", "alerts"):
                if leaf == "observations":
                    reply = await self._batch(device_id, payload)
                    door_answered("mqtt", reply["status"])
                else:
                    reply = await self._alert(device_id, payload)
                await client.publish(
                    self.topic(device_id, "ack"),
                    json.dumps(reply, separators=(",", ":")),
                    qos=self.settings.qos,
                )
            elif leaf == "status":
                await self._status(device_id, payload)
        except aiomqtt.MqttError:
            raise  # the broker is gone: the supervisor reconnects
        except Exception:
            # One device's bad message must not end the subscription for everyone.
            log.exception("mqtt: message on %s could not be handled", message.topic.value)

    async def _batch(self, device_id: str, payload: bytes) -> dict[str, Any]:
        try:
            ref, token, data = _unwrap(device_id, payload)
            stored = await self.context.submit_with_credential(token, validate_batch(data))
        except _NotJson as exc:
            return exc.reply("publish one batch per message")
        except VigilError as exc:
            return {"ref": _ref_of(payload), **error_reply(exc)}
        device = DeviceRef(stored.device_identifier, stored.chair_id, stored.site_id)
        await self._seen(device)
        return {"ref": ref, **accepted_reply(stored)}

    async def _alert(self, device_id: str, payload: bytes) -> dict[str, Any]:
        try:
            ref, token, data = _unwrap(device_id, payload)
            alert = await self.context.submit_alert(
                validate_alert(data),
                credential=token,
                adapter=self.name,
                reference="" if ref is None else str(ref),
            )
        except _NotJson as exc:
            return exc.reply("publish one alert per message")
        except VigilError as exc:
            return {"ref": _ref_of(payload), **error_reply(exc)}
        await self._seen(DeviceRef(alert.device_identifier, alert.chair_id, alert.site_id))
        return {"ref": ref, "status": 200, **AlertAccepted.of(alert).model_dump(mode="json")}

    async def _status(self, device_id: str, payload: bytes) -> None:
        state = payload.decode("utf-8", "replace").strip().lower()
        if state not in ("online", "offline"):
            return  # an empty retained message clears the status; anything else is noise
        device = await self.context.devices.find([device_id])
        if device is None:
            log.info("mqtt: status %s from unregistered device %r", state, device_id)
            return
        if state == "online":
            await self._seen(device, force=True)
        else:
            self._devices.pop(device.identifier, None)
            await self.publish_link(
                ConnectionState.DISCONNECTED, device, reason="device offline (last will)"
            )

    async def _seen(self, device: DeviceRef, force: bool = False) -> None:
        if force or self._devices.get(device.identifier) != device:
            self._devices[device.identifier] = device
            await self.publish_link(ConnectionState.CONNECTED, device)


class _NotJson(Exception):
    def reply(self, hint: str) -> dict[str, Any]:
        return {
            "ref": None,
            "status": 400,
            "detail": f"payload is not JSON: {hint}",
            "code": "invalid_json",
        }


def _unwrap(device_id: str, payload: bytes) -> tuple[Any, str | None, Any]:
    """(ref, token, body) of a device's JSON message on its topic.

    The broker cannot tell Vigil who published: the device's credential rides in the
    message (`token`), and is checked on every message. `device_id` may be left out (the
    topic names it) and must match the topic's if given.
    """
    try:
        data = json.loads(payload)
    except ValueError:
        raise _NotJson() from None
    if not isinstance(data, dict):
        return None, None, data
    ref = data.pop("ref", None)
    token = data.pop("token", None)
    named = data.setdefault("device_id", device_id)
    if named != device_id:
        raise InvalidRequest(
            [
                FieldProblem(
                    ("body", "device_id"),
                    f"device_id {named!r} differs from the topic's {device_id!r}",
                )
            ]
        )
    return ref, token if isinstance(token, str) else None, data


def _ref_of(payload: bytes) -> Any:
    """The `ref` of a message that was refused, to answer with (None if it has none)."""
    try:
        data = json.loads(payload)
    except ValueError:
        return None
    return data.get("ref") if isinstance(data, dict) else None
