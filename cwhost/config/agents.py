"""Settings of what agents do inside a running guest through its guest service: background
processes, the guest's files, and the streams and waits on them."""

from __future__ import annotations

from dataclasses import dataclass

from marshmallow.validate import Range

from cwhost.settings import setting

MIB = 1024 * 1024


@dataclass(frozen=True)
class ProcessesConfig:
    # Background processes running at once, per workstation, per account and in all; a start
    # past any of them is refused (429, 503 for the last) until one ends.
    max_per_workstation: int = setting(8, validate=Range(1, 1024))
    max_per_account: int = setting(16, validate=Range(1, 4096))
    max_running: int = setting(256, validate=Range(1, 65536))
    # The newest bytes of a process's stdout and stderr kept for its readers (a late reader starts
    # at the oldest one kept).
    max_output_bytes: int = setting(MIB, validate=Range(4096, 64 * MIB))
    # An ended process is kept (status, exit code, output) this long, and at most this many per
    # account (the oldest goes first); then it is forgotten.
    keep_finished_seconds: int = setting(600, validate=Range(0, 7 * 86400))
    max_finished_per_account: int = setting(16, validate=Range(0, 4096))
    # The longest a process may run; a start's timeoutSeconds may ask for less.
    max_seconds: int = setting(86400, validate=Range(1, 30 * 86400))
    # Terminals (POST .../terminals) open at once per account; one nobody is connected to this long
    # is closed (its program gets SIGHUP).
    max_terminals_per_account: int = setting(4, validate=Range(1, 1024))
    terminal_detached_minutes: int = setting(30, validate=Range(1, 7 * 1440))


@dataclass(frozen=True)
class GuestFilesConfig:
    # PUT .../fs/content: the largest file written at once (streamed, never held whole).
    max_write_bytes: int = setting(1024 * MIB, validate=Range(1024, 1024 * 1024 * MIB))
    # GET .../fs: a directory's entries listed at most (the answer says when it was cut).
    max_list_entries: int = setting(10_000, validate=Range(1, 1_000_000))


@dataclass(frozen=True)
class StreamsConfig:
    # Streams (a process's output, a file's content, a directory's watch) and waits for a process:
    # how many one account may have open (more: 429) and how many in all (more: 503). They hold
    # none of server.max_in_flight's slots, and have threads of their own.
    max_per_account: int = setting(4, validate=Range(1, 1024))
    max_open: int = setting(32, validate=Range(1, 1024))
    # A stream ends after this long (a reader reconnects; Last-Event-ID resumes an output stream),
    # and says it is alive this often when there is nothing else to say.
    max_seconds: int = setting(300, validate=Range(5, 86400))
    keepalive_seconds: int = setting(15, validate=Range(1, 300))
    # GET .../processes/{pid}?wait=exit: the longest one request waits.
    max_wait_seconds: int = setting(60, validate=Range(1, 600))


@dataclass(frozen=True)
class RecordingsConfig:
    # Screen recordings (POST .../recordings) under way at once per account (more: 429); one per
    # workstation at a time. Each ends by itself after max_seconds.
    max_per_account: int = setting(2, validate=Range(1, 64))
    max_seconds: int = setting(3600, validate=Range(10, 86400))
    # Pictures a second, unless a start asks for another (1 to max_frames_per_second).
    frames_per_second: int = setting(2, validate=Range(1, 30))
    max_frames_per_second: int = setting(10, validate=Range(1, 30))


@dataclass(frozen=True)
class AudioConfig:
    # POST .../audio/listen: the longest stretch of the speaker one request records and transcribes
    # (holding one of the account's stream slots meanwhile; the transcription runs at nice 19).
    listen_max_seconds: int = setting(60, validate=Range(1, 600))
