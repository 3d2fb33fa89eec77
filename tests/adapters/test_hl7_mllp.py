"""The MLLP listener on a real loopback socket: ACKs, NACKs, resilience, link events."""

from __future__ import annotations

import itertools
import json
import logging
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import hl7  # type: ignore[import-untyped]
import httpx
import pytest
from websockets.sync.client import connect

from app.adapters.events import ConnectionState
from app.adapters.hl7_mllp import MllpAdapter, MllpSettings
from tests.adapters.conftest import (
    HL7_SAMPLES,
    MLLP_ENV,
    AdapterServer,
    MllpClient,
    ack_fields,
    device_times,
    start_adapter_server,
    stored,
)
from tests.conftest import Clinic

_serial = itertools.count(1)


def hl7_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%d%H%M%S+0000")


def oru(
    control_id: str, *obx: str, device: str = "", at: datetime | None = None, bed: str = ""
) -> str:
    """An ORU^R01 from gateway `device` (MSH-3.2) with the given OBX rows (from OBX-1 on)."""
    moment = hl7_time(at or datetime.now(UTC))
    segments = [
        f"MSH|^~\\&|TEST_GW^{device}^EUI-64|CLINIC|||{moment}||ORU^R01^ORU_R01|{control_id}"
        "|P|2.6|||AL|NE",
        "PID|||P1",
        f"PV1||I|{bed}",
        f"OBR|1|||182777000^monitoring of patient^SCT|||{moment}",
        *(f"OBX|{row}" for row in obx),
    ]
    return "\r".join(segments) + "\r"


SPO2 = "NM|150456^MDC_PULS_OXIM_SAT_O2^MDC|1.3.1.1|{}|262688^MDC_DIM_PERCENT^MDC|||||F"
HR = "NM|147842^MDC_ECG_HEART_RATE^MDC|1.2.1.1|{}|264864^MDC_DIM_BEAT_PER_MIN^MDC|||||F"
SYS_KPA = "NM|150021^MDC_PRESS_BLD_NONINV_SYS^MDC|1.1.1.1|{}|268098^MDC_DIM_KILO_PA^MDC|||||F"
DIA_KPA = "NM|150022^MDC_PRESS_BLD_NONINV_DIA^MDC|1.1.1.2|{}|268098^MDC_DIM_KILO_PA^MDC|||||F"


@pytest.fixture
def server(shared_mllp_server: AdapterServer) -> AdapterServer:
    return shared_mllp_server


@pytest.fixture
def device() -> str:
    """A fresh EUI-64-like gateway id for this test, not registered."""
    return f"00112233{next(_serial):08X}"


@pytest.fixture
def bound(server: AdapterServer, device: str) -> str:
    """`device` registered and bound to the first chair."""
    server.register(device, server.chair_ids()[0])
    return device


@pytest.fixture
def client(server: AdapterServer) -> Iterator[MllpClient]:
    with MllpClient(server.adapter_port("mllp")) as mllp:
        yield mllp


def test_unknown_device_gets_ae_naming_what_was_tried(
    server: AdapterServer, client: MllpClient, device: str
) -> None:
    message = oru("m-1", f"1|{SPO2.format(97)}", device=device, bed="INF^^CHAIR-9")
    code, acked, text = ack_fields(client.send(message))
    assert (code, acked) == ("AE", "m-1")
    assert device in text
    assert "bed:INF/CHAIR-9" in text
    assert "is registered" in text

    # The same connection goes on; once registered, the resent message is stored.
    server.register(device)
    code, acked, text = ack_fields(client.send(message))
    assert (code, acked) == ("AA", "m-1"), text
    assert "stored 1 values" in text
    assert "unbound" in text
    assert stored(server, device) == [("spo2", 97, 32)]  # flagged unbound


def test_device_found_by_bed(server: AdapterServer, client: MllpClient, device: str) -> None:
    chair = server.chair_ids()[1]
    bed = f"bed:INF/{device}"
    server.register(bed, chair, kind="bed")
    code, _, text = ack_fields(
        client.send(oru("bed-1", f"1|{HR.format(72)}", bed=f"INF^^{device}"))
    )
    assert code == "AA", text
    assert server.recorder.wait_for_link(bed, ConnectionState.CONNECTED).chair_id == chair


