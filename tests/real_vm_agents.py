"""What an agent does in a real guest through cwhost's guest service: background processes that
stream, and the guest's files, as the guest user. Called from tests/test_real_vm_image.py once the
python workstation is ready."""

from __future__ import annotations

import hashlib
import json
import time

import requests

UPPERCASE_ECHO = (
    "import sys\nprint('first', flush=True)\nfor line in sys.stdin:\n    print(line.strip().upper(), flush=True)\n"
)


def sse(response: requests.Response):
    """(event, data) pairs as they arrive."""
    event = None
    for line in response.iter_lines(decode_unicode=True):
        if line.startswith("event: "):
            event = line[len("event: ") :]
        elif line.startswith("data: ") and event:
            yield event, json.loads(line[len("data: ") :])
            event = None


def next_line(events) -> str:
    """The next whole line of stdout: a chunk is what one read in the guest got, and
    `python3 -u` writes print's text and its newline apart, so a line may come in pieces."""
    text = ""
    while not text.endswith("\n"):
        event, data = next(events)
        assert (event, data["encoding"]) == ("stdout", "utf-8"), (event, data)
        text += data["data"]
    return text


def _exec(http: requests.Session, url: str, *command: str) -> dict:
    answer = http.post(url + "/exec", json={"command": list(command)}, timeout=120)
    assert answer.status_code == 200, answer.text
    return answer.json()


def _start(http: requests.Session, url: str, *command: str) -> str:
    started = http.post(url + "/processes", json={"command": list(command)}, timeout=60)
    assert started.status_code == 201, started.text
    return f"{url}/processes/{started.json()['id']}"


def _ended(http: requests.Session, process: str) -> dict:
    return http.get(process, params={"wait": "exit", "timeoutSeconds": 60}, timeout=90).json()


def processes_stream_take_stdin_and_die(http: requests.Session, url: str) -> None:
    process = _start(http, url, "python3", "-u", "-c", UPPERCASE_ECHO)
    with http.get(process + "/output", stream=True, timeout=120) as stream:
        events = sse(stream)
        # The first line arrives while the process runs on, waiting for stdin.
        assert next_line(events) == "first\n"
        assert http.get(process, timeout=30).json()["status"] == "running"
        assert http.post(process + "/stdin", json={"data": "hello guest\n"}, timeout=30).status_code == 204
        assert next_line(events) == "HELLO GUEST\n"
        assert http.post(process + "/stdin", json={"eof": True}, timeout=30).status_code == 204
        event, ending = next(events)
        assert (event, ending["status"], ending["exitCode"]) == ("exit", "exited", 0)

    # A late reader gets the output from its start.
    counted = _start(http, url, "seq", "1", "2000")
    assert _ended(http, counted)["exitCode"] == 0
    with http.get(counted + "/output", stream=True, timeout=60) as stream:
        text = "".join(data["data"] for event, data in sse(stream) if event == "stdout")
    assert text == "".join(f"{n}\n" for n in range(1, 2001))

    # Signals reach it, and forgetting a running process kills it and what it started, in the guest.
    signalled = _start(http, url, "sleep", "600")
    assert http.post(signalled + "/signal", json={"signal": "TERM"}, timeout=30).status_code == 200
    ending = _ended(http, signalled)
    assert (ending["status"], ending["signal"]) == ("killed", "TERM")
    killed = _start(http, url, "sh", "-c", "sleep 700 & sleep 701")
    time.sleep(1)  # the shell has started both sleeps (the guest runs under TCG)
    # (A pattern that does not match its own command line, which exec's wrapper also shows.)
    assert _exec(http, url, "pgrep", "-u", "dev", "-f", "sleep 70[01]")["exitCode"] == 0
    assert http.delete(killed, timeout=30).status_code == 204
    deadline = time.monotonic() + 30
    while _exec(http, url, "pgrep", "-u", "dev", "-f", "sleep 70[01]")["exitCode"] == 0:
        assert time.monotonic() < deadline, "the forgotten process still runs in the guest"
        time.sleep(1)
    # They ran as the guest user.
    whoami = _start(http, url, "id", "-un")
    _ended(http, whoami)
    with http.get(whoami + "/output", stream=True, timeout=60) as stream:
        assert next_line(sse(stream)) == "dev\n"


