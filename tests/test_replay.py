"""Replay: reading recorded sessions, and `vigil replay` feeding one back into a real server."""

from __future__ import annotations

import csv
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, select

from app.storage.models import Device, Sample
from simulators.recording import RecordingError
from simulators.replay import ReplayRun, read_recording
from simulators.timeline import timeline_start
from tests.conftest import Clinic, LiveServer
from tests.test_cli import env_with, run

RECORDED_AT = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)
PARIS_SUMMER = timezone(timedelta(hours=2))
HEADER = ["time", "vital", "value", "unit", "device_id", "quality"]
Row = tuple[float, str, float, str, str]  # offset, vital, value, unit, quality


def session_rows() -> list[Row]:
    """60 s of a session: HR and SpO2 every second, two NIBP readings, one flagged value."""
    rows: list[Row] = []
    for second in range(60):
        rows.append((second, "hr", 70 + second % 7, "/min", ""))
        quality = "artifact" if second == 30 else ""
        rows.append((second + 0.25, "spo2", 96 + second % 3, "%", quality))
    for offset, (sys, dia, mean) in ((5.5, (128, 81, 97)), (50.5, (141, 88, 106))):
        rows += [
            (offset, "nibp_sys", sys, "mm[Hg]", ""),
            (offset, "nibp_dia", dia, "mm[Hg]", ""),
            (offset, "nibp_mean", mean, "mm[Hg]", ""),
        ]
    return rows


def write_csv(path: Path, rows: list[Row], device: str = "demo-monitor-02") -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        for offset, vital, value, unit, quality in rows:
            # Written with a +02:00 offset: replay must read the offset, not assume UTC.
            local = (RECORDED_AT + timedelta(seconds=offset)).astimezone(PARIS_SUMMER)
            stamp = local.isoformat(timespec="milliseconds")
            writer.writerow([stamp, vital, f"{value:g}", unit, device, quality])
    return path


# --- reading ---------------------------------------------------------------------------------


def test_the_session_csv_reads_in_time_order_with_offsets_kept(tmp_path: Path) -> None:
    recording = read_recording(write_csv(tmp_path / "s.csv", session_rows()))
    assert len(recording.samples) == 126
    assert recording.start == RECORDED_AT
    assert recording.span_s == pytest.approx(59.25)
    assert recording.devices == ["demo-monitor-02"]
    flagged = [s for s in recording.samples if s.quality]
    assert [(s.vital, s.quality) for s in flagged] == [("spo2", ("artifact",))]


def bad_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(RecordingError) as caught:
        ReplayRun(read_recording(path))
    return str(caught.value).removeprefix(str(path)).removeprefix(", ").removeprefix(": ")


GOOD = "2024-05-01T09:00:00Z,hr,72,/min,dev-1\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is empty (expected a header row)"),
        ("time,vital,value\n", "row 1: the header lacks unit"),
        (f"time,vital,value,unit,device_id\n{GOOD}2024-05-01T09:00:01Z,hr,abc,/min,dev-1\n",
         "row 3, column 'value': 'abc' is not a number"),
        ("time,vital,value,unit,device_id\n2024-05-01 09:00:00,hr,72,/min,dev-1\n",
         "row 2, column 'time': '2024-05-01 09:00:00' has no UTC offset"),
        ("time,vital,value,unit,device_id\nyesterday,hr,72,/min,dev-1\n",
         "row 2, column 'time': 'yesterday' is not an ISO 8601 time"),
        ("time,vital,value,unit,device_id\n2024-05-01T09:00:00Z,temp,37,Cel,dev-1\n",
         "row 2, column 'vital': unknown vital 'temp'"),
        ("time,vital,value,unit,device_id,quality\n2024-05-01T09:00:00Z,hr,72,/min,d,noisy\n",
         "row 2, column 'quality': unknown quality flag 'noisy'"),
        ("time,vital,value,unit,device_id\n2024-05-01T09:00:00Z,hr,72\n",
         "row 2: 3 cells, the header has 5"),
        ("time,vital,value,unit\n2024-05-01T09:00:00Z,hr,72,/min\n",
         "row 2: no device_id for this sample"),
        ("time,vital,value,unit,device_id\n", "holds no samples"),
    ],
)  # fmt: skip
def test_a_bad_file_is_refused_naming_the_row_and_column(
    tmp_path: Path, text: str, message: str
) -> None:
    assert bad_file(tmp_path, text).startswith(message)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(RecordingError, match=r"nope\.csv: no such file"):
        read_recording(tmp_path / "nope.csv")


