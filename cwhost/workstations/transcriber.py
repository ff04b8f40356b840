"""``python -m cwhost.workstations.transcriber``: 16 kHz mono 16-bit samples on stdin, English text
on stdout (``{"transcript": "..."}``), offline, with the model pocketsphinx's wheel ships.

A process of its own, started per transcription: decoding is CPU-heavy, so it
runs at the lowest priority, with its memory bounded, and a fault in the C
library ends it, never the server.
"""

from __future__ import annotations

import json
import os
import resource
import sys

RATE = 16000
MEMORY_BYTES = 1024**3


def main() -> None:
    os.nice(19)
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_BYTES, MEMORY_BYTES))
    from pocketsphinx import Decoder, Segmenter  # after the limits: the model is loaded under them

    decoder = Decoder(samprate=RATE, loglevel="FATAL")
    said = []
    # Only what the voice detector calls speech is decoded: given silence, the decoder makes up words.
    for speech in Segmenter(sample_rate=RATE).segment(sys.stdin.buffer):
        decoder.start_utt()
        decoder.process_raw(speech.pcm, full_utt=True)
        decoder.end_utt()
        hypothesis = decoder.hyp()
        if hypothesis is not None and hypothesis.hypstr:
            said.append(hypothesis.hypstr)
    json.dump({"transcript": " ".join(said)}, sys.stdout)


if __name__ == "__main__":
    main()