def files_both_ways_and_a_watch(http: requests.Session, url: str) -> None:
    fs = url + "/fs"
    assert (
        http.post(fs + "/directories", json={"path": "from-api/deep", "parents": True}, timeout=30).status_code == 201
    )
    payload = bytes(range(256)) * 8192  # 2 MiB, not text
    written = http.put(fs + "/content", params={"path": "from-api/deep/blob.bin"}, data=payload, timeout=120)
    assert written.status_code == 200, written.text
    assert written.json()["path"] == "/home/dev/from-api/deep/blob.bin"
    checked = _exec(
        http, url, "sh", "-c", "stat -c '%U %s' ~/from-api/deep/blob.bin && sha256sum < ~/from-api/deep/blob.bin"
    )
    assert checked["stdout"].split()[:3] == ["dev", str(len(payload)), hashlib.sha256(payload).hexdigest()]
    _exec(http, url, "sh", "-c", "printf 'written in the guest' > ~/from-guest.txt")
    read = http.get(fs + "/content", params={"path": "/home/dev/from-guest.txt"}, timeout=60)
    assert read.status_code == 200 and read.content == b"written in the guest"
    # As the guest user: root's files are not the API's to write.
    refused = http.put(fs + "/content", params={"path": "/etc/cwhost-was-here"}, data=b"x", timeout=60)
    assert (refused.status_code, refused.json()["error"]) == (403, "forbidden"), refused.text
    listed = http.get(fs, params={"path": "from-api"}, timeout=30).json()
    assert [(e["name"], e["type"]) for e in listed["entries"]] == [("deep", "directory")]

    http.post(fs + "/directories", json={"path": "watched"}, timeout=30)
    with http.get(fs + "/watch", params={"path": "watched"}, stream=True, timeout=120) as stream:
        events = sse(stream)
        _exec(http, url, "touch", "/home/dev/watched/new.txt")
        assert next(events) == ("created", {"path": "/home/dev/watched/new.txt", "type": "file"})
    assert http.delete(fs, params={"path": "from-api", "recursive": "true"}, timeout=60).status_code == 204
    assert _exec(http, url, "test", "-e", "/home/dev/from-api")["exitCode"] == 1


def _screen_until(ws, wanted: bytes, seconds: float = 120) -> bytes:
    seen = b""
    deadline = time.monotonic() + seconds
    while wanted not in seen:
        assert time.monotonic() < deadline, seen[-2000:]
        seen += ws.recv()
    return seen


def a_terminal_runs_a_program_and_survives_a_reconnect(http: requests.Session, url: str) -> None:
    import websocket

    opened = http.post(url + "/terminals", json={"cols": 80, "rows": 24}, timeout=60)
    assert opened.status_code == 201, opened.text
    terminal = opened.json()
    screen = websocket.create_connection(terminal["websocketUrl"], timeout=120)
    screen.send_binary(b'\x00{"resize": {"cols": 120, "rows": 40}}')
    # The login shell, as the guest user, on a terminal of the size asked.
    screen.send_binary(b"echo size=$(stty size) user=$(id -un)\r")
    _screen_until(screen, b"size=40 120 user=dev")
    # An interactive program: Python's prompt.
    screen.send_binary(b"python3 -q\r")
    _screen_until(screen, b">>> ")
    screen.send_binary(b"6 * 7\r")
    _screen_until(screen, b"42")
    screen.close()
    # A new connection finds the same program, the recent screen first.
    again = websocket.create_connection(terminal["websocketUrl"], timeout=120)
    assert b"42" in _screen_until(again, b"42")
    again.send_binary(b"print('still', 'here')\r")
    _screen_until(again, b"still here")
    again.send_binary(b"exit()\r")
    again.close()
    assert http.delete(f"{url}/terminals/{terminal['id']}", timeout=30).status_code == 204


def a_recording_of_the_screen_while_typing(http: requests.Session, url: str, scratch) -> None:
    import subprocess

    from PIL import Image, ImageChops

    started = http.post(url + "/recordings", json={"framesPerSecond": 4}, timeout=60)
    assert started.status_code == 201, started.text
    recording = f"{url}/recordings/{started.json()['id']}"
    time.sleep(2)
    for word in ("typed ", "while ", "recording"):
        sent = http.post(url + "/input", json={"actions": [{"type": "text", "text": word}]}, timeout=60)
        assert sent.status_code == 200, sent.text
        time.sleep(2)
    stopped = http.post(recording + "/stop", timeout=200).json()
    assert stopped["status"] == "ready" and stopped["sizeBytes"] > 0, stopped
    video = scratch / "screen.webm"
    video.write_bytes(http.get(recording + "/content", timeout=60).content)
    shown = json.loads(
        subprocess.run(
            ["ffprobe", "-v", "error", "-count_frames", "-show_streams", "-of", "json", str(video)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout  # fmt: skip
    )["streams"][0]
    assert shown["codec_name"] == "vp8" and int(shown["nb_read_frames"]) >= 8, shown
    first, last = scratch / "first.png", scratch / "last.png"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(video), "-frames:v", "1", str(first)], check=True)
    subprocess.run(["ffmpeg", "-v", "error", "-sseof", "-0.5", "-i", str(video), "-update", "1", str(last)], check=True)
    assert ImageChops.difference(Image.open(first).convert("RGB"), Image.open(last).convert("RGB")).getbbox()
    assert http.delete(recording, timeout=60).status_code == 204