def test_implausible_value_refuses_the_whole_message(
    server: AdapterServer, client: MllpClient, bound: str
) -> None:
    message = oru("bad-1", f"1|{HR.format(72)}", f"2|{SPO2.format(150)}", device=bound)
    code, acked, text = ack_fields(client.send(message))
    assert (code, acked) == ("AE", "bad-1")
    assert "OBX 2 (150456 MDC_PULS_OXIM_SAT_O2)" in text
    assert "plausible range" in text
    assert stored(server, bound) == []  # nothing stored, not even the good HR


def test_kpa_is_converted_and_no_value_forms_are_skipped(
    server: AdapterServer, client: MllpClient, bound: str
) -> None:
    message = oru(
        "kpa-1",
        f"1|{SYS_KPA.format(16)}",
        f"2|{DIA_KPA.format(10.5)}",
        f"3|{SPO2.format(-999)}",
        f"4|{HR.format('')}",
        "5|NM|149530^MDC_PULS_OXIM_PULS_RATE^MDC|1.3.1.2|---|264864^MDC_DIM_BEAT_PER_MIN^MDC",
        "6|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC|1.3.1.1|88|262688^MDC_DIM_PERCENT^MDC|||||W",
        device=bound,
    )
    code, _, text = ack_fields(client.send(message))
    assert code == "AA", text
    assert "stored 2 values" in text
    assert "OBX 3" in text
    assert "no value" in text
    assert "status W" in text
    assert [(v, round(x, 3)) for v, x, _ in stored(server, bound)] == [
        ("nibp_sys", round(16 * 7.50062, 3)),
        ("nibp_dia", round(10.5 * 7.50062, 3)),
    ]
    # The nurse station sees the converted pressure on the bound chair.
    screen = f"{server.ws_url}/ws/sites/{server.clinic.site_id}"
    with connect(screen, additional_headers=server.clinic.auth("nurse")) as ws:
        snapshot = json.loads(ws.recv(timeout=5))
    chair = next(c for c in snapshot["chairs"] if bound in c["devices"])
    assert chair["vitals"]["nibp_sys"]["unit"] == "mm[Hg]"


def test_duplicate_message_is_acknowledged_and_stored_once(
    server: AdapterServer, client: MllpClient, bound: str
) -> None:
    message = oru("dup-1", f"1|{HR.format(71)}", device=bound)
    first = ack_fields(client.send(message))
    second = ack_fields(client.send(message))
    assert first[0] == second[0] == "AA"
    assert "duplicate" in second[2]
    assert stored(server, bound) == [("hr", 71, 0)]


def test_a_restarted_gateway_reusing_message_ids_is_not_a_duplicate(
    server: AdapterServer, client: MllpClient, bound: str
) -> None:
    """Mindray counts MSH-10 from 1: after a restart, "1" again is new data, not a resend."""
    before = datetime.now(UTC) - timedelta(seconds=5)
    first = oru("1", f"1|{HR.format(81)}", device=bound, at=before)
    assert ack_fields(client.send(first))[0] == "AA"
    # Measured later (a different moment): a resend would carry the first one's time.
    after_restart = oru("1", f"1|{HR.format(82)}", device=bound)
    code, _, text = ack_fields(client.send(after_restart))
    assert (code, "duplicate" in text) == ("AA", False)
    assert [x for _, x, _ in stored(server, bound)] == [81, 82]


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        (b"hello, not HL7", "not an HL7 v2 message"),
        (b"MSH", "not an HL7 v2 message"),
        (b"MSH|^~\\&|A|B|||20260101||ADT^A01|x1|P|2.5\rPID|||1", "unsupported message type ADT"),
        (b"MSH|^~\\&|A|B|||20260101||ORU^R30|x2|P|2.5\r", "unsupported event ORU^R30"),
        (b"MSH|^~\\&|A|B|||20260101||ORU^R01||P|2.5\r", "MSH-10"),
        (b"MSH|^~\\&|A|B|||2026XX||ORU^R01|x3|P|2.6\rOBX|1|NM|150456||97|%", "MSH-7"),
        (
            b"MSH|^~\\&|A|B|||||ORU^R01|x4|P|2.6|||||UNICODE UTF-8\rNTE|1||caf\xe9",
            "not valid utf-8",
        ),
    ],
)
def test_bad_messages_get_a_nack_that_says_why(
    client: MllpClient, bound: str, payload: bytes, fragment: str
) -> None:
    code, _, text = ack_fields(client.send(payload))
    assert code == "AR", text
    assert fragment in text
    # The connection is still good for the next message.
    assert ack_fields(client.send(oru("after", f"1|{HR.format(60)}", device=bound)))[0] == "AA"


