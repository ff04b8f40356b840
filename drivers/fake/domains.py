"""The fake driver's domains: shown in memory, recorded in their files, changed one domain at a time."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from drivers.base import DomainNotFound, DomainState, HypervisorUnavailable
from drivers.fake.domain import DomainFiles, FakeDomain, stopped
from drivers.fake.processes import live_guest


class DomainBook:
    """What the fake hypervisor knows of its domains, and whether it answers at all."""

    def __init__(self, state_dir: Path):
        # Guards the domains in memory, for moments; a change to a domain holds that domain's own lock
        # across its slow parts (a guest's start or stop, the record's write), as libvirt's job lock does.
        self._lock = threading.Lock()
        self._domain_locks: weakref.WeakValueDictionary[str, threading.Lock] = weakref.WeakValueDictionary()
        self.available = True
        self._files = DomainFiles(state_dir)
        self._domains = self._files.load()
        self._forget_dead_guests()

    def running_pids(self) -> set[int | None]:
        return {d.pid for d in self._domains.values() if d.state == DomainState.RUNNING.value}

    @contextmanager
    def changing(self, name: str) -> Iterator[None]:
        """Hold ``name``'s own lock: its changes happen one at a time, other domains' meanwhile."""
        with self._lock:
            lock = self._domain_locks.get(name)
            if lock is None:
                lock = self._domain_locks[name] = threading.Lock()
        with lock:
            yield

    def commit(self, name: str, before: FakeDomain | None, after: FakeDomain | None) -> None:
        """Show ``after`` (None: the domain is gone) and record it; if it cannot be recorded, ``before`` again.

        A record that cannot be written (a full disk) leaves the domain as it
        was and the hypervisor unavailable, as libvirt is when it cannot write
        a definition: nothing changed. The caller holds the domain's lock, so
        nothing else changed it meanwhile.
        """
        self._show(name, after)
        try:
            if after is None:
                self._files.remove(name)
            else:
                self._files.write(name, after)
        except OSError as exc:
            self._show(name, before)
            raise HypervisorUnavailable(f"cannot record domain {name}: {exc.strerror}") from exc

    def show_with_console_port(self, name: str, running: FakeDomain) -> FakeDomain:
        """``running`` with the first console port no other domain has, shown before any other start can take it."""
        with self._lock:
            taken = {d.console_port for d in self._domains.values() if d.console_port}
            running = replace(running, console_port=next(p for p in range(5900, 65536) if p not in taken))
            self._domains[name] = running
        return running

    def _show(self, name: str, domain: FakeDomain | None) -> None:
        with self._lock:
            if domain is None:
                self._domains.pop(name, None)
            else:
                self._domains[name] = domain

    def _forget_dead_guests(self) -> None:
        """A guest that died while no driver watched it is a domain that stopped."""
        for name, domain in list(self._domains.items()):
            if domain.state == DomainState.RUNNING.value and live_guest(domain.pid, domain.pid_started) is None:
                self.commit(name, domain, stopped(domain))

    def check_available(self) -> None:
        if not self.available:
            raise HypervisorUnavailable("fake hypervisor is unavailable")

    def found(self, name: str) -> FakeDomain | None:
        with self._lock:
            self.check_available()
            return self._domains.get(name)

    def current(self, name: str) -> FakeDomain:
        domain = self.found(name)
        if domain is None:
            raise DomainNotFound(name)
        return domain

    def states(self) -> dict[str, DomainState]:
        with self._lock:
            self.check_available()
            return {name: DomainState(d.state) for name, d in self._domains.items()}
