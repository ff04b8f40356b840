"""The guest's speaker through the API, on the fake driver. A fake guest's simulated speaker plays
what its ``paplay`` is given and records what plays, so the whole way from the guest service to the
WAV stream and the transcript (pocketsphinx) runs here; tests/real_vm_audio.py does it in a real
voip guest, whose PulseAudio plays what espeak-ng says."""

from __future__ import annotations

import array
import io
import shutil
import subprocess
import threading
import time
import wave

import pytest

from tests.helpers import app_with, bearer, wait_for_status

SAID = "one two three four five"
# What pocketsphinx's English model makes of espeak-ng saying SAID: the first word it hears as "well".
HEARD = {"two", "three", "four", "five"}


def speech(directory) -> bytes:
    """SAID, spoken by espeak-ng, as a 16 kHz mono WAV: the fake speaker's own format."""
    if not (shutil.which("espeak-ng") and shutil.which("ffmpeg")):
        pytest.skip("espeak-ng and ffmpeg are not installed (see .ci/run)")
    spoken, resampled = directory / "spoken.wav", directory / "speech.wav"
    subprocess.run(["espeak-ng", "-v", "en-us+m3", "-s", "150", "-w", str(spoken), SAID], check=True)
    subprocess.run(["ffmpeg", "-loglevel", "error", "-i", str(spoken), "-ar", "16000", "-ac", "1", str(resampled)])
    return resampled.read_bytes()


def voip_workstation(client, headers, launch: bool = True) -> str:
    body = {"name": "phone", "type": "voip", "configuration": {"cpuCores": 1, "memoryGB": 1}}
    created = client.post("/v1/workstations", json=body, headers=headers)
    assert created.status_code == 201, created.get_json()
    workstation_id = created.get_json()["id"]
    wait_for_status(client, headers, workstation_id, "stopped")
    if launch:
        assert client.post(f"/v1/workstations/{workstation_id}/launch", headers=headers).status_code == 200
    return f"/v1/workstations/{workstation_id}"


@pytest.fixture
def voip_url(client, alice):
    url = voip_workstation(client, alice)
    yield url
    client.post(url + "/stop", headers=alice, query_string={"force": "true"})


@pytest.fixture
def speech_in_guest(client, alice, voip_url, tmp_path):
    """The guest's path of SAID's WAV, written through the API."""
    put = client.put(
        voip_url + "/fs/content", query_string={"path": "speech.wav"}, data=speech(tmp_path), headers=alice
    )
    assert put.status_code == 200, put.get_json()
    return put.get_json()["path"]


def play(client, alice, url, path: str) -> dict:
    started = client.post(url + "/processes", json={"command": ["paplay", path]}, headers=alice)
    assert started.status_code == 201, started.get_json()
    pid = started.get_json()["id"]
    return client.get(f"{url}/processes/{pid}", query_string={"wait": "exit"}, headers=alice).get_json()


def test_what_the_guest_plays_is_heard_as_its_words(client, alice, voip_url, speech_in_guest):
    answers = []
    listening = threading.Thread(
        target=lambda: answers.append(client.post(voip_url + "/audio/listen", json={"seconds": 6}, headers=alice))
    )
    listening.start()
    time.sleep(1)  # the listener has begun: what plays from now is heard
    assert play(client, alice, voip_url, speech_in_guest)["exitCode"] == 0
    listening.join()
    assert answers[0].status_code == 200, answers[0].get_json()
    heard = answers[0].get_json()
    assert heard["seconds"] == 6 and HEARD <= set(heard["transcript"].split()), heard


def test_a_quiet_speaker_says_nothing(client, alice, voip_url):
    heard = client.post(voip_url + "/audio/listen", json={"seconds": 2}, headers=alice)
    assert heard.status_code == 200 and heard.get_json() == {"transcript": "", "seconds": 2}


def test_the_speaker_streams_as_a_wav_file_with_what_plays(client, alice, voip_url, speech_in_guest):
    stream = client.get(voip_url + "/audio", query_string={"seconds": 5}, headers=alice, buffered=False)
    assert stream.status_code == 200 and stream.mimetype == "audio/wav"
    played = threading.Thread(target=play, args=(client, alice, voip_url, speech_in_guest))
    played.start()
    body = b"".join(stream.response)
    played.join()
    with wave.open(io.BytesIO(body)) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth(), wav.getnframes()) == (16000, 1, 2, 80000)
        samples = array.array("h", wav.readframes(wav.getnframes()))
    assert len(samples) == 80000  # every sample of the five seconds asked
    assert max(map(abs, samples[:800])) == 0  # silence before the speech began
    assert max(map(abs, samples)) > 5000  # the speech


