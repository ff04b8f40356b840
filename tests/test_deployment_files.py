"""The systemd unit keeps the hardening docs/operations.md promises and nothing that breaks metering."""

from __future__ import annotations

import configparser
from pathlib import Path

SYSTEMD = Path(__file__).resolve().parent.parent / "systemd"


def unit_service_section():
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read(SYSTEMD / "cwhost.service")
    return parser["Service"]


def test_unit_runs_cwhost_serve_as_a_dedicated_hardened_user():
    service = unit_service_section()
    assert service["User"] == "cwhost"
    assert service["ExecStart"].endswith("cwhost serve")
    assert service["StateDirectory"] == "cwhost"
    assert service["SupplementaryGroups"] == "libvirt"
    for setting in ("NoNewPrivileges", "ProtectHome", "PrivateTmp"):
        assert service[setting] == "yes"
    assert service["ProtectSystem"] == "strict"
    # Only what giving workspace files to the guest's uid and still managing them takes.
    for setting in ("CapabilityBoundingSet", "AmbientCapabilities"):
        assert set(service[setting].split()) == {"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER"}


def test_unit_leaves_proc_and_devices_visible_for_metering():
    service = unit_service_section()
    for forbidden in ("ProtectProc", "ProcSubset", "PrivateDevices"):
        assert forbidden not in service


def test_sysusers_creates_the_user_in_the_libvirt_group():
    lines = [
        line.split()
        for line in (SYSTEMD / "cwhost.sysusers.conf").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert ["u", "cwhost"] == lines[0][:2]
    assert ["m", "cwhost", "libvirt"] in lines


def test_the_example_configuration_uses_the_units_state_directory():
    import tomllib

    example = tomllib.loads((SYSTEMD.parent / "config" / "cwhost.example.toml").read_text())
    assert example["data_dir"] == "/var/lib/" + unit_service_section()["StateDirectory"]
