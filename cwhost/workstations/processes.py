"""Background processes in running workstations, through each guest's service (drivers.guest_service).

A process is cwhost's for as long as its connection to the guest lasts: one
thread reads that connection into the process's bounded output, and the
guest kills the process if the connection breaks (cwhost restarting, the
workstation stopping). So the table lives in memory; a restart of the service
ends the processes it started, and says so to nobody, because nobody holds
their ids any more. Every limit is per account or per workstation first, and
only then in all.
"""

from __future__ import annotations

import json
import re
import socket
import threading
from dataclasses import dataclass, field

from cwhost.accounts.tokens import Principal
from cwhost.config.server import Config
from cwhost.errors import InvalidState, NotFound, TooManyRequests, Unavailable
from cwhost.ids import new_id
from cwhost.workstations.account_slots import RETRY_SECONDS
from cwhost.workstations.guest_actions import loggable_command
from cwhost.workstations.guest_service import GuestServices
from cwhost.workstations.process_output import ProcessOutput
from drivers.guest_service import frames
from drivers.guest_service.client import Connection, GuestServiceUnavailable, signal_frame

RUNNING, EXITED, KILLED = "running", "exited", "killed"
_SIGNAL_NAME = re.compile(r"[A-Z][A-Z0-9+-]{0,15}")


@dataclass(eq=False)
class BackgroundProcess:
    id: str
    account_id: str
    workstation_id: str
    command: tuple[str, ...]
    started_at: float
    output: ProcessOutput
    status: str = RUNNING
    exit_code: int | None = None
    signal: str | None = None
    timed_out: bool = False
    ended_at: float | None = None
    connection: Connection | None = field(default=None, repr=False)
    sending: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def send(self, kind: bytes, payload: bytes = b"") -> None:
        if self.status != RUNNING or self.connection is None:
            raise InvalidState(f"Process {self.id} has ended ({self.status}); it takes no more input or signals.")
        try:
            with self.sending:
                self.connection.send(kind, payload)
        except OSError as exc:
            raise InvalidState(f"Process {self.id} has ended: its guest broke off ({exc}).") from exc


