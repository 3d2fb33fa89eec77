"""HL7 v2 over MLLP: a TCP listener for patient-monitor gateways (IHE PCD-01 / PCD-04).

Framing is python-hl7's (`hl7.mllp`); each message gets exactly one original-mode ACK:
AA when its vitals are stored (or it carried none), AE or AR with the reason otherwise.
A bad frame or message is answered and the connection goes on; one connection's
failure never reaches another's or the listener.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import socket
import ssl
import sys
from collections import OrderedDict
from dataclasses import dataclass, replace
from ipaddress import IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from pathlib import Path
from typing import Annotated, Any

from hl7.mllp import InvalidBlockError, start_hl7_server  # type: ignore[import-untyped]
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.adapters.base import AdapterContext, BaseAdapter, DeviceRef, validate_batch
from app.adapters.events import ConnectionState, DeviceAlert
from app.adapters.hl7_messages import (
    ERR_INTERNAL,
    ERR_REQUIRED_FIELD,
    ERR_SEGMENT_SEQUENCE,
    ERR_UNKNOWN_KEY,
    ERR_UNSUPPORTED_EVENT,
    ERR_UNSUPPORTED_MESSAGE_TYPE,
    Header,
    Hl7Error,
    ParsedMessage,
    VitalRows,
    build_ack,
    decode,
    local_code_table,
    map_vitals,
    offset_zone,
    parse_message,
    read_alert,
    sequence_of,
    sniff_control_id,
)
from app.errors import InvalidRequest, NotFoundError, VigilError
from app.observability.metrics import hl7_answered
from app.timeutil import utcnow

log = logging.getLogger(__name__)


class MllpSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VIGIL_MLLP_", extra="ignore")

    host: str = Field(
        default="127.0.0.1", description="Address to listen on; 0.0.0.0 for gateways elsewhere."
    )
    port: int = Field(default=2575, ge=0, le=65535, description="TCP port (2575 is HL7's).")
    # MLLP has no credential of its own: who may connect is decided by address, and TLS
    # (optionally with client certificates) protects the link where the network does not.
    allowed_sources: Annotated[list[IPv4Network | IPv6Network], NoDecode] = Field(
        default_factory=lambda: [ip_network("127.0.0.1/32"), ip_network("::1/128")],
        description="Source addresses or networks allowed to connect, comma-separated "
        "(e.g. 10.20.0.0/24,10.20.1.7). Connections from anywhere else are closed unread.",
    )
    tls_cert_file: Path | None = Field(
        default=None, description="Serve MLLP over TLS with this certificate (PEM)."
    )
    tls_key_file: Path | None = Field(default=None, description="The certificate's key (PEM).")
    tls_client_ca_file: Path | None = Field(
        default=None,
        description="Require client certificates signed by this CA (PEM): mutual TLS.",
    )
    max_message_bytes: int = Field(
        default=1_048_576, ge=1024, description="Largest message accepted; larger ones get AR."
    )
    timezone: str | None = Field(
        default=None,
        description="IANA zone of device times sent without an offset (e.g. Europe/Amsterdam); "
        "unset: the server's local zone.",
    )
    local_codes: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        description="Vendor-local OBX-3 codes by sending application, as JSON: "
        '{"NIHON KOHDEN": {"007000": "spo2"}}.',
    )
    application: str = Field(default="VIGIL", description="MSH-3 of Vigil's ACKs.")
    facility: str = Field(default="", description="MSH-4 of Vigil's ACKs.")
    keepalive_s: float = Field(
        default=10.0,
        ge=0,
        description="TCP keepalive idle time: a silently dead peer is noticed within about "
        "twice this. 0 turns keepalive off.",
    )
    idle_timeout_s: float = Field(
        default=300.0,
        ge=0,
        description="Close a connection that starts no message for this long (a gateway "
        "reconnects when it has data). 0: never.",
    )
    frame_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="Close a connection whose message, once begun, is not complete this "
        "long after its first byte (a half-sent frame holds its buffer until then).",
    )
    resend_cache_bytes: int = Field(
        default=4 * 1024 * 1024,
        ge=0,
        description="Memory for the recent messages remembered so that a resend after a lost "
        "ACK is answered without storing it twice; the oldest are forgotten first. 0: none.",
    )

    @field_validator("allowed_sources", mode="before")
    @classmethod
    def _split_sources(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        return [ip_network(item, strict=False) if isinstance(item, str) else item for item in value]

    def allows(self, host: str | None) -> bool:
        if not host:
            return False
        try:
            address = ip_address(host)
        except ValueError:
            return False
        if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.allowed_sources)

    def ssl_context(self) -> ssl.SSLContext | None:
        if self.tls_cert_file is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.tls_cert_file, self.tls_key_file)
        if self.tls_client_ca_file is not None:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(self.tls_client_ca_file)
        return context

    # Checked here so that a bad setting stops the adapter at creation, with the reason,
    # instead of failing (and being retried) each time it starts.
    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        offset_zone(value)
        return value

    @field_validator("local_codes")
    @classmethod
    def _known_vitals(cls, value: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        local_code_table(value)
        return value


@dataclass(frozen=True, slots=True)
class Outcome:
    """One message handled: the answer, and the device it came from if known."""

    ack_code: str  # AA, AE or AR
    control_id: str  # the MSH-10 answered
    text: str  # why (or what was stored)
    header: Header | None = None
    error_code: str | None = None  # HL7 table 0357, on a NACK
    warning: bool = False  # accepted, with rows skipped
    device: DeviceRef | None = None
    stored: int = 0
    ack: bytes = b""  # the ACK as sent, in the message's charset


@dataclass(frozen=True, slots=True)
class Remembered:
    """What a stored message was answered, in brief: all a resend's answer needs."""

    summary: str
    device: DeviceRef | None


