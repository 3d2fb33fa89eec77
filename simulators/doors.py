"""The public doors a simulated device can use to reach Vigil: HTTP, HL7 v2 over MLLP, MQTT.

Each door delivers one device's batch and says what Vigil answered, in HTTP's terms
(201 stored, 4xx refused with Vigil's own words, 5xx lost), so the sender treats every
door alike. Nothing here imports Vigil: the codes are the public wire vocabulary of
docs/API.md and docs/ADAPTERS.md.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import aiomqtt
import httpx

INGEST = "/api/v1/observations"


class DoorUnreachable(ConnectionError):
    """The door could not be reached (server, listener or broker down)."""


@dataclass(frozen=True)
class Reply:
    status: int  # as HTTP: 201 stored; 4xx refused; 5xx lost
    detail: Any  # Vigil's own words for a refusal (a string, or a 422's problem list)


class Door(Protocol):
    name: str

    async def ready(self, timeout_s: float) -> None:
        """Return once the door answers, or raise DoorUnreachable saying why."""

    async def send(self, device: str, observations: list[dict[str, Any]]) -> Reply:
        """Deliver one batch; raise DoorUnreachable if the link is down."""

    async def close(self) -> None: ...


async def _retry_until(deadline_s: float, attempt: Any, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + deadline_s
    while True:
        try:
            await attempt()
            return
        except (OSError, DoorUnreachable, aiomqtt.MqttError) as exc:
            problem = f"{type(exc).__name__}: {exc}"
        if loop.time() >= deadline:
            raise DoorUnreachable(f"cannot reach {what} ({problem})")
        await asyncio.sleep(0.2)


class HttpDoor:
    """POST /api/v1/observations, the reference door."""

    name = "http"

    def __init__(self, base_url: str, token: str | None = None) -> None:
        self.base_url = base_url
        # The device's (or its site gateway's) credential, as a real device would send it.
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.AsyncClient(base_url=base_url, timeout=10.0, headers=headers)

    async def ready(self, timeout_s: float) -> None:
        async def healthz() -> None:
            try:
                response = await self._client.get("/healthz")
            except httpx.TransportError as exc:
                raise DoorUnreachable(str(exc) or type(exc).__name__) from exc
            if response.status_code != 200:
                raise DoorUnreachable(f"/healthz answered {response.status_code}")

        await _retry_until(
            timeout_s, healthz, f"Vigil at {self.base_url}; is `vigil serve` running there?"
        )

    async def send(self, device: str, observations: list[dict[str, Any]]) -> Reply:
        try:
            response = await self._client.post(
                INGEST, json={"device_id": device, "observations": observations}
            )
        except httpx.TransportError as exc:
            raise DoorUnreachable(str(exc) or type(exc).__name__) from exc
        if response.status_code < 400:
            return Reply(response.status_code, None)
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text[:500] or response.reason_phrase
        return Reply(response.status_code, detail)

    async def close(self) -> None:
        await self._client.aclose()


# --- HL7 v2 over MLLP -------------------------------------------------------------------------

# vital → (MDC code, MDC reference id, unit code, unit reference id): IEEE 11073, as gateways send.
MDC: dict[str, tuple[int, str, int, str]] = {
    "hr": (147842, "MDC_ECG_HEART_RATE", 264864, "MDC_DIM_BEAT_PER_MIN"),
    "pr": (149530, "MDC_PULS_OXIM_PULS_RATE", 264864, "MDC_DIM_BEAT_PER_MIN"),
    "spo2": (150456, "MDC_PULS_OXIM_SAT_O2", 262688, "MDC_DIM_PERCENT"),
    "pi": (150488, "MDC_PULS_OXIM_PERF_REL", 262688, "MDC_DIM_PERCENT"),
    "nibp_sys": (150021, "MDC_PRESS_BLD_NONINV_SYS", 266016, "MDC_DIM_MMHG"),
    "nibp_dia": (150022, "MDC_PRESS_BLD_NONINV_DIA", 266016, "MDC_DIM_MMHG"),
    "nibp_mean": (150023, "MDC_PRESS_BLD_NONINV_MEAN", 266016, "MDC_DIM_MMHG"),
}
START, END = b"\x0b", b"\x1c\x0d"


def _hl7_time(iso_time: str) -> str:
    moment = datetime.fromisoformat(iso_time.replace("Z", "+00:00")).astimezone(UTC)
    return moment.strftime("%Y%m%d%H%M%S.") + f"{moment.microsecond // 1000:03d}+0000"


def oru_r01(device: str, observations: list[dict[str, Any]], control_id: str) -> str:
    """An IHE PCD-01 style ORU^R01 from gateway `device`: one OBX per observation.

    Quality flags have no place in this profile and are not sent over this door.
    """
    now = _hl7_time(datetime.now(UTC).isoformat())
    segments = [
        f"MSH|^~\\&|VIGIL_SIM^{device}^EUI-64|SIMULATOR|||{now}||ORU^R01^ORU_R01|{control_id}"
        "|P|2.6|||AL|NE",
        "PID|||SIMULATED",
        "PV1||I",
        f"OBR|1|||182777000^monitoring of patient^SCT|||{now}",
    ]
    for n, item in enumerate(observations, start=1):
        code, ref, unit_code, unit_ref = MDC[item["vital"]]
        segments.append(
            f"OBX|{n}|NM|{code}^{ref}^MDC|1.0.0.{n}|{item['value']:g}|{unit_code}^{unit_ref}^MDC"
            f"|||||R|||{_hl7_time(item['device_time'])}||||{device}"
        )
    return "\r".join(segments) + "\r"


class MllpDoor:
    """One TCP connection per device, as each gateway or monitor keeps its own."""

    name = "mllp"

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._links: dict[str, tuple[asyncio.StreamReader, asyncio.StreamWriter]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def ready(self, timeout_s: float) -> None:
        async def probe() -> None:
            _, writer = await asyncio.open_connection(self.host, self.port)
            writer.close()
            await writer.wait_closed()

        await _retry_until(timeout_s, probe, f"Vigil's MLLP listener at {self.host}:{self.port}")

    async def send(self, device: str, observations: list[dict[str, Any]]) -> Reply:
        async with self._locks.setdefault(device, asyncio.Lock()):
            try:
                if device not in self._links:
                    self._links[device] = await asyncio.open_connection(self.host, self.port)
                reader, writer = self._links[device]
                message = oru_r01(device, observations, uuid.uuid4().hex[:20])
                writer.write(START + message.encode("utf-8") + END)
                await writer.drain()
                ack = await asyncio.wait_for(reader.readuntil(END), timeout=10)
            except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
                self._links.pop(device, None)
                raise DoorUnreachable(f"MLLP {self.host}:{self.port}: {exc!r}") from exc
        return _ack_reply(ack.strip(START + END).decode("utf-8", "replace"))

    async def close(self) -> None:
        for _, writer in self._links.values():
            writer.close()
        self._links.clear()


def _ack_reply(ack: str) -> Reply:
    """MSA-1 AA → 201; AE/AR → 422 with MSA-3, Vigil's reason."""
    for segment in ack.split("\r"):
        fields = segment.split("|")
        if fields[0] == "MSA":
            code = fields[1] if len(fields) > 1 else ""
            text = fields[3] if len(fields) > 3 else ""
            if code == "AA":
                return Reply(201, None)
            return Reply(500 if code == "AR" and not text else 422, f"{code}: {text}")
    return Reply(502, f"no MSA segment in the ACK: {ack[:200]!r}")