def test_vigil_adds_unbound_itself_so_replay_drops_it(tmp_path: Path) -> None:
    path = tmp_path / "export.csv"
    path.write_text("time,vital,value,unit,device_id,quality\n" + GOOD[:-1] + ",unbound\n")
    assert read_recording(path).samples[0].quality == ()


def test_vital_recorder_exports_are_read_with_nibp_taken_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "vr.csv"
    header = (
        "unix_time_s,utc_iso,NIBP_SYS [mmHg],NIBP_DIA [mmHg],NIBP_MEAN [mmHg],ECG_HR [/min],"
        "RR [/min],PLETH_SAT_O2 [%],PLETH_HR [/min],PLETH_PERF_REL []"
    )
    rows = [
        "1,2019-07-11T09:47:45.103Z,120,80,90,60,15,95,60,10",
        "2,2019-07-11T09:47:46.127Z,120,80,90,61,15,96,61,",
        "3,2019-07-11T09:47:47.151Z,131,85,100,62,15,97,62,9.5",
    ]
    path.write_text("\n".join([header, *rows]) + "\n")
    recording = read_recording(path)
    nibp = [(s.time.second, s.vital, s.value) for s in recording.samples if "nibp" in s.vital]
    assert nibp == [
        (45, "nibp_sys", 120),
        (45, "nibp_dia", 80),
        (45, "nibp_mean", 90),
        (47, "nibp_sys", 131),
        (47, "nibp_dia", 85),
        (47, "nibp_mean", 100),
    ]
    assert [s.value for s in recording.samples if s.vital == "pi"] == [10, 9.5]
    assert {s.vital for s in recording.samples} == {
        "hr", "pr", "spo2", "pi", "nibp_sys", "nibp_dia", "nibp_mean"
    }  # fmt: skip
    assert recording.devices == []  # replayed with --device


def test_replay_places_the_recording_so_no_device_time_is_ahead_of_its_send(
    tmp_path: Path,
) -> None:
    plan = ReplayRun(read_recording(write_csv(tmp_path / "s.csv", session_rows())))
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    for speed in (1.0, 20.0):
        start = timeline_start(now, plan.span_s, speed)
        (feed,) = plan.feeds(start)
        sends = list(feed)
        for send in sends:
            assert send.body is not None
            stamp = datetime.fromisoformat(send.body["observations"][0]["device_time"])
            sent_at = now + timedelta(seconds=send.at_s / speed)
            assert stamp <= sent_at
        # …and the last one is sent the moment it was measured.
        assert stamp == sent_at


# --- through a real server -------------------------------------------------------------------