def test_the_speaker_in_stereo_at_48_khz(client, alice, voip_url):
    stream = client.get(voip_url + "/audio", query_string={"seconds": 1, "rate": 48000, "channels": 2}, headers=alice)
    with wave.open(io.BytesIO(stream.data)) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getnframes()) == (48000, 2, 48000)
        assert len(wav.readframes(48000)) == 48000 * 2 * 2


def test_a_fake_guest_plays_only_its_own_wav_files(client, alice, voip_url):
    client.put(voip_url + "/fs/content", query_string={"path": "notes.txt"}, data=b"not a sound", headers=alice)
    for path in ("notes.txt", "/etc/passwd"):  # the second is the fake guest's, which has none
        ended = play(client, alice, voip_url, path)
        assert ended["exitCode"] == 1, ended
        output = client.get(f"{voip_url}/processes/{ended['id']}/output", headers=alice).get_data(as_text=True)
        assert "paplay:" in output and "root:" not in output


def test_bad_requests_and_machines_without_a_speaker(client, alice, bob, voip_url, running_url):
    for query in ({"seconds": 0}, {"seconds": "x"}, {"rate": 44100}, {"channels": 3}, {"volume": 1}):
        refused = client.get(voip_url + "/audio", query_string=query, headers=alice)
        assert (refused.status_code, refused.get_json()["error"]) == (400, "invalid_request"), query
    longer = client.get(voip_url + "/audio", query_string={"seconds": 301}, headers=alice)
    assert (longer.status_code, longer.get_json()["error"]) == (400, "invalid_request")
    for body in ({"seconds": 0}, {"seconds": 1.5}, {"seconds": "10"}, {"seconds": 10, "lang": "fr"}):
        refused = client.post(voip_url + "/audio/listen", json=body, headers=alice)
        assert (refused.status_code, refused.get_json()["error"]) == (400, "invalid_request"), body
    too_long = client.post(voip_url + "/audio/listen", json={"seconds": 61}, headers=alice)
    assert (too_long.status_code, too_long.get_json()["error"]) == (400, "invalid_request")
    assert "audio.listen_max_seconds" in too_long.get_json()["message"]
    # A machine with no sound (no type: no PulseAudio) has no speaker.
    for response in (
        client.get(running_url + "/audio", headers=alice),
        client.post(running_url + "/audio/listen", json={"seconds": 1}, headers=alice),
    ):
        assert (response.status_code, response.get_json()["error"]) == (422, "unknown_asset")
    # Another account's workstation is not there at all.
    assert client.get(voip_url + "/audio", headers=bob).status_code == 404
    assert client.post(voip_url + "/audio/listen", json={"seconds": 1}, headers=bob).status_code == 404


def test_a_stopped_workstation_has_no_speaker_to_hear(client, alice):
    url = voip_workstation(client, alice, launch=False)
    stopped = client.post(url + "/audio/listen", json={"seconds": 1}, headers=alice)
    assert (stopped.status_code, stopped.get_json()["error"]) == (400, "invalid_state")


def test_a_listen_cut_short_by_a_stop_says_so(client, alice):
    url = voip_workstation(client, alice)
    answers = []
    listening = threading.Thread(
        target=lambda: answers.append(client.post(url + "/audio/listen", json={"seconds": 8}, headers=alice))
    )
    listening.start()
    time.sleep(1)
    assert client.post(url + "/stop", query_string={"force": "true"}, headers=alice).status_code == 200
    listening.join()
    assert (answers[0].status_code, answers[0].get_json()["error"]) == (503, "unavailable")
    assert "stopped after" in answers[0].get_json()["message"]


def test_listening_holds_one_of_the_accounts_stream_slots(tmp_path):
    from cwhost.accounts import tokens as auth

    with app_with(tmp_path / "data", streams={"max_per_account": 1}) as app:
        client = app.test_client()
        db = app.extensions["cwhost"].db
        alice, bob = (bearer(auth.create_key(db, name).token) for name in ("alice", "bob"))
        url, bobs = voip_workstation(client, alice), voip_workstation(client, bob)
        stream = client.get(url + "/audio", query_string={"seconds": 30}, headers=alice, buffered=False)
        assert stream.status_code == 200
        refused = client.post(url + "/audio/listen", json={"seconds": 1}, headers=alice)
        assert (refused.status_code, refused.get_json()["error"]) == (429, "rate_limited")
        # Another account's slots are its own.
        assert client.post(bobs + "/audio/listen", json={"seconds": 1}, headers=bob).status_code == 200
        stream.close()
        assert client.post(url + "/audio/listen", json={"seconds": 1}, headers=alice).status_code == 200