def test_latin1_message_is_decoded_by_its_declared_charset(client: MllpClient, bound: str) -> None:
    text = oru("latin-1", f"1|{HR.format(64)}", device=bound).replace("|AL|NE", "|AL|NE||8859/1")
    payload = text.replace("PID|||P1", "PID|||P1||Müller").encode("latin-1")
    code, _, reply = ack_fields(client.send(payload))
    assert code == "AA", reply


def test_newline_separated_segments_are_accepted(client: MllpClient, bound: str) -> None:
    message = oru("lf-1", f"1|{HR.format(66)}", device=bound).replace("\r", "\n")
    code, _, text = ack_fields(client.send(message))
    assert code == "AA", text


def test_ack_answers_the_sender(client: MllpClient, bound: str) -> None:
    """GE B40 logs a missing ACK: MSA-2 echoes MSH-10, MSH-5 names the sender back."""
    ack = hl7.parse(client.send(oru("echo-1", f"1|{HR.format(70)}", device=bound)).decode())
    msh = ack.segment("MSH")
    assert str(msh(9)) == "ACK^R01^ACK"
    assert str(msh(5)) == f"TEST_GW^{bound}^EUI-64"
    assert str(msh(12)) == "2.6"
    assert str(ack.segment("MSA")(2)) == "echo-1"


def test_bad_frames_never_harm_the_connection_or_its_neighbours(
    server: AdapterServer, client: MllpClient, bound: str
) -> None:
    port = server.adapter_port("mllp")
    with MllpClient(port) as neighbour:
        # Bytes outside any frame: answered AR, and the stream goes on.
        client.send_raw(b"garbage without a start block\x1c\r")
        code, acked, text = ack_fields(client.read_frame())
        assert (code, acked) == ("AR", "")
        assert "<VT>" in text
        assert ack_fields(client.send(oru("ok-1", f"1|{HR.format(61)}", device=bound)))[0] == "AA"

        # One client drops mid-frame, another resets: nobody else notices.
        with socket.create_connection(("127.0.0.1", port)) as dropper:
            dropper.sendall(b"\x0bMSH|^~\\&|HALF")
        rude = socket.create_connection(("127.0.0.1", port))
        rude.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00" + b"\x00" * 4)
        rude.sendall(b"\x0bMSH|^~\\&|X")
        rude.close()

        assert (
            ack_fields(neighbour.send(oru("ok-2", f"1|{HR.format(62)}", device=bound)))[0] == "AA"
        )
        assert ack_fields(client.send(oru("ok-3", f"1|{HR.format(63)}", device=bound)))[0] == "AA"
    status = httpx.get(
        f"{server.http_url}/api/v1/adapters", headers=server.clinic.auth("admin"), timeout=10
    ).json()
    assert status == [{"name": "mllp", "state": "connected", "error": None}]


def test_lost_connection_is_reported_for_each_device_on_it(
    server: AdapterServer, bound: str
) -> None:
    chair = server.chair_ids()[0]
    with MllpClient(server.adapter_port("mllp")) as gateway:
        assert ack_fields(gateway.send(oru("c-1", f"1|{HR.format(80)}", device=bound)))[0] == "AA"
        connected = server.recorder.wait_for_link(bound, ConnectionState.CONNECTED)
    lost = server.recorder.wait_for_link(bound, ConnectionState.DISCONNECTED)
    assert (lost.adapter, lost.chair_id, lost.site_id) == ("mllp", chair, server.clinic.site_id)
    assert lost.peer == connected.peer
    assert lost.reason
    assert lost.at >= connected.at


def test_naive_device_times_take_the_offset_of_msh7(
    server: AdapterServer, client: MllpClient, bound: str
) -> None:
    """OBX-14 without offset, MSH-7 with +0200: the body is on the same clock as MSH-7."""
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    plus_two = at.astimezone(timezone(timedelta(hours=2)))
    message = oru("tz-1", f"1|{HR.format(75)}|||{plus_two:%Y%m%d%H%M%S}", device=bound)
    msh, *rest = message.split("\r")
    fields = msh.split("|")
    fields[6] = f"{plus_two:%Y%m%d%H%M%S}+0200"  # MSH-7
    code, _, text = ack_fields(client.send("\r".join(["|".join(fields), *rest])))
    assert code == "AA", text
    assert device_times(server, bound) == [at]


