"""Configuration: embedded defaults, the example file, environment overrides, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from cwhost.config.server import ConfigError, load_config

EXAMPLE = Path(__file__).resolve().parent.parent / "config" / "cwhost.example.toml"


def test_defaults_need_no_file(tmp_path):
    config = load_config(None, environ={"CWHOST_DATA_DIR": str(tmp_path)})
    assert (config.server.host, config.server.port) == ("127.0.0.1", 8080)
    assert config.driver.name == "fake"
    assert config.regions == ("local",)
    assert config.data_dir == tmp_path
    assert config.database_path == tmp_path / "cwhost.db"


def test_data_dir_follows_systemd_state_directory_then_xdg(tmp_path):
    config = load_config(None, environ={"STATE_DIRECTORY": str(tmp_path / "state")})
    assert config.data_dir == tmp_path / "state"
    config = load_config(None, environ={"XDG_DATA_HOME": str(tmp_path / "xdg")})
    assert config.data_dir == tmp_path / "xdg" / "cwhost"


def test_the_example_file_is_valid_and_documents_every_section(tmp_path):
    config = load_config(EXAMPLE, environ={"CWHOST_DATA_DIR": str(tmp_path)})
    assert config.driver.name == "fake"
    text = EXAMPLE.read_text()
    for section in ("[server]", "[driver]", "[driver.fake]", "[workstation]"):
        assert section in text


def test_environment_overrides_the_file(tmp_path):
    file = tmp_path / "c.toml"
    file.write_text('data_dir = "/nowhere"\n[server]\nport = 9000\n')
    config = load_config(
        file,
        environ={"CWHOST_DATA_DIR": str(tmp_path), "CWHOST_PORT": "9100", "CWHOST_HOST": "0.0.0.0"},
    )
    assert config.data_dir == tmp_path
    assert (config.server.host, config.server.port) == ("0.0.0.0", 9100)


def test_config_file_from_cwhost_config(tmp_path):
    file = tmp_path / "c.toml"
    file.write_text('regions = ["us-west-2"]\n')
    config = load_config(None, environ={"CWHOST_CONFIG": str(file), "CWHOST_DATA_DIR": str(tmp_path)})
    assert config.regions == ("us-west-2",)


@pytest.mark.parametrize(
    "text, env, named",
    [
        ("[server]\nport = 70000\n", {}, "server.port"),
        ('[server]\nport = "80"\n', {}, "server.port"),
        ("[server]\nprot = 80\n", {}, "server.prot"),
        ("regions = []\n", {}, "regions"),
        ('regions = ["Has Spaces"]\n', {}, "regions"),
        ('[driver]\nname = "xen"\n', {}, "driver.name"),
        ('[[driver.fake.gpus]]\nmodel = "X"\npci_address = "65:00"\n', {}, "pci_address"),
        ("[workstation]\nmax_cpu_cores = 0\n", {}, "workstation.max_cpu_cores"),
        ("", {"CWHOST_PORT": "http"}, "CWHOST_PORT"),
        ("this is = not toml [", {}, "not valid TOML"),
        # What reaches a command line as an argument must never be read as an option.
        ('[images]\nmirror = "--customize-hook=touch /pwned"\n', {}, "images.mirror"),
        ('[images]\nmirror = "http://a.lan/debian http://b.lan"\n', {}, "images.mirror"),
        ('[types.web]\ncpu_cores = 1\nmemory_gb = 1\nstorage_gb = 1\nstart_url = "--no-sandbox"\n', {}, "start_url"),
        ('[types.web]\ncpu_cores = 1\nmemory_gb = 1\nstorage_gb = 1\nstart_url = "a\\nb"\n', {}, "start_url"),
        ("[driver.libvirt]\nguest_subnet = \"8.8.8.0/24\"\n", {}, "driver.libvirt.guest_subnet"),
        ("[driver.libvirt]\nguest_subnet = \"10.0.0.0/30\"\n", {}, "driver.libvirt.guest_subnet"),
    ],
)
def test_bad_values_are_named_in_the_error(tmp_path, text, env, named):
    file = tmp_path / "c.toml"
    file.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_config(file, environ={"CWHOST_DATA_DIR": str(tmp_path), **env})
    assert named in str(error.value)


def test_a_missing_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.toml", environ={})
