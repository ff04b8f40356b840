"""The data directory the commands work in: made, owned by the right user, its database migrated."""

from __future__ import annotations

import os
import pwd
import sys

from cwhost.config.server import ConfigError
from cwhost.db.database import Database


def open_database(config) -> Database:
    """The configured database, migrated; the command says which one, so nobody edits the wrong one."""
    print(f"cwhost: database {config.database_path}", file=sys.stderr)
    db = Database(config.database_path)
    db.migrate()
    return db


def prepare_data_dir(config) -> None:
    """Create the data directory, or stop with one line saying why it cannot be used."""
    try:
        config.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"data directory {config.data_dir} cannot be created: {exc.strerror}") from None
    if not config.data_dir.is_dir():
        raise ConfigError(f"data directory {config.data_dir} is not a directory")
    if not os.access(config.data_dir, os.W_OK | os.X_OK):
        raise ConfigError(f"data directory {config.data_dir} is not writable by this user")


def act_as_data_owner(config) -> None:
    """As root on a data directory another user owns (the unit's ``cwhost``), become that user.

    A database file or its -wal/-shm made by root would lock the service out
    of its own database (SQLite cannot open what it cannot write).
    """
    if os.geteuid() != 0:
        return
    owner = config.data_dir.stat()
    if owner.st_uid == 0:
        return
    try:
        name = pwd.getpwuid(owner.st_uid).pw_name
        os.initgroups(name, owner.st_gid)
    except KeyError:
        name = str(owner.st_uid)
        os.setgroups([])
    os.setgid(owner.st_gid)
    os.setuid(owner.st_uid)
    print(f"cwhost: acting as {name}, who owns {config.data_dir}", file=sys.stderr)
