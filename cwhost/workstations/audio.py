"""The guest's speaker, for the types that have one: recorded as it plays (a WAV stream), or listened
to for some seconds and turned into text (``transcriber``).

The samples come from the guest service (drivers.guest_service.speaker): the
host never hears the guest's sound card, which its images do not have, but
what the guest's PulseAudio plays to its speaker, a null sink.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import wave
from collections.abc import Generator, Iterator
from contextlib import contextmanager

from cwhost.accounts.tokens import Principal
from cwhost.errors import Unavailable
from cwhost.workstations.guest_service import GuestServices
from drivers.guest_service import frames
from drivers.guest_service.client import Connection, GuestServiceRefused, GuestServiceUnavailable
from drivers.guest_service.speaker import CHANNELS, RATES

__all__ = ["CHANNELS", "RATES", "Audio", "transcribe", "wav_header"]
CAPABILITY = "audio"
SAMPLE_BYTES = 2
# What the recogniser takes: 16 kHz, mono.
LISTEN_RATE = 16000
# A speaker sends samples all the time, silence included: this long without any, the guest is gone.
SILENT_GUEST_SECONDS = 15.0
# Decoding takes a fraction of the audio's length here; a transcription past this is stopped.
TRANSCRIBE_SECONDS_PER_SECOND = 2.0
TRANSCRIBE_BASE_SECONDS = 30.0
MESSAGE_CHARS = 300


def wav_header(rate: int, channels: int, frame_count: int) -> bytes:
    """A WAV file's header for ``frame_count`` 16-bit frames, which follow it as they come."""
    buffer = io.BytesIO()
    writer = wave.open(buffer, "wb")
    writer.setnchannels(channels)
    writer.setsampwidth(SAMPLE_BYTES)
    writer.setframerate(rate)
    writer.setnframes(frame_count)
    writer.writeframesraw(b"")
    header = buffer.getvalue()
    writer.close()
    return header


class Audio:
    def __init__(self, guests: GuestServices):
        self._guests = guests

    def _recording(self, principal: Principal, workstation_id: str, rate: int, channels: int) -> Connection:
        ws, service = self._guests.service(principal, workstation_id, CAPABILITY)
        _, connection = self._guests.calling(ws, lambda: service.record_speaker(rate, channels, SILENT_GUEST_SECONDS))
        return connection

    def stream(self, principal: Principal, workstation_id: str, rate: int, channels: int, seconds: int):
        """A WAV file of the next ``seconds`` of the speaker, as its samples come (shorter if the guest
        stops); Unavailable at once when the guest cannot record its speaker."""
        connection = self._recording(principal, workstation_id, rate, channels)
        frame_count = seconds * rate
        samples = _samples(connection, frame_count * channels * SAMPLE_BYTES)
        with _speaker_broken_off(workstation_id, samples):
            first = next(samples, b"")

        def wav() -> Iterator[bytes]:
            try:
                yield wav_header(rate, channels, frame_count) + first
                yield from samples
            except (GuestServiceUnavailable, GuestServiceRefused, OSError):
                return  # the guest went away midway: the file ends short, which its reader sees
            finally:
                samples.close()

        return wav()

    def listen(self, principal: Principal, workstation_id: str, seconds: int) -> str:
        """What the speaker says in the next ``seconds``, as text (empty when it says nothing)."""
        connection = self._recording(principal, workstation_id, LISTEN_RATE, 1)
        wanted = seconds * LISTEN_RATE * SAMPLE_BYTES
        samples = _samples(connection, wanted)
        with _speaker_broken_off(workstation_id, samples):
            heard = b"".join(samples)  # all of them: the recording ends with the last
        if len(heard) < wanted:
            got = len(heard) / (LISTEN_RATE * SAMPLE_BYTES)
            raise Unavailable(f"Workstation {workstation_id}'s speaker stopped after {got:.1f} s of {seconds} s.")
        return transcribe(heard, TRANSCRIBE_BASE_SECONDS + TRANSCRIBE_SECONDS_PER_SECOND * seconds)


@contextmanager
def _speaker_broken_off(workstation_id: str, samples: Generator[bytes, None, None]) -> Iterator[None]:
    """A guest that breaks off (or goes silent) while its samples are awaited is Unavailable; the
    recording ends whatever happens."""
    try:
        yield
    except (GuestServiceUnavailable, OSError) as exc:
        samples.close()
        raise Unavailable(f"Workstation {workstation_id}'s speaker stopped sending: {exc}") from exc
    except BaseException:
        samples.close()
        raise


def _samples(connection: Connection, wanted: int) -> Generator[bytes, None, None]:
    """``wanted`` bytes of samples as they come, then the recording ends (the guest kills ``parec``
    when the connection closes). A recording that ends before its first sample is Unavailable,
    with what the guest said."""
    said, given = b"", 0
    try:
        while given < wanted:
            frame = connection.frame()
            kind, payload = frame if frame is not None else (frames.END, b"")
            if kind == frames.STDOUT:
                chunk = payload[: wanted - given]
                given += len(chunk)
                yield chunk
            elif kind == frames.STDERR:
                said = (said + payload)[-MESSAGE_CHARS:]
            elif given == 0:
                reason = said.decode(errors="replace").strip() or "it ended at once"
                raise Unavailable(f"The guest's speaker could not be recorded: {reason}")
            else:
                return
    finally:
        connection.close()


def transcribe(samples: bytes, timeout: float) -> str:
    """16 kHz mono samples as English text, by ``cwhost.workstations.transcriber`` in a process of
    its own (the lowest priority, bounded memory, killed past ``timeout``)."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "cwhost.workstations.transcriber"],
            input=samples,
            capture_output=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        raise Unavailable(f"The transcription took longer than {timeout:.0f} s and was stopped.") from None
    if done.returncode != 0:
        reason = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no reason given"]
        raise Unavailable(f"The transcription failed: {reason[0][:MESSAGE_CHARS]}")
    return str(json.loads(done.stdout)["transcript"])
