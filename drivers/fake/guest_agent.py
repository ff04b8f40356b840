"""What a fake guest answers to commands and screenshots: simulated here, never run on the host.

A handful of commands behave as in a real guest (``echo``, ``cat`` of
stdin, ``true``, ``false``, ``sleep``, which honours the timeout); any other
is "not found", exit code 127, as a shell would say. The screen is a
picture drawn with Pillow, with the domain's title on it.
"""

from __future__ import annotations

import io
import os
import time

from PIL import Image, ImageDraw

from drivers.base import KILLED_AT_TIMEOUT, Display, ExecRequest, ExecResult, ReadinessReport


def _interval(text: str) -> float | None:
    """Seconds as GNU sleep reads them (no suffixes): a number from 0, or inf; None for anything else."""
    try:
        seconds = float(text)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None  # NaN is not >= 0 either


def _run(request: ExecRequest) -> tuple[int, bytes, bytes]:
    program, *args = request.command
    name = os.path.basename(program)
    if name == "echo":
        return 0, (" ".join(args) + "\n").encode(), b""
    if name == "cat" and not args:
        return 0, request.stdin, b""
    if name in ("true", "false"):
        return int(name == "false"), b"", b""
    if name == "sleep" and len(args) == 1:
        seconds = _interval(args[0])
        if seconds is None:
            return 1, b"", f"sleep: invalid time interval '{args[0]}'\n".encode()
        time.sleep(min(seconds, request.timeout_seconds))
        return (KILLED_AT_TIMEOUT if seconds > request.timeout_seconds else 0), b"", b""
    simulated = "echo, cat, true, false and sleep"
    return 127, b"", f"{program}: command not found (a fake guest runs only {simulated})\n".encode()


def simulate_exec(request: ExecRequest) -> ExecResult:
    began = time.monotonic()
    exit_code, stdout, stderr = _run(request)
    elapsed = time.monotonic() - began
    limit = request.max_output_bytes
    return ExecResult(
        exit_code=exit_code,
        stdout=stdout[:limit],
        stderr=stderr[:limit],
        duration_ms=round(elapsed * 1000),
        truncated=len(stdout) > limit or len(stderr) > limit,
        timed_out=exit_code == KILLED_AT_TIMEOUT,
    )


def simulated_screen(title: str, size: Display, typed: str = "", kind: str = "PNG") -> bytes:
    image = Image.new("RGB", size, (32, 48, 64))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, size.width, 32), fill=(200, 200, 200))
    draw.text((12, 10), title, fill=(0, 0, 0))
    draw.text((12, 48), typed, fill=(255, 255, 255))
    out = io.BytesIO()
    image.save(out, format=kind)
    return out.getvalue()


def simulated_readiness(elapsed: float, ready_seconds: float, with_workspace: bool, never: bool) -> ReadinessReport:
    """What a fake guest says of its boot ``elapsed`` seconds after its start: the phases of a real
    one, spread over ``ready_seconds``, those passed by now; a guest that never gets ready passes
    the kernel only."""
    phases = ["kernel", "first-boot", "sshd"] + (["workspace"] if with_workspace else [])
    at = {phase: ready_seconds * (index + 1) / len(phases) for index, phase in enumerate(phases)}
    passed = tuple((phase, round(at[phase], 3)) for phase in phases if at[phase] <= elapsed)
    if never:
        return ReadinessReport(ready=False, phases=passed[:1])
    return ReadinessReport(ready=len(passed) == len(phases), phases=passed)
