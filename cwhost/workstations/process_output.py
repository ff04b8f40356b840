"""A background process's output as its readers see it: the newest bytes of stdout and stderr in the
order written, each chunk numbered by where it ends in the whole output, and the process's end."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class Chunk:
    stream: str  # "stdout" or "stderr"
    data: bytes
    # Where it ends in all the output so far: a reader that has seen up to here resumes after it.
    end: int


class ProcessOutput:
    """Bounded to ``max_bytes``: the oldest chunks go first, and a reader starts at the oldest kept."""

    def __init__(self, max_bytes: int):
        self._max_bytes = max_bytes
        self._chunks: deque[Chunk] = deque()
        self._kept = 0
        self._written = 0
        self._ended = False
        self._changed = threading.Condition()

    @property
    def dropped(self) -> int:
        """Bytes written that no reader can have any more."""
        with self._changed:
            return self._written - self._kept

    def append(self, stream: str, data: bytes) -> None:
        with self._changed:
            data = data[-self._max_bytes :]
            self._written += len(data)
            self._chunks.append(Chunk(stream, data, self._written))
            self._kept += len(data)
            while self._kept > self._max_bytes:
                self._kept -= len(self._chunks.popleft().data)
            self._changed.notify_all()

    def end(self) -> None:
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    def wait_for_end(self, seconds: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: self._ended, seconds)

    def after(self, seen: int, seconds: float) -> tuple[list[Chunk], bool]:
        """The chunks past byte ``seen`` (the first one cut to start there), waiting up to
        ``seconds`` for one; and whether the output has ended with them."""
        with self._changed:
            self._changed.wait_for(lambda: self._ended or (self._chunks and self._chunks[-1].end > seen), seconds)
            found = []
            for chunk in self._chunks:
                if chunk.end <= seen:
                    continue
                start = chunk.end - len(chunk.data)
                found.append(Chunk(chunk.stream, chunk.data[max(seen - start, 0) :], chunk.end))
            return found, self._ended
