"""What libvirt tells of a running guest and does in it: the QEMU guest agent's addresses and
commands, and the display's screenshot (taken by QEMU, needing nothing in the guest)."""

from __future__ import annotations

import base64
import io
import json
import re
import time

import libvirt
import libvirt_qemu
from PIL import Image

from drivers.base import (
    KILLED_AT_TIMEOUT,
    DriverError,
    ExecRequest,
    ExecResult,
    GuestAgentUnavailable,
    ProvisioningError,
    ReadinessReport,
)
from drivers.input_events import InputAction, all_batches
from drivers.libvirt.cloud_init import READINESS_FILE


def guest_addresses(domain: libvirt.virDomain) -> tuple[str, ...]:
    """The guest's addresses from the network's DHCP leases, else from the guest agent; () until known."""
    for source in (
        libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE,
        libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT,
    ):
        try:
            interfaces = domain.interfaceAddresses(source)
        except libvirt.libvirtError:
            continue
        found = tuple(
            address["addr"]
            for name, interface in sorted(interfaces.items())
            if name != "lo"
            for address in interface.get("addrs") or ()
        )
        if found:
            return found
    return ()


# Between two batches of input events.
INPUT_EVENT_GAP_SECONDS = 0.01
# Polling the agent for a command's end: often enough that a short command answers at once.
EXEC_POLL_SECONDS = 0.05
# What the agent's own calls may take, beyond the command's timeout.
AGENT_CALL_SECONDS = 10
# `cd` to the working directory, then run the command as it was given (no shell parsing of it).
_IN_DIRECTORY = 'cd "$1" || exit 126; shift; exec "$@"'


def exec_argv(request: ExecRequest) -> list[str]:
    """The agent runs this: as the guest user, under coreutils' timeout (KILL), in the directory asked."""
    directory = request.working_directory or f"/home/{request.user}"
    return [
        "/usr/sbin/runuser",
        "-u",
        request.user,
        "--",
        "/usr/bin/timeout",
        "--signal=KILL",
        f"{request.timeout_seconds:g}s",
        "/bin/sh",
        "-c",
        _IN_DIRECTORY,
        "sh",
        directory,
        *request.command,
    ]


def exec_environment(request: ExecRequest) -> list[str]:
    """The command's whole environment (the agent passes no other)."""
    base = {
        "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin",
        "HOME": f"/home/{request.user}",
        "USER": request.user,
        "LANG": "C.UTF-8",
    }
    return [f"{key}={value}" for key, value in {**base, **dict(request.env)}.items()]


def _agent(domain: libvirt.virDomain, command: str, arguments: dict, seconds: int = AGENT_CALL_SECONDS):
    try:
        answer = libvirt_qemu.qemuAgentCommand(
            domain, json.dumps({"execute": command, "arguments": arguments}), seconds, 0
        )
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_SUPPORT:
            raise ProvisioningError("this hypervisor cannot reach guest agents") from exc
        if exc.get_error_code() in (
            libvirt.VIR_ERR_AGENT_UNRESPONSIVE,
            libvirt.VIR_ERR_AGENT_UNSYNCED,
            libvirt.VIR_ERR_OPERATION_INVALID,
        ):
            raise GuestAgentUnavailable(f"the guest's agent does not answer: {exc.get_error_message()}") from exc
        raise
    return json.loads(answer)["return"]


# A report is a few lines; anything longer is not one.
MAX_REPORT_BYTES = 4096
# A booting guest's agent may not answer yet: ask briefly, and ask again next round.
REPORT_CALL_SECONDS = 2
_PHASE = re.compile(r"[a-z][a-z0-9-]{0,31}")
MAX_PHASES = 16


def readiness_report(domain: libvirt.virDomain) -> ReadinessReport | None:
    """The guest's report of its boot, read through its own agent; None while there is none to read."""
    try:
        handle = _agent(domain, "guest-file-open", {"path": READINESS_FILE, "mode": "r"}, REPORT_CALL_SECONDS)
    except (DriverError, libvirt.libvirtError):
        return None  # no agent yet, or no report yet
    try:
        chunk = _agent(domain, "guest-file-read", {"handle": handle, "count": MAX_REPORT_BYTES}, REPORT_CALL_SECONDS)
    except (DriverError, libvirt.libvirtError):
        return None
    finally:
        try:
            _agent(domain, "guest-file-close", {"handle": handle}, REPORT_CALL_SECONDS)
        except (DriverError, libvirt.libvirtError):
            pass
    return parse_readiness(base64.b64decode(chunk.get("buf-b64", "")))