class Processes:
    def __init__(self, guests: GuestServices, config: Config, clock):
        self._guests = guests
        self._settings = config.processes
        self._clock = clock
        self._lock = threading.Lock()
        self._table: dict[str, BackgroundProcess] = {}

    def start(
        self, principal: Principal, workstation_id: str, command: list[str], env: dict[str, str],
        working_directory: str | None, timeout_seconds: float | None,
    ) -> BackgroundProcess:  # fmt: skip
        ws, service = self._guests.service(principal, workstation_id, "processes")
        process = self._reserve(principal.account_id, ws.id, tuple(command))
        request = {
            "command": command,
            "env": env,
            "workingDirectory": working_directory,
            "timeoutSeconds": min(timeout_seconds or self._settings.max_seconds, self._settings.max_seconds),
        }
        try:
            _, process.connection = self._guests.calling(ws, lambda: service.spawn(request))
        except BaseException:
            with self._lock:
                del self._table[process.id]
            raise
        _keep_alive(process.connection.sock)
        threading.Thread(target=self._pump, args=(process,), name=f"process-{process.id}", daemon=True).start()
        self._guests.log(ws.id, f"Started process {process.id}: {loggable_command(command)}.")
        return process

    def _reserve(self, account_id: str, workstation_id: str, command: tuple[str, ...]) -> BackgroundProcess:
        """The new process's place in the table, once every limit allows it."""
        settings = self._settings
        with self._lock:
            self._prune()
            running = [p for p in self._table.values() if p.status == RUNNING]
            for count, most, setting, whose in (
                (sum(p.workstation_id == workstation_id for p in running), settings.max_per_workstation,
                 "processes.max_per_workstation", "This workstation"),
                (sum(p.account_id == account_id for p in running), settings.max_per_account,
                 "processes.max_per_account", "This account"),
            ):  # fmt: skip
                if count >= most:
                    raise TooManyRequests(
                        f"{whose} already has {count} processes running, the most it may ({setting});"
                        " start another when one ends.",
                        retry_after=RETRY_SECONDS,
                    )
            if len(running) >= settings.max_running:
                raise Unavailable("The server runs as many background processes as it takes.", retry_after=5)
            process = BackgroundProcess(
                new_id("p"), account_id, workstation_id, command, self._clock(),
                ProcessOutput(settings.max_output_bytes),
            )  # fmt: skip
            self._table[process.id] = process
            return process

    def _pump(self, process: BackgroundProcess) -> None:
        """Its output into the buffer until it ends; a broken connection is an end too (killed)."""
        assert process.connection is not None
        ending: dict = {}
        try:
            while (frame := process.connection.frame()) is not None:
                kind, payload = frame
                if kind in (frames.STDOUT, frames.STDERR):
                    process.output.append("stdout" if kind == frames.STDOUT else "stderr", payload)
                elif kind == frames.JSON:
                    ending = json.loads(payload)
                    break
        except (GuestServiceUnavailable, OSError, ValueError):
            pass
        finally:
            process.connection.close()
            self._finish(process, ending)

    def _finish(self, process: BackgroundProcess, ending: dict) -> None:
        # What the guest says is the guest's to choose: only an exit code and a signal's name are taken.
        exit_code, signal = ending.get("exit"), ending.get("signal")
        with self._lock:
            process.exit_code = exit_code if type(exit_code) is int and 0 <= exit_code <= 255 else None
            process.signal = signal if isinstance(signal, str) and _SIGNAL_NAME.fullmatch(signal) else None
            process.timed_out = ending.get("timedOut") is True
            process.status = EXITED if process.exit_code is not None else KILLED
            process.ended_at = self._clock()
        process.output.end()
        how = f"exit code {process.exit_code}" if process.status == EXITED else f"killed ({process.signal or 'lost'})"
        self._guests.log(process.workstation_id, f"Process {process.id} ended: {how}.")

    def _prune(self) -> None:
        """Forget ended processes past their keeping time, and each account's oldest past its count."""
        horizon = self._clock() - self._settings.keep_finished_seconds
        ended = sorted((p for p in self._table.values() if p.ended_at is not None), key=lambda p: -(p.ended_at or 0))
        kept: dict[str, int] = {}
        for process in ended:
            kept[process.account_id] = kept.get(process.account_id, 0) + 1
            if (process.ended_at or 0) < horizon or kept[process.account_id] > self._settings.max_finished_per_account:
                del self._table[process.id]

    def listed(self, principal: Principal, workstation_id: str) -> list[BackgroundProcess]:
        ws = self._guests.owned(principal, workstation_id)
        with self._lock:
            self._prune()
            found = [p for p in self._table.values() if p.workstation_id == ws.id and p.connection is not None]
        return sorted(found, key=lambda p: (p.started_at, p.id))

    def one(self, principal: Principal, workstation_id: str, process_id: str) -> BackgroundProcess:
        ws = self._guests.owned(principal, workstation_id)
        with self._lock:
            self._prune()
            process = self._table.get(process_id)
        if process is None or process.workstation_id != ws.id or process.connection is None:
            raise NotFound(f"Workstation {ws.id} has no process {process_id}.")
        return process

    def write_stdin(self, principal: Principal, workstation_id: str, process_id: str, data: bytes, eof: bool) -> None:
        process = self.one(principal, workstation_id, process_id)
        if data:
            process.send(frames.STDIN, data)
        if eof:
            process.send(frames.END)

    def signal(self, principal: Principal, workstation_id: str, process_id: str, name: str) -> BackgroundProcess:
        process = self.one(principal, workstation_id, process_id)
        process.send(frames.JSON, signal_frame(name))
        return process

    def forget(self, principal: Principal, workstation_id: str, process_id: str) -> None:
        """Kill it if it runs (its connection closed, the guest kills its whole session), and forget it."""
        process = self.one(principal, workstation_id, process_id)
        with self._lock:
            self._table.pop(process.id, None)
        if process.connection is not None:
            process.connection.close()


def _keep_alive(sock: socket.socket) -> None:
    """A guest that vanishes (destroyed) sends no FIN: TCP's keepalive finds it gone within half a minute."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)