def test_many_frames_in_one_write_are_answered_in_order(client: MllpClient) -> None:
    files = sorted(HL7_SAMPLES.glob("*.hl7"))
    client.send_raw(b"".join(b"\x0b" + path.read_bytes() + b"\x1c\r" for path in files))
    answers = [ack_fields(client.read_frame()) for _ in files]
    # None of these devices is registered on this server: each is answered AE, in order.
    assert [code for code, _, _ in answers] == ["AE"] * len(files)
    assert answers[0][1] == "HP0122182658686QQ000CND119C0WS61"
    assert answers[-1][1] == "HP128978937126197"


@pytest.fixture
def fenced_server(sqlite_clinic: Clinic, tmp_path: Path) -> Iterator[AdapterServer]:
    """The MLLP listener on loopback, but allowing only gateways on 10.0.0.0/8."""
    env = {**MLLP_ENV, "VIGIL_MLLP_ALLOWED_SOURCES": "10.0.0.0/8"}
    yield from start_adapter_server(sqlite_clinic, tmp_path, env)


def test_a_source_outside_the_allowed_ones_is_closed_unread(fenced_server: AdapterServer) -> None:
    server = fenced_server
    device = "0011223344FENCED"
    server.register(device, server.chair_ids()[0])
    with MllpClient(server.adapter_port("mllp")) as client, pytest.raises(ConnectionError):
        client.send(oru("fenced-1", f"1|{HR.format(72)}", device=device))
    assert stored(server, device) == []
    assert server.recorder.links(device) == []  # no device link was ever up


def test_a_device_time_beyond_the_calendar_is_refused_naming_it(
    server: AdapterServer, client: MllpClient, bound: str
) -> None:
    """Its UTC would be in year 0: refused at validation, not an internal error."""
    message = oru("edge-1", f"1|{HR.format(72)}|||00010101000000+1600", device=bound)
    code, acked, text = ack_fields(client.send(message))
    assert (code, acked) == ("AE", "edge-1"), text
    assert "internal" not in text
    assert "0002-01-01" in text
    assert stored(server, bound) == []