def parse_readiness(data: bytes) -> ReadinessReport | None:
    """A report as the guest wrote it, if it is one: ``{"ready": bool, "phases": [[name, seconds], ...]}``.

    The guest is its tenant's: whatever it wrote is read as data, bounded,
    and anything that is not a report is none.
    """
    try:
        report = json.loads(data.decode("utf-8"))
        ready, phases = report["ready"], report["phases"]
    except (UnicodeDecodeError, ValueError, TypeError, KeyError):
        return None
    if not isinstance(ready, bool) or not isinstance(phases, list) or len(phases) > MAX_PHASES:
        return None
    passed = []
    for phase in phases:
        if not (isinstance(phase, list) and len(phase) == 2 and isinstance(phase[0], str)):
            return None
        name, seconds = phase
        if not _PHASE.fullmatch(name) or isinstance(seconds, bool) or not isinstance(seconds, int | float):
            return None
        if not 0 <= seconds < 10**7:
            return None
        passed.append((name, round(float(seconds), 3)))
    return ReadinessReport(ready=ready, phases=tuple(passed))


def run_command(domain: libvirt.virDomain, request: ExecRequest) -> ExecResult:
    """guest-exec, then guest-exec-status until the command ends (its timeout kills it in the guest)."""
    began = time.monotonic()
    program, *arguments = exec_argv(request)
    started = _agent(
        domain,
        "guest-exec",
        {
            "path": program,
            "arg": arguments,
            "env": exec_environment(request),
            "input-data": base64.b64encode(request.stdin).decode(),
            "capture-output": True,
        },
    )
    deadline = began + request.timeout_seconds + AGENT_CALL_SECONDS
    while True:
        status = _agent(domain, "guest-exec-status", {"pid": started["pid"]})
        if status.get("exited") or time.monotonic() > deadline:
            break
        time.sleep(EXEC_POLL_SECONDS)
    elapsed = time.monotonic() - began
    stdout = base64.b64decode(status.get("out-data", ""))
    stderr = base64.b64decode(status.get("err-data", ""))
    limit = request.max_output_bytes
    exit_code = status.get("exitcode")
    return ExecResult(
        exit_code=exit_code,
        stdout=stdout[:limit],
        stderr=stderr[:limit],
        duration_ms=round(elapsed * 1000),
        truncated=len(stdout) > limit
        or len(stderr) > limit
        or bool(status.get("out-truncated") or status.get("err-truncated")),
        timed_out=not status.get("exited") or (exit_code == KILLED_AT_TIMEOUT and elapsed >= request.timeout_seconds),
    )


def screen_picture(connection: libvirt.virConnect, domain: libvirt.virDomain) -> bytes:
    """The display as QEMU captures it: PPM, or PNG where libvirt asks QEMU for that."""
    stream = connection.newStream(0)
    domain.screenshot(stream, 0, 0)
    received = bytearray()
    while chunk := stream.recv(256 * 1024):
        received += chunk
    stream.finish()
    return bytes(received)


def _capture(connection: libvirt.virConnect, domain: libvirt.virDomain) -> Image.Image:
    """The display, opened lazily: its size is known before its pixels are decoded."""
    return Image.open(io.BytesIO(screen_picture(connection, domain)))


def send_input(connection: libvirt.virConnect, domain: libvirt.virDomain, actions: tuple[InputAction, ...]) -> None:
    """Each action as QEMU input events (QMP input-send-event), all checked before any is sent."""
    screen = _capture(connection, domain).size
    for events in all_batches(actions, screen):
        command = json.dumps({"execute": "input-send-event", "arguments": {"events": events}})
        try:
            libvirt_qemu.qemuMonitorCommand(domain, command, 0)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_SUPPORT:
                raise ProvisioningError("this hypervisor cannot send input to a display") from exc
            raise
        # The guest sees a press and its release as separate events, as from a real keyboard.
        time.sleep(INPUT_EVENT_GAP_SECONDS)


def screenshot_png(connection: libvirt.virConnect, domain: libvirt.virDomain) -> bytes:
    """The display as the hypervisor sees it, as PNG."""
    out = io.BytesIO()
    _capture(connection, domain).save(out, format="PNG")
    return out.getvalue()