def stored(clinic: Clinic, device: str) -> list[tuple[datetime, str, float, datetime]]:
    engine = create_engine(clinic.url)
    query = (
        select(Sample.device_time, Sample.vital, Sample.value, Sample.received_time)
        .join(Device, Device.id == Sample.device_id)
        .where(Device.identifier == device)
        .order_by(Sample.device_time, Sample.id)
    )
    with engine.connect() as connection:
        rows = [(r[0], r[1], r[2], r[3]) for r in connection.execute(query)]
    engine.dispose()
    return rows


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_replay_reproduces_values_and_relative_timing(
    live_server: LiveServer, clinic: Clinic, tmp_path: Path
) -> None:
    rows = session_rows()
    path = write_csv(tmp_path / "session.csv", rows)
    before = datetime.now(UTC)
    result = run(
        *("replay", str(path), "--speed", "20", "--url", live_server.http_url),
        env=env_with(VIGIL_DEVICE_TOKEN=clinic.device_token),  # the site's gateway credential
    )
    after = datetime.now(UTC)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "(126 observations)" in result.stdout  # batches merge when the sender is behind

    got = stored(clinic, "demo-monitor-02")
    expected = sorted(rows, key=lambda r: r[0])
    assert [(v, x) for _, v, x, _ in got] == [(v, x) for _, v, x, _, _ in expected]
    offsets = [(t - got[0][0]).total_seconds() for t, _, _, _ in got]
    assert offsets == pytest.approx([r[0] for r in expected], abs=0.002)
    # Shifted to now: the replay ends with the recording's last moment, never ahead of it.
    last_device_time, _, _, last_received = got[-1]
    assert before < last_device_time <= last_received
    assert last_device_time > after - timedelta(seconds=5)
    assert got[0][0] < before - timedelta(seconds=50)  # 59 s of recording, played in 3 s


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_value_the_server_refuses_is_traced_to_its_row(
    live_server: LiveServer, clinic: Clinic, tmp_path: Path
) -> None:
    rows: list[Row] = [(0, "hr", 72, "/min", ""), (1, "spo2", 101, "%", "")]
    path = write_csv(tmp_path / "bad.csv", rows, device="demo-monitor-01")
    url = live_server.http_url
    result = run("replay", str(path), "--speed", "10", "--url", url, "--token", clinic.device_token)
    assert result.returncode == 1
    assert f"{path} row 3: SpO2 101 % is outside the plausible range" in result.stderr

    # A credential bound to another device may not send this recording's device.
    other = httpx.post(
        f"{url}/api/v1/device-credentials",
        json={"label": "chair 3 monitor", "device_id": clinic.device(3)},
        headers=clinic.auth("admin"),
    )
    assert other.status_code == 201, other.text
    refused = run("replay", str(path), "--url", url, "--token", other.json()["token"])
    assert refused.returncode == 1
    assert "(403)" in refused.stderr
    assert "may not send for device 'demo-monitor-01'" in refused.stderr


def test_an_unreadable_file_stops_with_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "broken.csv"
    path.write_text("time,vital,value,unit,device_id\n2024-05-01T09:00:00Z,hr,high,/min,d\n")
    result = run("replay", str(path), "--url", "http://127.0.0.1:9")
    assert result.returncode == 2
    assert f"{path}, row 2, column 'value': 'high' is not a number" in result.stderr


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_session_exported_by_vigil_replays_to_the_same_values(
    live_server: LiveServer, clinic: Clinic, tmp_path: Path
) -> None:
    # Record a session on chair 2 through the replay of a known file.
    base = live_server.http_url
    token = ("--token", clinic.device_token)
    source = write_csv(tmp_path / "source.csv", session_rows())
    assert run("replay", str(source), "--speed", "20", "--url", base, *token).returncode == 0
    site = httpx.get(f"{base}/api/v1/sites/{clinic.site_id}", headers=clinic.auth("nurse"))
    chairs = site.json()["chairs"]
    response = httpx.get(
        f"{base}/api/v1/sessions/{chairs[1]['session']['id']}/export/csv",
        headers=clinic.auth("clinician"),
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    exported = tmp_path / "exported.csv"
    exported.write_text(response.text)
    header = response.text.splitlines()[0].split(",")
    assert header[:6] == HEADER

    # Vigil's own export goes back in as another chair's device, at another speed.
    replayed = run(
        "replay",
        str(exported),
        "--speed",
        "30",
        "--device",
        "demo-monitor-03",
        "--url",
        base,
        *token,
    )
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    original = stored(clinic, "demo-monitor-02")
    copy = stored(clinic, "demo-monitor-03")
    assert [(v, x) for _, v, x, _ in copy] == [(v, x) for _, v, x, _ in original]
    spacing = [(t - original[0][0]).total_seconds() for t, _, _, _ in original]
    assert [(t - copy[0][0]).total_seconds() for t, _, _, _ in copy] == pytest.approx(
        spacing, abs=0.002
    )