def test_malformed_hl7_leaves_no_value_in_the_log(
    server: AdapterServer,
    client: MllpClient,
    bound: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """python-hl7 logs the fields it cannot unescape, Vigil's NACK reasons quote values:
    none of it may reach the application log (docs/SECURITY.md)."""
    caplog.set_level(logging.DEBUG)
    bad_hex, empty_escape = SPO2.format("83.7\\XZZ\\"), SPO2.format("91.4\\\\")
    messages = [
        oru("log-1", "1|" + bad_hex, device=bound),  # python-hl7 logs the field
        oru("log-2", "1|" + empty_escape, device=bound),  # …and here too
        oru("log-3", f"1|{SPO2.format('187.3')}", device=bound),  # implausible: AE
        oru("log-4", f"1|{SPO2.format('7x6.5')}", device=bound),  # not a number: AE
        oru("log-5", f"1|{HR.format(64)}", device=bound).replace("MSH|", "PID|77.1\rMSH|"),
    ]
    answers = [ack_fields(client.send(message))[0] for message in messages]
    assert answers[2:4] == ["AE", "AE"], answers
    logged = caplog.text + "\n".join(record.getMessage() for record in caplog.records)
    assert "mllp: AE for message 'log-3'" in logged, "the log does record the NACKs"
    for value in ("83.7", "91.4", "187.3", "7x6.5", "77.1"):
        assert value not in logged, value


# --- bounds: timeouts on by default, a resend cache bounded in bytes -----------------------

CACHE_BYTES = 20_000


def test_idle_and_frame_timeouts_are_on_by_default() -> None:
    settings = MllpSettings()
    assert 0 < settings.idle_timeout_s <= 600
    assert 0 < settings.frame_timeout_s <= 60
    assert 0 < settings.resend_cache_bytes <= 16 * 1024 * 1024


@pytest.fixture
def bounded_server(sqlite_clinic: Clinic, tmp_path: Path) -> Iterator[AdapterServer]:
    env = {
        **MLLP_ENV,
        "VIGIL_MLLP_IDLE_TIMEOUT_S": "1.5",
        "VIGIL_MLLP_FRAME_TIMEOUT_S": "0.5",
        "VIGIL_MLLP_RESEND_CACHE_BYTES": str(CACHE_BYTES),
        "VIGIL_MLLP_MAX_MESSAGE_BYTES": "65536",
    }
    yield from start_adapter_server(sqlite_clinic, tmp_path, env)


def closed_within(sock: socket.socket, seconds: float) -> float:
    """How long until the server closed `sock` (reading whatever it sent first)."""
    started = time.monotonic()
    sock.settimeout(seconds)
    while sock.recv(65536):
        pass
    return time.monotonic() - started


def test_a_half_sent_frame_is_closed_after_the_frame_timeout(
    bounded_server: AdapterServer,
) -> None:
    port = bounded_server.adapter_port("mllp")
    device = "00112233BOUNDED1"
    bounded_server.register(device, bounded_server.chair_ids()[0])
    with (
        socket.create_connection(("127.0.0.1", port)) as half,
        socket.create_connection(("127.0.0.1", port)) as trickle,
        MllpClient(port) as neighbour,
    ):
        half.sendall(b"\x0b" + b"MSH|^~\\&|HALF|" + b"x" * 500_000)
        started = time.monotonic()
        trickle.sendall(b"\x0bMSH|")
        while time.monotonic() - started < 0.4:  # a byte at a time keeps no frame open
            time.sleep(0.1)
            trickle.sendall(b"x")
        assert closed_within(half, 5) < 2.5  # 0.5 s frame timeout, plus scheduling
        assert closed_within(trickle, 5) < 2.5
        # The neighbour's connection goes on.
        going_on = neighbour.send(oru("nb-1", f"1|{HR.format(66)}", device=device))
        assert ack_fields(going_on)[0] == "AA"


def test_an_idle_connection_is_closed_after_the_idle_timeout(
    bounded_server: AdapterServer,
) -> None:
    device = "00112233BOUNDED2"
    bounded_server.register(device, bounded_server.chair_ids()[0])
    with MllpClient(bounded_server.adapter_port("mllp")) as gateway:
        answer = gateway.send(oru("idle-1", f"1|{HR.format(67)}", device=device))
        assert ack_fields(answer)[0] == "AA"
        assert 1.0 < closed_within(gateway.sock, 6) < 4.5
    lost = bounded_server.recorder.wait_for_link(device, ConnectionState.DISCONNECTED)
    assert "no message for 1.5 s" in lost.reason


def test_the_resend_cache_stays_within_its_bytes_and_still_answers_a_resend(
    bounded_server: AdapterServer,
) -> None:
    """Each message's answer is long (a note per duplicated OBX row): whole answers are
    not what is kept, and however many messages come, the cache keeps to its bytes."""
    device = "00112233BOUNDED3"
    bounded_server.register(device, bounded_server.chair_ids()[0])
    adapter = next(a for a in bounded_server.runtime.adapters if a.name == "mllp")
    assert isinstance(adapter, MllpAdapter)
    assert adapter.processor is not None
    cache = adapter.processor.recent
    moment = datetime.now(UTC) - timedelta(minutes=30)
    with MllpClient(bounded_server.adapter_port("mllp")) as gateway:
        for number in range(120):
            at = moment + timedelta(seconds=number)
            rows = [f"{row}|{SPO2.format(90 + row % 9)}" for row in range(1, 200)]
            message = oru(f"big-{number}", *rows, device=device, at=at)
            code, _, text = ack_fields(gateway.send(message))
            assert code == "AA", text
            assert len(text) >= 1_000  # the answer is long (and longer before the ACK cuts it)
            assert cache.bytes <= CACHE_BYTES
        assert 10 < len(cache) < 120  # recent ones kept, the oldest forgotten
        code, _, text = ack_fields(gateway.send(message))  # the last one, resent
    assert code == "AA"
    assert text.startswith("duplicate of a message already stored; stored 1 values")
    assert len(stored(bounded_server, device)) == 120


def test_a_message_over_the_size_limit_gets_one_ar_and_the_connection_goes_on(
    bounded_server: AdapterServer,
) -> None:
    device = "00112233BOUNDED4"
    bounded_server.register(device, bounded_server.chair_ids()[0])
    rows = [f"{row}|{SPO2.format(95)}" for row in range(1, 1200)]  # about 100 KB
    with MllpClient(bounded_server.adapter_port("mllp")) as gateway:
        code, acked, text = ack_fields(gateway.send(oru("huge-1", *rows, device=device)))
        assert (code, acked) == ("AR", "")
        assert "longer than 65536 bytes" in text
        answer = gateway.send(oru("after-huge", f"1|{HR.format(68)}", device=device))
        assert ack_fields(answer)[:2] == ("AA", "after-huge")
    assert stored(bounded_server, device) == [("hr", 68, 0)]
