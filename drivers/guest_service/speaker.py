"""The guest's speaker, recorded for the host as it plays: raw 16-bit little-endian samples.

In a guest, cwhost's images with sound run one PulseAudio for the whole machine
whose default sink, ``speaker``, is a null sink (nothing is heard; everything can
be recorded); ``parec`` records its monitor, as the guest user. Beside a fake
guest, its simulated speaker does. The answer is a process's (``spawn``):
``{"pid"}``, STDOUT frames of samples as they come, until the host closes.
"""

from __future__ import annotations

import socket

from . import frames, simulated_speaker, spawn

RATES = (16000, 48000)
CHANNELS = (1, 2)
MONITOR = "speaker.monitor"


def run(sock: socket.socket, reader: frames.Reader, request: dict, place) -> None:
    rate, channels = request.get("rate"), request.get("channels")
    if type(rate) is not int or rate not in RATES or type(channels) is not int or channels not in CHANNELS:
        raise frames.ProtocolError(f"a capture takes a rate of {RATES} and {CHANNELS} channels")
    if place.simulated:
        command = simulated_speaker.recorder(place, rate, channels)
    else:
        command = ["parec", "--raw", "--format=s16le", f"--rate={rate}", f"--channels={channels}"]
        command += [f"--device={MONITOR}", "--latency-msec=100"]
    try:
        process = spawn.popen(command, place.local(place.home), spawn.environment(place, {}))
    except OSError as exc:
        frames.send_json(sock, {"error": {"code": "not_started", "message": f"no speaker to record: {exc}"}})
        return
    spawn.carry(sock, process, 0)