# A remembered answer's text is cut to this: the whole one can be hundreds of kilobytes
# (a note per skipped OBX row), and a resend's ACK only needs to say it was stored.
SUMMARY_CHARS = 160
# The OrderedDict's node and its hash-table slot, per entry (CPython, 64-bit).
_ENTRY_OVERHEAD = 100


class ResendCache:
    """Recent messages by digest, with their answers in brief, bounded in bytes: the
    oldest are forgotten first. The byte count is what the entries hold in memory as
    `sys.getsizeof` counts it (key, entry, summary, device reference)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[bytes, tuple[Remembered, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, digest: bytes) -> Remembered | None:
        found = self._entries.get(digest)
        return None if found is None else found[0]

    def put(self, digest: bytes, text: str, device: DeviceRef | None) -> None:
        if len(text) > SUMMARY_CHARS:
            text = text[: SUMMARY_CHARS - 1] + "…"
        entry = Remembered(text, device)
        cost = _ENTRY_OVERHEAD + sys.getsizeof(digest) + sys.getsizeof(entry)
        cost += sys.getsizeof(entry.summary)
        if device is not None:
            cost += sys.getsizeof(device) + sys.getsizeof(device.identifier)
        if cost > self.max_bytes:
            return
        earlier = self._entries.pop(digest, None)
        if earlier is not None:
            self.bytes -= earlier[1]
        self._entries[digest] = (entry, cost)
        self.bytes += cost
        while self.bytes > self.max_bytes:
            _, (_, freed) = self._entries.popitem(last=False)
            self.bytes -= freed


class Hl7Processor:
    """Turns one framed HL7 message into stored samples or a device alert, and an ACK."""

    def __init__(self, context: AdapterContext, settings: MllpSettings, adapter: str) -> None:
        self._context = context
        self._settings = settings
        self._adapter = adapter
        self._zone = offset_zone(settings.timezone)
        self._local_codes = local_code_table(settings.local_codes)
        # Messages remembered: a sender that lost our ACK resends, and must not store twice.
        self.recent = ResendCache(settings.resend_cache_bytes)

    async def handle(self, raw: bytes) -> Outcome:
        """Never raises: whatever is wrong becomes a NACK that says so."""
        control_id = ""
        header: Header | None = None
        encoding, charset = "ascii", ""  # until the message's own charset is known
        try:
            control_id = sniff_control_id(raw.decode("latin-1"))
            text, encoding, charset = decode(raw)
            control_id = sniff_control_id(text)
            message = parse_message(text, self._zone)
            header = message.header
            control_id = header.control_id
            outcome = await self._process(message, hashlib.blake2b(raw, digest_size=16).digest())
        except Hl7Error as exc:
            outcome = Outcome(exc.ack_code, control_id, exc.message, header, exc.error_code)
        except NotFoundError as exc:
            outcome = Outcome("AE", control_id, exc.message, header, ERR_UNKNOWN_KEY)
        except VigilError as exc:
            outcome = Outcome("AE", control_id, exc.message, header, ERR_INTERNAL)
        except Exception as exc:
            log.exception("mllp: message %r could not be handled", control_id)
            reason = f"internal error ({type(exc).__name__}); the message was not stored"
            outcome = Outcome("AE", control_id, reason, header, ERR_INTERNAL)
        return self._finish(outcome, encoding, charset)

    def reject_frame(self, reason: str) -> Outcome:
        """The answer to bytes that are not one MLLP frame (no message id can be known)."""
        return self._finish(Outcome("AR", "", reason, None, ERR_SEGMENT_SEQUENCE), "ascii", "")

    def _finish(self, outcome: Outcome, encoding: str, charset: str) -> Outcome:
        """Write the ACK, in the message's own charset (MSH-18 says which)."""
        hl7_answered(outcome.ack_code, outcome.error_code)
        if outcome.ack_code != "AA":
            # The reason goes to the sender only: it may quote the message's values.
            log.info(
                "mllp: %s for message %r (HL7 error %s)",
                outcome.ack_code,
                outcome.control_id,
                outcome.error_code,
            )
        ack = build_ack(
            outcome.ack_code,
            outcome.control_id,
            outcome.text,
            outcome.header,
            outcome.error_code,
            application=self._settings.application,
            facility=self._settings.facility,
            warning=outcome.warning,
            charset=charset,
        )
        return replace(outcome, ack=ack.encode(encoding, "replace"))

    async def _process(self, message: ParsedMessage, digest: bytes) -> Outcome:
        header = message.header
        if header.message_code != "ORU":
            raise Hl7Error(
                f"unsupported message type {header.message_code or '(empty)'}: Vigil accepts "
                "ORU^R01 (observations) and ORU^R40 (alerts)",
                error_code=ERR_UNSUPPORTED_MESSAGE_TYPE,
            )
        if header.trigger not in ("R01", "R40", ""):
            raise Hl7Error(
                f"unsupported event ORU^{header.trigger}: Vigil accepts R01 and R40",
                error_code=ERR_UNSUPPORTED_EVENT,
            )
        if not header.control_id.strip():
            raise Hl7Error("MSH-10 (message control id) is empty", error_code=ERR_REQUIRED_FIELD)
        # A resend after a lost ACK is the same bytes. Message ids alone are not enough: a
        # gateway that restarts may count its MSH-10 from 1 again, and those are new data.
        earlier = self.recent.get(digest)
        if earlier is not None:
            text = f"duplicate of a message already stored; {earlier.summary}"
            return Outcome("AA", header.control_id, text, header, device=earlier.device)
        device = await self._context.devices.find(message.device_candidates)
        if device is None:
            tried = ", ".join(repr(c) for c in message.device_candidates[:6])
            raise Hl7Error(
                f"unknown device: none of {tried} is registered; register one with "
                "POST /api/v1/devices"
                if tried
                else "unknown device: the message names none (OBX-18, PV1-3, MSH-3, MSH-4)",
                ack_code="AE",
                error_code=ERR_UNKNOWN_KEY,
            )
        if header.trigger == "R40":
            outcome = await self._alert(message, device)
        else:
            outcome = await self._report(message, device)
        self.recent.put(digest, outcome.text, outcome.device)
        return outcome

    async def _report(self, message: ParsedMessage, device: DeviceRef) -> Outcome:
        received = utcnow()
        mapping = map_vitals(message, received, self._local_codes)
        header = message.header
        warning = bool(mapping.notes)
        if not mapping.values:
            text = _join("no vital signs Vigil records in this message", mapping.notes)
            return Outcome("AA", header.control_id, text, header, warning=warning, device=device)
        try:
            batch = validate_batch(
                {"device_id": device.identifier, "observations": sequence_of(mapping.values)}
            )
            stored = await self._context.submit(batch)
        except InvalidRequest as exc:
            raise Hl7Error(_problems(exc, mapping), ack_code="AE") from None
        count = len(stored.observations)
        where = "" if stored.chair_id is not None else "; bound to no chair: kept as unbound"
        if stored.duplicates:  # sent before (its ACK lost?): kept once, as first stored
            where += f"; {stored.duplicates} values already stored, not stored again"
        text = _join(f"stored {count} values{where}", mapping.notes)
        bound = DeviceRef(stored.device_identifier, stored.chair_id, stored.site_id)
        return Outcome(
            "AA", header.control_id, text, header, warning=warning, device=bound, stored=count
        )

    async def _alert(self, message: ParsedMessage, device: DeviceRef) -> Outcome:
        received = utcnow()
        alert = read_alert(message, received)
        await self._context.events.publish(
            DeviceAlert(
                adapter=self._adapter,
                device_identifier=device.identifier,
                chair_id=device.chair_id,
                site_id=device.site_id,
                device_time=alert.device_time,
                received_time=received,
                alert_code=alert.code,
                alert_name=alert.name,
                text=alert.text,
                priority=alert.priority,
                source=alert.source,
                phase=alert.phase,
                state=alert.state,
                vital=alert.vital.value if alert.vital else None,
                value=alert.value,
                message_id=message.header.control_id,
                kind=alert.kind,
                active=alert.active,
                alert_id=alert.alert_id,
            )
        )
        state = "" if alert.active else " (ended)"
        text = f"alert received: {alert.name or alert.code} {alert.text}{state}; {alert.kind.value}"
        return Outcome("AA", message.header.control_id, text, message.header, device=device)


