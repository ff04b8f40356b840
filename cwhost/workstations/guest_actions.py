"""What a program does in a running workstation without SSH or network: run commands, see the screen,
type and point.

Both go through the hypervisor: commands through the QEMU guest agent, the
screen through QEMU's own screenshot. Each command is logged with its exit
code, never its output or stdin.
"""

from __future__ import annotations

import logging
import re
import shlex

from cwhost.accounts.tokens import Principal
from cwhost.config.server import Config
from cwhost.errors import InvalidRequest, InvalidState, Unavailable, UnknownAsset
from cwhost.hypervisor import hypervisor
from cwhost.model import RUNNING, Workstation
from cwhost.workstations.account_slots import AccountSlots
from cwhost.workstations.store import WorkstationStore
from drivers.base import ExecRequest, ExecResult, GuestAgentUnavailable, HypervisorDriver, InvalidDomainState
from drivers.input_events import InputAction, InputRejected

log = logging.getLogger(__name__)

# How soon to ask again while a guest's agent is not up (a booting guest).
AGENT_RETRY_SECONDS = 5
# The most of a command its log line shows: a log entry is a line, not a copy of any argument.
LOGGED_COMMAND_CHARS = 200
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def loggable_command(command: list[str]) -> str:
    """The command as a shell would read it, cut to LOGGED_COMMAND_CHARS, control characters escaped
    (a newline in an argument could otherwise forge a line of its own)."""
    text = _CONTROL.sub(lambda found: f"\\x{ord(found.group()):02x}", shlex.join(command))
    return text if len(text) <= LOGGED_COMMAND_CHARS else text[: LOGGED_COMMAND_CHARS - 1] + "…"


# What only a type's packages give (cwhost.images.types): a workstation with no type has none of them.
PACKAGE_CAPABILITIES = frozenset(("cdp", "audio"))


def running_workstation(
    store: WorkstationStore, config: Config, principal: Principal, workstation_id: str, capability: str
) -> Workstation:
    """The caller's workstation, if it runs and its type offers ``capability``; else why not. A
    workstation with no type may try anything but what only a type's packages give."""
    ws = store.load(principal, workstation_id)
    wtype = config.workstation_type(ws.type)
    if wtype is None and capability in PACKAGE_CAPABILITIES:
        raise UnknownAsset(f"Workstation {ws.id} has no type, so no {capability!r}: only a type's packages give it.")
    if wtype is not None and capability not in wtype.capabilities:
        raise UnknownAsset(
            f"Workstation type {wtype.id!r} does not offer {capability!r}; it offers: "
            + ", ".join(wtype.capabilities)
            + "."
        )
    if ws.status != RUNNING:
        raise InvalidState(f"Workstation {ws.id} is {ws.status}; only a running workstation can do this.")
    return ws


class GuestActions:
    def __init__(self, store: WorkstationStore, driver: HypervisorDriver, config: Config):
        self._store = store
        self._driver = driver
        self._config = config
        self._slots = AccountSlots(config.exec.max_per_account, "guest operations", "exec.max_per_account")

    def _running(self, principal: Principal, workstation_id: str, capability: str) -> Workstation:
        return running_workstation(self._store, self._config, principal, workstation_id, capability)

    def run(
        self,
        principal: Principal,
        workstation_id: str,
        command: list[str],
        stdin: bytes,
        env: dict[str, str],
        working_directory: str | None,
        timeout_seconds: float,
    ) -> ExecResult:
        ws = self._running(principal, workstation_id, "exec")
        request = ExecRequest(
            command=tuple(command),
            user=self._config.guest.user,
            stdin=stdin,
            env=tuple(sorted(env.items())),
            working_directory=working_directory,
            timeout_seconds=timeout_seconds,
            max_output_bytes=self._config.exec.max_output_bytes,
        )
        result = self._in_guest(ws, lambda: self._driver.exec(ws.domain_name, request))
        ending = "killed at its timeout" if result.timed_out else f"exit code {result.exit_code}"
        self._store.record(ws.id, ("info", f"Ran {loggable_command(command)}: {ending}."))
        return result

    def send_input(self, principal: Principal, workstation_id: str, actions: list[InputAction]) -> None:
        ws = self._running(principal, workstation_id, "input")
        try:
            self._in_guest(ws, lambda: self._driver.send_input(ws.domain_name, tuple(actions)))
        except InputRejected as exc:
            raise InvalidRequest(f"Nothing was sent: {exc}.") from exc

    def screenshot(self, principal: Principal, workstation_id: str) -> bytes:
        ws = self._running(principal, workstation_id, "screenshot")
        return self._in_guest(ws, lambda: self._driver.screenshot(ws.domain_name))

    def _in_guest(self, ws: Workstation, action):
        try:
            with self._slots.held(ws.account_id), hypervisor("reach"):
                return action()
        except GuestAgentUnavailable as exc:
            raise Unavailable(
                f"Workstation {ws.id}'s guest agent does not answer yet (is it still booting?): {exc}",
                retry_after=AGENT_RETRY_SECONDS,
            ) from exc
        except InvalidDomainState as exc:
            raise InvalidState(f"Workstation {ws.id} is not running on the hypervisor.") from exc
