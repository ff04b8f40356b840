"""A fake guest's speaker: what its ``paplay`` plays, and what a capture of it records.

Nothing plays sound beside a fake guest, so its speaker is a directory: ``play``
puts a 16 kHz mono 16-bit WAV's samples there, named by when they started, and
returns once they would have been heard, as paplay does; ``record`` writes, as
time passes, what was playing then (silence when nothing was), mixed, as raw
little-endian 16-bit samples at the asked rate and channels, as ``parec`` does in
a guest. Standard library only: it runs as ``python3 -S simulated_speaker.py``.
"""

from __future__ import annotations

import array
import os
import sys
import time
import wave

RATE = 16000
ROUND_SECONDS = 0.1
# A sound is kept this long after its end, for captures that are behind; then it goes.
KEEP_SECONDS = 30.0


def speaker_directory(place) -> str:
    """Beside the fake guest's file system (its root), in the directory of its service."""
    return os.path.join(os.path.dirname(place.root), "speaker")


def _this_program(*arguments: str) -> list[str]:
    return [sys.executable, "-S", os.path.abspath(__file__), *arguments]


def player(place, path: str) -> list[str]:
    return _this_program("play", speaker_directory(place), place.local(path))


def recorder(place, rate: int, channels: int) -> list[str]:
    return _this_program("record", speaker_directory(place), str(rate), str(channels))


def play(directory: str, path: str) -> None:
    try:
        with wave.open(path, "rb") as sound:
            if (sound.getsampwidth(), sound.getnchannels(), sound.getframerate()) != (2, 1, RATE):
                raise SystemExit(f"paplay: {path}: a fake guest's speaker plays 16 kHz mono 16-bit WAV only")
            samples = sound.readframes(sound.getnframes())
    except (OSError, EOFError, wave.Error) as exc:
        raise SystemExit(f"paplay: {path}: {exc}") from None
    os.makedirs(directory, exist_ok=True)
    name = os.path.join(directory, f"{time.time_ns()}-{os.getpid()}.pcm")
    with open(name + ".part", "wb") as f:
        f.write(samples)
    os.replace(name + ".part", name)
    time.sleep(len(samples) / 2 / RATE)


def record(directory: str, rate: int, channels: int) -> None:
    copies = rate // RATE * channels
    out = sys.stdout.buffer
    position = time.time()
    while True:
        time.sleep(ROUND_SECONDS)
        count = int((time.time() - position) * RATE)
        mixed = array.array("h", bytes(2 * count))
        for start, samples in _sounds(directory, position):
            _mix(mixed, samples, round((start - position) * RATE))
        position += count / RATE
        shaped = array.array("h", (sample for sample in mixed for _ in range(copies)))
        if sys.byteorder == "big":
            shaped.byteswap()
        out.write(shaped.tobytes())
        out.flush()


def _sounds(directory: str, since: float):
    """Each sound not over before ``since``: when it started, and its samples."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return
    for name in names:
        if not name.endswith(".pcm"):
            continue
        path = os.path.join(directory, name)
        start = int(name.split("-", 1)[0]) / 1e9
        end = start + os.path.getsize(path) / 2 / RATE
        if end < since - KEEP_SECONDS:
            _remove(path)
        elif end >= since:
            samples = array.array("h")
            with open(path, "rb") as f:
                samples.frombytes(f.read())
            yield start, samples


def _mix(mixed: array.array, samples: array.array, offset: int) -> None:
    """Add ``samples`` into ``mixed`` from index ``offset`` (before its start when negative), clipped."""
    for index in range(max(0, offset), min(len(mixed), offset + len(samples))):
        mixed[index] = max(-32768, min(32767, mixed[index] + samples[index - offset]))


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass  # another capture removed it first


if __name__ == "__main__":
    if sys.argv[1:2] == ["play"] and len(sys.argv) == 4:
        play(sys.argv[2], sys.argv[3])
    elif sys.argv[1:2] == ["record"] and len(sys.argv) == 5:
        try:
            record(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        except BrokenPipeError:
            pass  # the capture's reader is gone
    else:
        raise SystemExit("usage: simulated_speaker.py play DIR FILE | record DIR RATE CHANNELS")
