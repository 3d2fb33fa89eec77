"""MLLP over TLS, and mutual TLS: real certificates (trustme's test CA), a real socket."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from tests.adapters.conftest import (
    END_BLOCK,
    MLLP_ENV,
    START_BLOCK,
    AdapterServer,
    ack_fields,
    start_adapter_server,
    stored,
)
from tests.adapters.test_hl7_mllp import HR, oru
from tests.conftest import Clinic

DEVICE = "0011223344TLS"


@pytest.fixture
def authority() -> trustme.CA:
    return trustme.CA()


def _tls_server(
    clinic: Clinic, tmp_path: Path, authority: trustme.CA, require_client_cert: bool
) -> Iterator[AdapterServer]:
    cert = authority.issue_cert("127.0.0.1")
    cert_file, key_file, ca_file = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    authority.cert_pem.write_to_path(str(ca_file))
    env = {
        **MLLP_ENV,
        "VIGIL_MLLP_TLS_CERT_FILE": str(cert_file),
        "VIGIL_MLLP_TLS_KEY_FILE": str(key_file),
    }
    if require_client_cert:
        env["VIGIL_MLLP_TLS_CLIENT_CA_FILE"] = str(ca_file)
    yield from start_adapter_server(clinic, tmp_path, env)


@pytest.fixture
def tls_server(
    sqlite_clinic: Clinic, tmp_path: Path, authority: trustme.CA
) -> Iterator[AdapterServer]:
    yield from _tls_server(sqlite_clinic, tmp_path, authority, require_client_cert=False)


@pytest.fixture
def mutual_tls_server(
    sqlite_clinic: Clinic, tmp_path: Path, authority: trustme.CA
) -> Iterator[AdapterServer]:
    yield from _tls_server(sqlite_clinic, tmp_path, authority, require_client_cert=True)


def exchange(port: int, context: ssl.SSLContext, message: str) -> bytes:
    """One framed message over TLS; the ACK message back (without framing)."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        tls.sendall(START_BLOCK + message.encode() + END_BLOCK)
        buffer = b""
        while END_BLOCK not in buffer:
            chunk = tls.recv(65536)
            if not chunk:
                raise ConnectionError("closed by the server")
            buffer += chunk
        return buffer.split(END_BLOCK, 1)[0][1:]


def test_messages_are_stored_over_tls_and_plain_tcp_is_not_understood(
    tls_server: AdapterServer, authority: trustme.CA
) -> None:
    server = tls_server
    server.register(DEVICE, server.chair_ids()[0])
    port = server.adapter_port("mllp")
    client = ssl.create_default_context()
    authority.configure_trust(client)
    ack = exchange(port, client, oru("tls-1", f"1|{HR.format(71)}", device=DEVICE))
    assert ack_fields(ack)[0] == "AA"
    assert [value for _, value, _ in stored(server, DEVICE)] == [71]
    # A client that does not trust Vigil's certificate refuses the connection itself.
    with pytest.raises(ssl.SSLCertVerificationError):
        exchange(port, ssl.create_default_context(), oru("tls-2", f"1|{HR.format(72)}"))


def test_mutual_tls_refuses_a_gateway_without_a_client_certificate(
    mutual_tls_server: AdapterServer, authority: trustme.CA
) -> None:
    server = mutual_tls_server
    server.register(DEVICE, server.chair_ids()[0])
    port = server.adapter_port("mllp")
    anonymous = ssl.create_default_context()
    authority.configure_trust(anonymous)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        exchange(port, anonymous, oru("mtls-1", f"1|{HR.format(70)}", device=DEVICE))
    assert stored(server, DEVICE) == []

    gateway = ssl.create_default_context()
    authority.configure_trust(gateway)
    authority.issue_cert("gateway.clinic.example").configure_cert(gateway)
    ack = exchange(port, gateway, oru("mtls-2", f"1|{HR.format(73)}", device=DEVICE))
    assert ack_fields(ack)[0] == "AA"
    assert [value for _, value, _ in stored(server, DEVICE)] == [73]