# --- MQTT -------------------------------------------------------------------------------------


class MqttDoor:
    """Publish each batch on vigil/v1/devices/{device}/observations; Vigil answers on …/ack."""

    name = "mqtt"

    def __init__(
        self, host: str, port: int, prefix: str = "vigil/v1", token: str | None = None
    ) -> None:
        self.host, self.port, self.prefix = host, port, prefix.rstrip("/")
        self.token = token  # sent in each batch: the broker cannot vouch for the publisher
        self._client: aiomqtt.Client | None = None
        self._listener: asyncio.Task[None] | None = None
        self._waiting: dict[int, asyncio.Future[Reply]] = {}
        self._refs = itertools.count(1)

    async def ready(self, timeout_s: float) -> None:
        async def connect() -> None:
            client = aiomqtt.Client(
                self.host, self.port, identifier=f"vigil-sim-{uuid.uuid4().hex[:8]}"
            )
            await client.__aenter__()
            self._client = client

        await _retry_until(timeout_s, connect, f"the MQTT broker at {self.host}:{self.port}")
        assert self._client is not None
        await self._client.subscribe(f"{self.prefix}/devices/+/ack", qos=1)
        self._listener = asyncio.create_task(self._answers())

    async def _answers(self) -> None:
        assert self._client is not None
        async for message in self._client.messages:
            payload = message.payload
            try:
                answer = json.loads(payload if isinstance(payload, (bytes, str)) else b"")
            except ValueError:
                continue
            if not isinstance(answer, dict) or not isinstance(answer.get("ref"), int):
                continue
            future = self._waiting.pop(answer["ref"], None)
            if future is not None and not future.done():
                future.set_result(Reply(int(answer.get("status", 502)), answer.get("detail")))

    async def send(self, device: str, observations: list[dict[str, Any]]) -> Reply:
        if self._client is None:
            raise DoorUnreachable("not connected to the MQTT broker")
        ref = next(self._refs)
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._waiting[ref] = future
        body: dict[str, Any] = {"device_id": device, "observations": observations, "ref": ref}
        if self.token:
            body["token"] = self.token
        try:
            await self._client.publish(
                f"{self.prefix}/devices/{device}/observations", json.dumps(body), qos=1
            )
            return await asyncio.wait_for(future, timeout=10)
        except (aiomqtt.MqttError, TimeoutError) as exc:
            self._waiting.pop(ref, None)
            raise DoorUnreachable(f"MQTT {self.host}:{self.port}: {exc!r}") from exc

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
        if self._client is not None:
            await self._client.__aexit__(None, None, None)
