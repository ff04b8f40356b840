"""The ``cwhost`` command as an operator meets it: one clear line for each mistake, never a traceback."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys

import pytest
import requests

from tests.helpers import cli, free_port, power_off_fake_guests, start_server


@pytest.fixture
def env(tmp_path):
    return {**os.environ, "CWHOST_DATA_DIR": str(tmp_path / "data"), "CWHOST_CONFIG": ""}


def _one_clear_line(result: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("cwhost: ") and "database " not in line]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_version_and_plain_help(env):
    version = cli(env, "--version")
    assert version.returncode == 0 and version.stdout.startswith("cwhost 0.")
    helped = cli(env, "--help")
    assert "``" not in helped.stdout and "serve" in helped.stdout and "accounts" in helped.stdout


@pytest.mark.parametrize("amount", ["nan", "inf", "-inf", "1e13", "ten"])
def test_set_credits_refuses_what_is_not_money_and_changes_nothing(env, tmp_path, amount):
    assert cli(env, "keys", "create", "--account", "team-a").returncode == 0
    assert cli(env, "accounts", "set-credits", "team-a", "25").returncode == 0
    result = cli(env, "accounts", "set-credits", "team-a", "--", amount)
    assert result.returncode == 2
    assert "USD" in _one_clear_line_or_usage(result)
    listed = cli(env, "accounts", "list")
    assert "25.00" in listed.stdout and "inf" not in listed.stdout.lower() and "nan" not in listed.stdout.lower()


def _one_clear_line_or_usage(result: subprocess.CompletedProcess) -> str:
    """argparse's refusal: a usage line, then one line saying what was wrong."""
    assert "Traceback" not in result.stderr, result.stderr
    return result.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("name", ["", "bad name!", "-dash", "a" * 64, "new\nline"])
def test_keys_create_applies_the_account_name_rule(env, tmp_path, name):
    result = cli(env, "keys", "create", f"--account={name}")
    assert result.returncode == 2
    assert "invalid account name" in _one_clear_line_or_usage(result)
    assert not (tmp_path / "data" / "cwhost.db").exists() or _accounts(tmp_path / "data") == []


def _accounts(data_dir) -> list:
    with sqlite3.connect(data_dir / "cwhost.db") as db:
        return db.execute("SELECT name FROM accounts").fetchall()


def test_every_command_that_touches_data_names_its_database(env, tmp_path):
    database = str(tmp_path / "data" / "cwhost.db")
    for args in (("keys", "create", "--account", "a"), ("keys", "list"), ("accounts", "list")):
        result = cli(env, *args)
        assert result.returncode == 0, result.stderr
        assert f"cwhost: database {database}" in result.stderr


def test_serve_takes_config_after_the_command(tmp_path):
    port = free_port()
    config = tmp_path / "c.toml"
    config.write_text(f'data_dir = "{tmp_path / "from-file"}"\n[server]\nport = {port}\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("CWHOST_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "cwhost", "serve", "--config", str(config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        from tests.helpers import wait_until_serving

        assert wait_until_serving(f"http://127.0.0.1:{port}", process)
        assert (tmp_path / "from-file" / "cwhost.db").exists()
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_serve_on_a_port_in_use_says_so_in_one_line(env):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = cli(env, "serve", "--port", str(port))
    assert result.returncode == 1
    line = _one_clear_line(result)
    assert f"127.0.0.1:{port}" in line and "in use" in line
    assert "serving on" not in result.stderr


@pytest.mark.parametrize("kind", ["a file", "not creatable"])
def test_a_data_directory_that_cannot_be_used_is_one_line(tmp_path, kind):
    if kind == "a file":
        data_dir = tmp_path / "target"
        data_dir.write_text("not a directory")
    else:
        data_dir = "/proc/cwhost-data"  # refused even to root
    env = {**os.environ, "CWHOST_DATA_DIR": str(data_dir), "CWHOST_CONFIG": ""}
    for args in (("serve",), ("keys", "list")):
        result = cli(env, *args)
        assert result.returncode == 2, result.stderr
        assert "data directory" in _one_clear_line(result)


def test_a_second_server_on_one_data_directory_refuses_naming_the_first(tmp_path):
    first = start_server(tmp_path)
    try:
        result = cli(first.env, "serve", "--port", str(free_port()))
        assert result.returncode == 1
        line = _one_clear_line(result)
        assert f"PID {first.process.pid}" in line and "already serves" in line
        assert requests.get(first.url + "/healthz").status_code == 200
        first.process.kill()
        first.process.wait()
        second = start_server(tmp_path)  # the dead server's lock went with it
        second.stop()
    finally:
        if first.process.poll() is None:
            first.stop()
        power_off_fake_guests(tmp_path / "server-data")
