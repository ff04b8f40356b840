"""Each workstation's SSH host key is cwhost's: made at create, given to the guest in its seed at
every launch, published so that a client can check it, the same through relaunches, gone at delete."""

from __future__ import annotations

import base64
import hashlib
import stat

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cwhost.model import domain_name
from tests.helpers import create_stopped


def _seeded(components, workstation_id):
    return components.driver.guest_seed(domain_name(workstation_id))


def test_a_workstation_has_its_own_host_key_published_for_known_hosts_and_seeded(client, alice, components):
    ws = create_stopped(client, alice)
    url = f"/v1/workstations/{ws['id']}"
    launched = client.post(url + "/launch", headers=alice)
    ssh = launched.get_json()["access"]["ssh"]
    seed = _seeded(components, ws["id"])
    public = seed.host_key.public_line
    key_type, key = public.split()[:2]
    assert key_type == "ssh-ed25519"
    expected = "SHA256:" + base64.b64encode(hashlib.sha256(base64.b64decode(key)).digest()).decode().rstrip("=")
    assert ssh["hostKeyFingerprint"] == expected
    assert ssh["knownHosts"] == f"[localhost]:{ssh['port']} ssh-ed25519 {key}"
    private = serialization.load_ssh_private_key(seed.host_key.private_openssh.encode(), password=None)
    assert private.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode() == " ".join(public.split()[:2])
    assert "PRIVATE KEY" not in launched.get_data(as_text=True)
    assert "PRIVATE KEY" not in client.get("/v1/workstations", headers=alice).get_data(as_text=True)
    key_file = components.config.data_dir / "host-keys" / ws["id"]
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_the_host_key_stays_through_relaunches_and_new_account_keys_and_goes_at_delete(client, alice, components):
    ws = create_stopped(client, alice)
    url = f"/v1/workstations/{ws['id']}"
    first = client.post(url + "/launch", headers=alice).get_json()["access"]["ssh"]["knownHosts"]
    seeded = _seeded(components, ws["id"]).host_key
    client.post(url + "/stop?force=true", headers=alice)
    laptop = Ed25519PrivateKey.generate().public_key()
    laptop_key = laptop.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    assert client.post("/v1/account/ssh-keys", json={"name": "laptop", "publicKey": laptop_key}, headers=alice).status_code == 201
    again = client.post(url + "/launch", headers=alice).get_json()["access"]["ssh"]["knownHosts"]
    assert again == first and _seeded(components, ws["id"]).host_key == seeded
    assert laptop_key.split()[1] in " ".join(_seeded(components, ws["id"]).ssh_keys)
    client.delete(url + "?force=true", headers=alice)
    assert not (components.config.data_dir / "host-keys" / ws["id"]).exists()
