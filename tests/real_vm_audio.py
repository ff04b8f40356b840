"""The speaker of a real voip guest: what espeak-ng says in it, as the guest user, through the
machine's PulseAudio, comes back from cwhost as WAV samples and as a transcript with its words.
Called from tests/test_real_vm_image.py once the voip workstation is ready."""

from __future__ import annotations

import array
import io
import threading
import time
import wave

import requests

from tests.test_audio import HEARD, SAID

# Slow enough here: under TCG espeak-ng takes a few seconds to start and speak.
LISTEN_SECONDS = 20


def what_the_guest_says_is_heard(http: requests.Session, url: str) -> None:
    server = url.split("/v1/", 1)[0]
    types = {t["id"]: t for t in http.get(server + "/v1/workstation-types").json()["data"]}
    assert "audio" in types["voip"]["capabilities"] and "speaker" in types["voip"]["hardware"]
    answers: dict[str, requests.Response] = {}

    def listen() -> None:
        answers["listen"] = http.post(url + "/audio/listen", json={"seconds": LISTEN_SECONDS}, timeout=180)

    def stream() -> None:
        answers["wav"] = http.get(url + "/audio", params={"seconds": LISTEN_SECONDS}, timeout=180)

    threads = [threading.Thread(target=listen), threading.Thread(target=stream)]
    for thread in threads:
        thread.start()
    time.sleep(3)  # both have begun recording: what is said from now is heard
    spoken = http.post(
        url + "/exec", json={"command": ["espeak-ng", "-v", "en-us+m3", "-s", "150", SAID]}, timeout=120
    ).json()
    assert spoken["exitCode"] == 0, spoken
    for thread in threads:
        thread.join()
    # The sound first: a transcript without words says little unless the speaker is known to have spoken.
    wav_answer = answers["wav"]
    assert wav_answer.status_code == 200 and wav_answer.headers["Content-Type"] == "audio/wav"
    with wave.open(io.BytesIO(wav_answer.content)) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getnframes()) == (16000, 1, 16000 * LISTEN_SECONDS)
        samples = array.array("h", wav.readframes(wav.getnframes()))
    assert len(samples) == 16000 * LISTEN_SECONDS
    assert max(map(abs, samples[:8000])) < 100  # the speaker was quiet before
    assert max(map(abs, samples)) > 5000  # then it spoke
    assert answers["listen"].status_code == 200, answers["listen"].text
    transcript = answers["listen"].json()["transcript"]
    assert HEARD <= set(transcript.split()), transcript
