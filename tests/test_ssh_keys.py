"""An account's SSH public keys: real keys accepted with OpenSSH's fingerprint, anything else refused saying why."""

from __future__ import annotations

import base64
import hashlib
import warnings

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa
from cryptography.utils import CryptographyDeprecationWarning

from tests.helpers import GOOD_CONFIGURATION

URL = "/v1/account/ssh-keys"


def _openssh(private_key) -> str:
    return (
        private_key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )


@pytest.fixture
def ed25519_key() -> str:
    return _openssh(ed25519.Ed25519PrivateKey.generate()) + " alice@laptop"


def _fingerprint(line: str) -> str:
    """What ssh-keygen -lf prints, computed here independently of the server."""
    blob = base64.b64decode(line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def test_a_key_is_added_listed_and_removed(client, alice, ed25519_key):
    added = client.post(URL, json={"name": "laptop", "publicKey": ed25519_key}, headers=alice)
    assert added.status_code == 201, added.get_json()
    key = added.get_json()
    assert key["name"] == "laptop" and key["publicKey"] == ed25519_key
    assert key["fingerprint"] == _fingerprint(ed25519_key) and key["createdAt"].endswith("Z")
    listed = client.get(URL, headers=alice).get_json()
    assert [k["id"] for k in listed["data"]] == [key["id"]]
    assert client.delete(f"{URL}/{key['id']}", headers=alice).status_code == 204
    assert client.get(URL, headers=alice).get_json()["data"] == []
    assert client.delete(f"{URL}/{key['id']}", headers=alice).status_code == 404


@pytest.mark.parametrize(
    "make",
    [
        lambda: _openssh(rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        lambda: _openssh(ec.generate_private_key(ec.SECP256R1())),
    ],
    ids=["rsa", "ecdsa"],
)
def test_other_key_types_are_taken(client, alice, make):
    line = make()
    added = client.post(URL, json={"name": "k", "publicKey": "  " + line + "\n"}, headers=alice)
    assert added.status_code == 201, added.get_json()
    assert added.get_json()["publicKey"] == line and added.get_json()["fingerprint"] == _fingerprint(line)


def _private(key) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()


@pytest.mark.parametrize(
    "text,reason",
    [
        ("", "Length must be between 1 and"),
        ("   ", "empty"),
        ("ssh-ed25519", "key type and the key"),
        ("ssh-ed25519 not*base64", "base64"),
        ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE+oWZ5C4NzdHUnsH", ""),
        ("ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIE+oWZ5C4NzdHUnsH/I6CyJpex+Gh3+oYR2m+HorZHGM", ""),
        ("ssh-ed25519 AAAA\nssh-ed25519 BBBB", "one line"),
        (None, "private key"),
    ],
    ids=["empty", "blank", "no-key", "not-base64", "truncated", "type-mismatch", "two-lines", "private"],
)
def test_what_is_not_a_public_key_is_400_and_says_why(client, alice, text, reason):
    if text is None:
        text = _private(ed25519.Ed25519PrivateKey.generate())
    refused = client.post(URL, json={"name": "bad", "publicKey": text}, headers=alice)
    assert refused.status_code == 400, refused.get_json()
    body = refused.get_json()
    assert body["error"] == "invalid_request" and "publicKey" in body["details"]
    assert reason in body["message"] + " ".join(body["details"]["publicKey"])
    assert client.get(URL, headers=alice).get_json()["data"] == []


def test_a_key_is_registered_once(client, alice, ed25519_key):
    assert client.post(URL, json={"name": "a", "publicKey": ed25519_key}, headers=alice).status_code == 201
    again = client.post(URL, json={"name": "b", "publicKey": ed25519_key.rsplit(" ", 1)[0]}, headers=alice)
    assert again.status_code == 400 and "already registered" in again.get_json()["message"]


def test_keys_belong_to_their_account(client, alice, bob, ed25519_key):
    key = client.post(URL, json={"name": "a", "publicKey": ed25519_key}, headers=alice).get_json()
    assert client.get(URL, headers=bob).get_json()["data"] == []
    assert client.delete(f"{URL}/{key['id']}", headers=bob).status_code == 404
    assert [k["id"] for k in client.get(URL, headers=alice).get_json()["data"]] == [key["id"]]
    # Bob may register the same public key for himself.
    assert client.post(URL, json={"name": "b", "publicKey": ed25519_key}, headers=bob).status_code == 201


def test_a_launch_gives_the_guest_the_accounts_keys_and_the_workstations_own(client, alice, components, ed25519_key):
    from tests.helpers import GOOD_CONFIGURATION, wait_for_status

    client.post(URL, json={"name": "laptop", "publicKey": ed25519_key}, headers=alice)
    own = _openssh(ed25519.Ed25519PrivateKey.generate())
    created = client.post(
        "/v1/workstations",
        json={"name": "My_Box", "configuration": GOOD_CONFIGURATION, "sshPublicKeys": [own]},
        headers=alice,
    ).get_json()
    wait_for_status(client, alice, created["id"], "stopped")
    assert client.post(f"/v1/workstations/{created['id']}/launch", headers=alice).status_code == 200
    seed = components.driver.guest_seed(f"cwhost-{created['id']}")
    assert seed.hostname == "my-box" and seed.user == components.config.guest.user
    assert seed.ssh_keys == (ed25519_key, own) and seed.mount_share is False


def test_a_bad_key_at_create_is_400_naming_it(client, alice, components, ed25519_key):
    from tests.helpers import GOOD_CONFIGURATION

    refused = client.post(
        "/v1/workstations",
        json={"name": "x", "configuration": GOOD_CONFIGURATION, "sshPublicKeys": [ed25519_key, "ssh-rsa nope"]},
        headers=alice,
    )
    assert refused.status_code == 400, refused.get_json()
    assert refused.get_json()["details"]["sshPublicKeys"]["1"]
    assert components.db.query("SELECT id FROM workstations") == []


def test_a_patch_of_the_workstations_own_keys_takes_effect_at_the_next_launch(client, alice, components, ed25519_key):
    from tests.helpers import GOOD_CONFIGURATION, wait_for_status

    created = client.post(
        "/v1/workstations",
        json={"name": "box", "configuration": GOOD_CONFIGURATION, "sshPublicKeys": [ed25519_key]},
        headers=alice,
    ).get_json()
    url = f"/v1/workstations/{created['id']}"
    wait_for_status(client, alice, created["id"], "stopped")
    refused = client.patch(url, json={"sshPublicKeys": ["ssh-ed25519 broken"]}, headers=alice)
    assert refused.status_code == 400 and refused.get_json()["details"]["sshPublicKeys"]["0"]
    replacement = _openssh(ed25519.Ed25519PrivateKey.generate())
    assert client.patch(url, json={"sshPublicKeys": [replacement]}, headers=alice).status_code == 200
    client.post(url + "/launch", headers=alice)
    assert components.driver.guest_seed(f"cwhost-{created['id']}").ssh_keys == (replacement,)
    client.post(url + "/stop", headers=alice, query_string={"force": "true"})
    assert client.patch(url, json={"sshPublicKeys": []}, headers=alice).status_code == 200
    client.post(url + "/launch", headers=alice)
    assert components.driver.guest_seed(f"cwhost-{created['id']}").ssh_keys == ()
    messages = [e["message"] for e in client.get(url + "/logs", headers=alice).get_json()["data"]]
    assert "Reconfigured: its own SSH keys 1 -> 0." in messages
    client.post(url + "/stop", headers=alice, query_string={"force": "true"})


def _dsa_line() -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)  # as OpenSSH has deprecated them
        return _openssh(dsa.generate_private_key(key_size=1024))


@pytest.mark.parametrize(
    "make,reason",
    [
        (lambda: _dsa_line(), "DSA keys"),
        (lambda: _openssh(rsa.generate_private_key(public_exponent=65537, key_size=1024)), "1024 bits is too weak"),
        (
            lambda: rsa.RSAPublicNumbers(17, 61 * 53)
            .public_key()
            .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
            .decode(),
            "12 bits is too weak",
        ),
        (lambda: _openssh(ed25519.Ed25519PrivateKey.generate()) + " alice\x00@laptop", "control character"),
        (lambda: _openssh(ed25519.Ed25519PrivateKey.generate()) + " \x1b[2Jalice", "control character"),
    ],
    ids=["dsa", "rsa-1024", "rsa-12-bit", "nul-in-comment", "esc-in-comment"],
)
def test_keys_the_images_openssh_would_not_use_are_refused(client, alice, components, make, reason):
    refused = client.post(URL, json={"name": "weak", "publicKey": make()}, headers=alice)
    assert refused.status_code == 400 and reason in refused.get_json()["message"], refused.get_json()
    created = client.post(
        "/v1/workstations",
        json={"name": "w", "configuration": GOOD_CONFIGURATION, "sshPublicKeys": [make()]},
        headers=alice,
    )
    assert created.status_code == 400 and reason in created.get_json()["message"], created.get_json()

