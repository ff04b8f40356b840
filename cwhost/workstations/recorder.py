"""One screen recording: pictures of a running workstation's display, taken by the hypervisor (nothing
runs in the guest, so the guest is not slowed), encoded as they come by Debian's ffmpeg into WebM
(VP8, each picture timed by the wall clock, so the video lasts as long as the recording did). The
pictures are the hypervisor's as they come (PPM or PNG, which ffmpeg tells apart): none is
compressed only to be decoded again."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from drivers.base import DriverError

# Its file's size is measured, and checked against the account's storage, this often.
MEASURE_SECONDS = 2.0
ENCODE_SECONDS = 120


def ffmpeg_command(target: Path) -> list[str]:
    return [
        # Niced: the guest's CPUs come first on the host.
        "nice", "-n", "19", "ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
        "-f", "image2pipe", "-use_wallclock_as_timestamps", "1", "-i", "-",
        "-c:v", "libvpx", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "1M", "-vsync", "vfr",
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
        self._interval, self._max_seconds = 1 / frames_per_second, max_seconds
        self._allowed, self._finished = allowed, finished
        self._stopping = threading.Event()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"recorder-{target.stem}", daemon=True)

    def stop(self) -> None:
        self._stopping.set()

    def _run(self) -> None:
        encoder = subprocess.Popen(
            ffmpeg_command(self._target), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        assert encoder.stdin is not None
        reason = None
        try:
            reason = self._feed(encoder)
        except (BrokenPipeError, OSError) as exc:
            reason = f"the encoder stopped taking pictures: {exc}"
        finally:
            try:
                encoder.stdin.close()  # the video's end: ffmpeg finishes the file
            except BrokenPipeError:
                pass
        try:
            encoder.wait(timeout=ENCODE_SECONDS)
        except subprocess.TimeoutExpired:
            encoder.kill()
            encoder.wait()
        assert encoder.stderr is not None
        with encoder.stderr:
            errors = encoder.stderr.read()  # at -loglevel error, a few lines at most
        size = self._target.stat().st_size if self._target.exists() else 0
        if encoder.returncode != 0:
            self._finished("failed", f"ffmpeg: {errors.decode(errors='replace').strip()[-300:]}", size)
        else:
            self._finished("ready", reason, size)
        self.done.set()

    def _feed(self, encoder: subprocess.Popen) -> str | None:
        """Pictures into the encoder until it should stop; why it stopped, if not asked to."""
        assert encoder.stdin is not None
        began = time.monotonic()
        measured = began
        while not self._stopping.is_set():
            now = time.monotonic()
            if now - began > self._max_seconds:
                return f"it reached its longest, {self._max_seconds:g} s"
            if now - measured > MEASURE_SECONDS:
                measured = now
                refusal = self._allowed(self._target.stat().st_size if self._target.exists() else 0)
                if refusal:
                    return refusal
            try:
                encoder.stdin.write(self._picture())
            except DriverError:
                return "the workstation stopped"
            self._stopping.wait(max(0.0, self._interval - (time.monotonic() - now)))
        return None