def _join(first: str, notes: list[str]) -> str:
    return "; ".join([first, *notes])


def _problems(exc: InvalidRequest, mapping: VitalRows) -> str:
    """Ingest's problems, each pointed at the OBX row it came from."""
    parts = []
    for problem in exc.problems:
        loc = problem.loc
        if len(loc) >= 3 and loc[:2] == ("body", "observations") and isinstance(loc[2], int):
            index = loc[2]
            where = mapping.values[index].observation.label if index < len(mapping.values) else ""
            parts.append(f"{where}: {problem.msg}")
        else:
            parts.append(problem.msg)
    return "; ".join(parts)


class MllpAdapter(BaseAdapter):
    """Listens for MLLP connections from monitors and gateways (IHE PCD-01 DOR → Vigil)."""

    name = "mllp"

    def __init__(self, settings: MllpSettings | None = None, name: str | None = None) -> None:
        super().__init__(name)
        self.settings = settings or MllpSettings()
        self.port: int | None = None  # the bound port, once listening (useful with port 0)
        self._connections: set[asyncio.Task[None]] = set()
        self.processor: Hl7Processor | None = None  # while running

    async def run(self) -> None:
        processor = self.processor = Hl7Processor(self.context, self.settings, self.name)
        loop = asyncio.get_running_loop()

        def on_connect(reader: Any, writer: Any) -> None:
            task = loop.create_task(self._serve(processor, reader, writer))
            self._connections.add(task)
            task.add_done_callback(self._connections.discard)

        server = await start_hl7_server(
            on_connect,
            self.settings.host,
            self.settings.port,
            limit=self.settings.max_message_bytes,
            ssl=self.settings.ssl_context(),
        )
        try:
            self.port = server.sockets[0].getsockname()[1]
            await self.mark_connected(f"listening on {self.settings.host}:{self.port}")
            await server.serve_forever()
        finally:
            server.close()
            for task in list(self._connections):
                task.cancel()
            await asyncio.gather(*self._connections, return_exceptions=True)
            await server.wait_closed()

    async def _serve(self, processor: Hl7Processor, reader: Any, writer: Any) -> None:
        peer = _peer(writer)
        address = writer.get_extra_info("peername")
        host = address[0] if isinstance(address, tuple) and address else None
        if not self.settings.allows(host):
            # Not on the allow-list: closed before a byte is read, so nothing is stored.
            log.warning("mllp: refused a connection from %s (not in allowed_sources)", peer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            return
        _keepalive(writer, self.settings.keepalive_s)
        devices: dict[str, DeviceRef] = {}
        reason = "the device closed the connection"
        log.info("mllp: %s connected", peer)
        try:
            while True:
                try:
                    block = await _read_frame(reader, self.settings)
                except asyncio.IncompleteReadError:
                    break  # end of stream, possibly inside an unfinished frame
                except _Timeout as timeout:
                    reason = timeout.reason
                    break
                except InvalidBlockError:
                    outcome = processor.reject_frame("MLLP frame does not start with <VT> (0x0B)")
                except ValueError:  # python-hl7's report of a frame over the size limit
                    outcome = processor.reject_frame(
                        f"message longer than {self.settings.max_message_bytes} bytes"
                    )
                else:
                    outcome = await processor.handle(bytes(block))
                writer.writeblock(outcome.ack)
                await writer.drain()
                device = outcome.device
                if device is not None and devices.get(device.identifier) != device:
                    devices[device.identifier] = device
                    await self.publish_link(ConnectionState.CONNECTED, device, peer)
        except asyncio.CancelledError:
            reason = "Vigil stopped listening"
            raise
        except OSError as exc:
            reason = f"connection lost: {exc}"
        except Exception:
            log.exception("mllp: connection from %s failed", peer)
            reason = "internal error"
        finally:
            log.info("mllp: %s disconnected (%s)", peer, reason)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            for device in devices.values():
                await self.publish_link(ConnectionState.DISCONNECTED, device, peer, reason)


START_BLOCK, END_BLOCK = b"\x0b", b"\x1c\r"


class _Timeout(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def _read_frame(reader: asyncio.StreamReader, settings: MllpSettings) -> bytes:
    """The next frame's content, as python-hl7's `readblock` reads it (the same errors:
    InvalidBlockError without <VT>, ValueError over the size limit, IncompleteReadError
    at the end of the stream), under two clocks: the next frame must begin within the
    idle timeout, and end within the frame timeout of its first byte."""
    try:
        first = await asyncio.wait_for(reader.readexactly(1), settings.idle_timeout_s or None)
    except TimeoutError:
        raise _Timeout(f"no message for {settings.idle_timeout_s:g} s") from None
    try:
        async with asyncio.timeout(settings.frame_timeout_s):
            try:
                rest = await reader.readuntil(END_BLOCK)
            except asyncio.LimitOverrunError as overrun:
                await _discard_frame(reader, overrun.consumed)
                raise ValueError("frame over the size limit") from None
    except TimeoutError:
        raise _Timeout(
            f"a message begun {settings.frame_timeout_s:g} s ago was not finished"
        ) from None
    if first != START_BLOCK:
        raise InvalidBlockError("Block does not begin with Start Block character <VT>")
    return rest[:-2]


async def _discard_frame(reader: asyncio.StreamReader, consumed: int) -> None:
    """Read past the rest of a frame too long to keep, holding no more of it than the
    reader's limit, up to and including its end."""
    while True:
        await reader.readexactly(consumed)
        try:
            await reader.readuntil(END_BLOCK)
            return
        except asyncio.LimitOverrunError as overrun:
            consumed = overrun.consumed


def _peer(writer: Any) -> str:
    address = writer.get_extra_info("peername")
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return str(address)


def _keepalive(writer: Any, idle_s: float) -> None:
    """Have the kernel probe a quiet peer, so that a pulled cable ends the connection."""
    sock: socket.socket | None = writer.get_extra_info("socket")
    if sock is None or idle_s <= 0:
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if hasattr(socket, "TCP_KEEPIDLE"):  # Linux; elsewhere the system defaults apply
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, max(1, int(idle_s)))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, max(1, int(idle_s) // 3))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)
