"""One screen recording: pictures of a running workstation's display, taken by the hypervisor (nothing
runs in the guest, so the guest is not slowed), encoded as they come by Debian's ffmpeg into WebM
(VP8 at the recording's rate). The encoder is niced, so on a busy host it may read late: pictures
are taken on the recording's clock all the same and wait for it in a queue, each the frame of its
moment, so the video lasts as long as the recording did and shows what the screen did when. Only
pictures that differ from the one before take room in the queue; when it is full (the encoder far
behind) the screen is held as it was until there is room. The pictures are the hypervisor's as they
come (PPM or PNG, which ffmpeg tells apart): none is compressed only to be decoded again."""

from __future__ import annotations

import queue
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from drivers.base import DriverError

# Its file's size is measured, and checked against the account's storage, this often.
MEASURE_SECONDS = 2.0
ENCODE_SECONDS = 120
# Differing pictures the encoder may be behind by: at 1920x1080 (PPM), 60 MB.
PENDING_PICTURES = 10


def ffmpeg_command(target: Path, frames_per_second: int) -> list[str]:
    return [
        # Niced: the guest's CPUs come first on the host.
        "nice", "-n", "19", "ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
        "-f", "image2pipe", "-framerate", str(frames_per_second), "-i", "-",
        "-c:v", "libvpx", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "1M",
        "-f", "webm", str(target),
    ]  # fmt: skip


class Recorder:
    """Runs on a thread of its own until ``stop()``, the workstation stops, its time is up, or
    ``allowed(size)`` says its file may grow no more. ``finished(outcome, message)`` is told once."""

    def __init__(
        self,
        picture: Callable[[], bytes],
        target: Path,
        frames_per_second: int,
        max_seconds: float,
        allowed: Callable[[int], str | None],
        finished: Callable[[str, str | None, int], None],
    ):
        self._picture, self._target = picture, target
        self._rate, self._interval, self._max_seconds = frames_per_second, 1 / frames_per_second, max_seconds
        self._allowed, self._finished = allowed, finished
        self._stopping = threading.Event()
        # Frames for the encoder: (picture, whether it holds one of the room's places).
        self._frames: queue.SimpleQueue[tuple[bytes, bool] | None] = queue.SimpleQueue()
        self._room = threading.Semaphore(PENDING_PICTURES)
        self._encoder_failure: str | None = None
        # Set by its first picture, or by its end without one, so that no one waits on after it.
        self.first_picture = threading.Event()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"recorder-{target.stem}", daemon=True)

    def stop(self) -> None:
        self._stopping.set()

    def _run(self) -> None:
        encoder = subprocess.Popen(
            ffmpeg_command(self._target, self._rate),
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        writer = threading.Thread(target=self._encode, args=(encoder,), name=f"{self.thread.name}-encode", daemon=True)
        writer.start()
        reason = self._take_pictures()
        pictures_taken = self.first_picture.is_set()
        self.first_picture.set()
        self._frames.put(None)
        writer.join()
        if not pictures_taken:
            encoder.kill()  # a video of no picture is no video: nothing for ffmpeg to finish
        try:
            encoder.wait(timeout=ENCODE_SECONDS)
        except subprocess.TimeoutExpired:
            encoder.kill()
            encoder.wait()
        assert encoder.stderr is not None
        with encoder.stderr:
            errors = encoder.stderr.read()  # at -loglevel error, a few lines at most
        if not pictures_taken:
            self._target.unlink(missing_ok=True)
            self._finished("failed", f"{reason or 'it was stopped'} before its first picture", 0)
        elif encoder.returncode != 0:
            self._finished("failed", f"ffmpeg: {errors.decode(errors='replace').strip()[-300:]}", self._size())
        else:
            self._finished("ready", reason or self._encoder_failure, self._size())
        self.done.set()

    def _size(self) -> int:
        return self._target.stat().st_size if self._target.exists() else 0

    def _encode(self, encoder: subprocess.Popen) -> None:
        """The queue's frames into the encoder, until the end of the recording closes its input."""
        assert encoder.stdin is not None
        with encoder.stdin:
            while (frame := self._frames.get()) is not None:
                picture, holds_room = frame
                try:
                    if self._encoder_failure is None:
                        encoder.stdin.write(picture)
                except OSError as exc:
                    self._encoder_failure = f"the encoder stopped taking pictures: {exc}"
                finally:
                    if holds_room:
                        self._room.release()

    def _take_pictures(self) -> str | None:
        """A frame for each tick of the recording's clock until it should stop; why, if not asked to."""
        began = time.monotonic()
        measured, frames_queued, previous = began, 0, b""
        while not self._stopping.is_set() and self._encoder_failure is None:
            now = time.monotonic()
            if now - began > self._max_seconds:
                return f"it reached its longest, {self._max_seconds:g} s"
            if now - measured > MEASURE_SECONDS:
                measured = now
                refusal = self._allowed(self._size())
                if refusal:
                    return refusal
            frame = int((now - began) / self._interval)
            if frame >= frames_queued:
                try:
                    picture, holds_room = self._next_picture(previous)
                except DriverError:
                    return "the workstation stopped"
                # Frames a slow picture left empty show the one before, as the screen did until now.
                for _ in range(frame - frames_queued):
                    self._frames.put((previous, False))
                self._frames.put((picture, holds_room))
                frames_queued, previous = frame + 1, picture
                self.first_picture.set()
            self._stopping.wait(max(0.0, began + (frame + 1) * self._interval - time.monotonic()))
        return None

    def _next_picture(self, previous: bytes) -> tuple[bytes, bool]:
        """The screen now, holding a place in the queue if it changed; the one before if there is no room."""
        if not self._room.acquire(blocking=False):
            return previous, False
        try:
            picture = self._picture()
        except DriverError:
            self._room.release()
            raise
        if picture == previous:
            self._room.release()
            return previous, False
        return picture, True
