"""Each workstation's SSH host key, made by cwhost at create, so that a client can check the
workstation it reaches (``StrictHostKeyChecking=yes``) without trusting its first answer.

The key (ed25519, made with ``cryptography``) goes to the guest in its seed at
every launch, so the guest generates none and keeps the same one through
every relaunch and every change of its seed; only a delete ends it. Its
private half is a file of its own in the data directory (mode 0600, as
sshd keeps its own); its public line is in the workstation's row.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cwhost.accounts.ssh_keys import fingerprint
from cwhost.errors import disk_faults
from drivers.base import HostKey


class HostKeys:
    def __init__(self, directory: Path):
        self._directory = Path(directory)
        self._directory.mkdir(mode=0o700, parents=True, exist_ok=True)

    def _path(self, workstation_id: str) -> Path:
        return self._directory / workstation_id

    def make(self, workstation_id: str) -> str:
        """A new key for the workstation, its private half written; its public line."""
        key = Ed25519PrivateKey.generate()
        private = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        )
        path = self._path(workstation_id)
        partial = path.with_suffix(".partial")
        with disk_faults():
            try:
                fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
                with os.fdopen(fd, "wb") as out:
                    out.write(private)
                    out.flush()
                    os.fsync(out.fileno())
                partial.replace(path)
            except BaseException:
                partial.unlink(missing_ok=True)
                raise
        public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        return public.decode()

    def of(self, workstation_id: str, public_line: str) -> HostKey | None:
        """The key to seed the guest with; None if its private half is gone (the guest then makes its own)."""
        try:
            private = self._path(workstation_id).read_text()
        except FileNotFoundError:
            return None
        return HostKey(private_openssh=private, public_line=public_line)

    def forget(self, workstation_id: str) -> None:
        self._path(workstation_id).unlink(missing_ok=True)


def host_key_fingerprint(public_line: str) -> str:
    return fingerprint(base64.b64decode(public_line.split()[1]))


def known_hosts_line(host: str, port: int, public_line: str) -> str:
    """The line for ~/.ssh/known_hosts, naming the host as ssh looks it up: ``[host]:port`` unless port 22."""
    name = host if port == 22 else f"[{host}]:{port}"
    key_type, key = public_line.split()[:2]
    return f"{name} {key_type} {key}"
