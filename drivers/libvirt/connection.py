"""One connection to libvirtd, opened lazily and replaced when it has died.

libvirtd may restart under a running cwhost: the call in flight then raises
``HypervisorUnavailable`` and the next one reconnects. libvirt's errors are
translated into the driver contract's exceptions here.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import libvirt

from drivers.base import (
    DomainNotFound,
    HypervisorUnavailable,
    InvalidDomainState,
    ProvisioningError,
)

_UNREACHABLE = {
    libvirt.VIR_ERR_NO_CONNECT,
    libvirt.VIR_ERR_INVALID_CONN,
    libvirt.VIR_ERR_SYSTEM_ERROR,
    libvirt.VIR_ERR_RPC,
    libvirt.VIR_ERR_AUTH_FAILED,
}


class LibvirtConnection:
    def __init__(self, uri: str):
        self._uri = uri
        self._connection: libvirt.virConnect | None = None
        self._lock = threading.Lock()

    def get(self) -> libvirt.virConnect:
        with self._lock:
            if self._connection is not None:
                try:
                    if self._connection.isAlive():
                        return self._connection
                except libvirt.libvirtError:
                    pass
                self.drop()
            try:
                self._connection = libvirt.open(self._uri)
            except libvirt.libvirtError as exc:
                raise HypervisorUnavailable(f"cannot connect to {self._uri}: {exc}") from exc
            return self._connection

    def drop(self) -> None:
        if self._connection is not None:
            try:
                self._connection.close()
            except libvirt.libvirtError:
                pass
        self._connection = None

    @contextmanager
    def translated(self, name: str | None = None) -> Iterator[None]:
        """libvirt's errors in the block raised as the contract's, about the domain ``name`` if given."""
        try:
            yield
        except libvirt.libvirtError as exc:
            raise self.error(exc, name) from exc

    def error(self, exc: libvirt.libvirtError, name: str | None = None) -> Exception:
        code = exc.get_error_code()
        if code == libvirt.VIR_ERR_NO_DOMAIN:
            return DomainNotFound(name or str(exc))
        if code == libvirt.VIR_ERR_OPERATION_INVALID:
            return InvalidDomainState(str(exc))
        if code in _UNREACHABLE:
            with self._lock:
                if self._connection is not None:
                    self.drop()
            return HypervisorUnavailable(str(exc))
        return ProvisioningError(str(exc))
