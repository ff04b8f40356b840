"""Screen recordings through the API on the fake driver (its screen shows what is typed on it): a WebM
made by Debian's ffmpeg whose pictures change as text is typed, checked with ffprobe and a frame
diff; listed, downloaded, deleted, counted in the account's storage. tests/real_vm_agents.py records
a real guest's screen."""

from __future__ import annotations

import io
import json
import subprocess
import time

import pytest
from PIL import Image, ImageChops

from cwhost.accounts import tokens as auth
from cwhost.workstations.recorder import Recorder
from drivers.base import InvalidDomainState
from tests.helpers import app_with, bearer


def probe(video: bytes, tmp_path) -> dict:
    path = tmp_path / "probe.webm"
    path.write_bytes(video)
    shown = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-show_streams", "-show_format", "-of", "json", str(path)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(shown.stdout)


def frames(video: bytes, tmp_path) -> list[Image.Image]:
    """Every picture of the video, decoded by ffmpeg."""
    path = tmp_path / "frames.webm"
    path.write_bytes(video)
    decoded = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-f", "image2pipe", "-c:v", "png", "-"],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    pictures, end = [], b"IEND\xaeB`\x82"
    for piece in decoded.split(end)[:-1]:
        pictures.append(Image.open(io.BytesIO(piece + end)).convert("RGB"))
    return pictures


def changed(a: Image.Image, b: Image.Image) -> bool:
    return ImageChops.difference(a, b).getbbox() is not None


def test_a_recording_of_typing_is_a_webm_whose_pictures_change(client, alice, running_url, tmp_path):
    started = client.post(running_url + "/recordings", json={"framesPerSecond": 5}, headers=alice)
    assert started.status_code == 201, started.get_json()
    recording = running_url + "/recordings/" + started.get_json()["id"]
    assert started.get_json()["status"] == "recording" and started.get_json()["format"] == "webm"
    again = client.post(running_url + "/recordings", json={}, headers=alice)
    assert (again.status_code, again.get_json()["error"]) == (409, "conflict")
    time.sleep(1)
    for word in ("hello ", "from ", "an agent"):
        client.post(running_url + "/input", json={"actions": [{"type": "text", "text": word}]}, headers=alice)
        time.sleep(0.6)
    early = client.get(recording + "/content", headers=alice)
    assert (early.status_code, early.get_json()["error"]) == (400, "invalid_state")
    stopped = client.post(recording + "/stop", headers=alice)
    assert stopped.status_code == 200 and stopped.get_json()["status"] == "ready", stopped.get_json()
    assert stopped.get_json()["sizeBytes"] > 0 and stopped.get_json()["endedAt"]
    with client.get(recording + "/content", headers=alice) as video:
        assert video.status_code == 200 and video.mimetype == "video/webm"
        data = video.get_data()
    shown = probe(data, tmp_path)
    stream = shown["streams"][0]
    assert shown["format"]["format_name"].startswith("matroska") and stream["codec_name"] == "vp8"
    assert (stream["width"], stream["height"]) == (1024, 768) and int(stream["nb_read_frames"]) >= 5
    assert float(shown["format"]["duration"]) >= 2  # as long as it recorded, pictures timed by the clock
    pictures = frames(data, tmp_path)
    assert changed(pictures[0], pictures[-1])
    assert client.post(recording + "/stop", headers=alice).status_code == 400
    listed = client.get(running_url + "/recordings", headers=alice).get_json()["data"]
    assert [r["status"] for r in listed] == ["ready"]
    assert client.delete(recording, headers=alice).status_code == 204
    assert client.get(recording, headers=alice).status_code == 404


def test_recordings_count_in_the_accounts_storage_and_are_the_owners(tmp_path):
    with app_with(tmp_path / "data", limits={"max_storage_gb": 1}) as app:
        client = app.test_client()
        db = app.extensions["cwhost"].db
        alice, bob = (bearer(auth.create_key(db, name).token) for name in ("alice", "bob"))
        ws = client.post(
            "/v1/workstations",
            json={"name": "full", "configuration": {"cpuCores": 1, "memoryGB": 1, "storageGB": 1}},
            headers=alice,
        ).get_json()
        url = f"/v1/workstations/{ws['id']}"
        client.post(url + "/launch", headers=alice)
        # The disk takes the account's whole storage: no room for a recording.
        refused = client.post(url + "/recordings", json={}, headers=alice)
        assert (refused.status_code, refused.get_json()["error"]) == (403, "quota_exceeded")
        for method, path in (("post", "/recordings"), ("get", "/recordings")):
            assert getattr(client, method)(url + path, json={}, headers=bob).status_code == 404
        client.post(url + "/stop", headers=alice, query_string={"force": "true"})


def test_a_recording_of_a_stopped_workstation_is_refused_and_ends_with_it(client, alice, running_url):
    recording = client.post(running_url + "/recordings", json={}, headers=alice).get_json()
    client.post(running_url + "/stop", headers=alice, query_string={"force": "true"})
    url = f"{running_url}/recordings/{recording['id']}"
    deadline = time.monotonic() + 30
    while client.get(url, headers=alice).get_json()["status"] == "recording":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    ended = client.get(url, headers=alice).get_json()
    assert ended["status"] == "ready" and "stopped" in ended["message"]
    refused = client.post(running_url + "/recordings", json={}, headers=alice)
    assert (refused.status_code, refused.get_json()["error"]) == (400, "invalid_state")
    client.delete(running_url, headers=alice)
    assert client.get(url, headers=alice).status_code == 404


@pytest.mark.parametrize("body", [{"framesPerSecond": 0}, {"framesPerSecond": 31}, {"fps": 2}])
def test_bad_starts_are_refused(client, alice, running_url, body):
    assert client.post(running_url + "/recordings", json=body, headers=alice).status_code == 400


def test_a_recording_a_restart_cut_short_is_failed_and_kept(client, alice, running_url, components):
    recordings = components.services.recordings
    started = client.post(running_url + "/recordings", json={}, headers=alice).get_json()
    time.sleep(1)
    # As if the service had died here: its row says recording, with no recorder behind it.
    recordings._recorders.pop(started["id"]).stop()
    recordings.recover()
    after = client.get(f"{running_url}/recordings/{started['id']}", headers=alice).get_json()
    assert after["status"] == "failed" and "cwhost stopped" in after["message"]


def test_a_recording_whose_workstation_stopped_before_its_first_picture_fails_with_no_file(tmp_path):
    outcomes = []

    def stopped_screen() -> bytes:
        raise InvalidDomainState("domain is not running")

    target = tmp_path / "rec.webm"
    recorder = Recorder(stopped_screen, target, 5, 60, lambda size: None, lambda *outcome: outcomes.append(outcome))
    recorder.thread.start()
    assert recorder.done.wait(30)
    assert outcomes == [("failed", "the workstation stopped before its first picture", 0)]
    assert not target.exists()
