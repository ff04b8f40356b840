"""The speaker of a real voip guest: what espeak-ng says in it (a WAV it makes, played as the guest
user through the machine's PulseAudio) comes back from cwhost as WAV samples and as a transcript
with its words.
Called from tests/test_real_vm_image.py once the voip workstation is ready."""

from __future__ import annotations

import array
import io
import threading
import time
import wave

import requests

from tests.real_vm_agents import _exec
from tests.test_audio import HEARD, SAID

# Long enough here: under TCG a recorder takes seconds to start, and so does the player.
LISTEN_SECONDS = 20


def what_the_guest_says_is_heard(http: requests.Session, url: str) -> None:
    server = url.split("/v1/", 1)[0]
    types = {t["id"]: t for t in http.get(server + "/v1/workstation-types").json()["data"]}
    assert "audio" in types["voip"]["capabilities"] and "speaker" in types["voip"]["hardware"]
    # espeak-ng speaks into a WAV in the guest, which is then played: speaking live, under TCG just
    # after boot, its synthesis can fall behind the speaker and leave gaps no recogniser hears through.
    said = _exec(http, url, "espeak-ng", "-v", "en-us+m3", "-s", "150", "-w", "/tmp/said.wav", SAID)
    assert said["exitCode"] == 0, said
    answers: dict[str, requests.Response] = {}

    def listen() -> None:
        answers["listen"] = http.post(url + "/audio/listen", json={"seconds": LISTEN_SECONDS}, timeout=180)

    listening = threading.Thread(target=listen)
    listening.start()
    # The WAV's answer begins once the guest records (the server waits for the first samples), and
    # the listen, asked first, records by then too.
    with http.get(url + "/audio", params={"seconds": LISTEN_SECONDS}, stream=True, timeout=180) as wav_answer:
        time.sleep(2)
        played = _exec(http, url, "paplay", "/tmp/said.wav")
        assert played["exitCode"] == 0, played
        body = wav_answer.content
    listening.join()
    # The sound first: a transcript without words says little unless the speaker is known to have spoken.
    assert wav_answer.status_code == 200 and wav_answer.headers["Content-Type"] == "audio/wav"
    with wave.open(io.BytesIO(body)) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getnframes()) == (16000, 1, 16000 * LISTEN_SECONDS)
        samples = array.array("h", wav.readframes(wav.getnframes()))
    assert len(samples) == 16000 * LISTEN_SECONDS
    assert max(map(abs, samples[:16000])) < 100  # the speaker was quiet before
    assert max(map(abs, samples)) > 5000  # then it spoke
    assert answers["listen"].status_code == 200, answers["listen"].text
    transcript = answers["listen"].json()["transcript"]
    assert HEARD <= set(transcript.split()), transcript
