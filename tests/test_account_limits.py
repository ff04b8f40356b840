"""Limits an operator sets at run time, through the API and the operators' page: they refuse what comes
next, survive a restart, and give way to the configuration again when cleared."""

from __future__ import annotations

import pytest

from cwhost.accounts import tokens as auth
from cwhost.accounts.limits import AccountLimitsBook
from cwhost.app import create_app
from cwhost.db.database import Database
from tests.helpers import create_stopped, make_config
from tests.test_web import csrf, sign_in


def _limits(client, headers) -> dict:
    return client.get("/v1/account", headers=headers).get_json()["limits"]


def test_an_admin_lowers_a_limit_and_the_next_create_is_refused_until_it_is_cleared(client, alice, admin):
    create_stopped(client, alice)
    answer = client.patch("/v1/accounts/alice/limits", json={"maxWorkstations": 1}, headers=admin)
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json()["limits"]["maxWorkstations"] == 1
    refused = client.post("/v1/workstations", json={"name": "two", "type": "python"}, headers=alice)
    assert (refused.status_code, refused.get_json()["error"]) == (403, "quota_exceeded")
    assert "at most 1" in refused.get_json()["message"]
    cleared = client.patch("/v1/accounts/alice/limits", json={"maxWorkstations": None}, headers=admin)
    assert cleared.get_json()["limits"]["maxWorkstations"] == 20  # the configuration's default again
    assert client.post("/v1/workstations", json={"name": "two", "type": "python"}, headers=alice).status_code == 201


def test_limits_are_set_for_the_named_account_only(client, alice, bob, admin):
    client.patch("/v1/accounts/bob/limits", json={"maxRunningGpus": 0, "maxStorageGB": 7}, headers=admin)
    assert _limits(client, bob)["maxRunningGpus"] == 0 and _limits(client, bob)["maxStorageGB"] == 7
    assert _limits(client, alice)["maxRunningGpus"] == 4 and _limits(client, alice)["maxStorageGB"] == 2048


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"maxWorkstations": -1},
        {"maxWorkstations": 1.5},
        {"maxWorkstations": "3"},
        {"maxWorkstations": True},
        {"maxWorkstations": 10**7},
        {"maxWorkstations": 3, "maxPets": 1},
    ],
)
def test_a_bad_limit_is_a_400_and_changes_nothing(client, alice, admin, body):
    before = _limits(client, alice)
    answer = client.patch("/v1/accounts/alice/limits", json=body, headers=admin)
    assert (answer.status_code, answer.get_json()["error"]) == (400, "invalid_request"), answer.get_json()
    assert _limits(client, alice) == before


def test_only_an_admin_sets_limits_and_only_of_an_account_that_exists(client, alice, admin):
    refused = client.patch("/v1/accounts/alice/limits", json={"maxWorkstations": 100}, headers=alice)
    assert (refused.status_code, refused.get_json()["error"]) == (403, "forbidden")
    assert _limits(client, alice)["maxWorkstations"] == 20
    missing = client.patch("/v1/accounts/nobody/limits", json={"maxWorkstations": 1}, headers=admin)
    assert missing.status_code == 404


def test_a_limit_set_at_run_time_outlives_a_restart_and_beats_the_configuration(tmp_path):
    config = make_config(tmp_path / "data", limits={"accounts": {"alice": {"max_workstations": 9}}})
    Database(config.database_path).migrate()
    app = create_app(config)
    db = app.extensions["cwhost"].db
    alice_id = auth.create_key(db, "alice").account_id
    admin = {"Authorization": f"Bearer {auth.create_key(db, 'ops', admin=True).token}"}
    client = app.test_client()
    assert client.patch("/v1/accounts/alice/limits", json={"maxWorkstations": 2}, headers=admin).status_code == 200
    reopened = Database(config.database_path)  # what a restarted server reads
    assert AccountLimitsBook(reopened, config.limits).of(alice_id).max_workstations == 2
    client.patch("/v1/accounts/alice/limits", json={"maxWorkstations": None}, headers=admin)
    assert AccountLimitsBook(reopened, config.limits).of(alice_id).max_workstations == 9


def test_the_operators_page_sets_limits_with_errors_beside_their_fields(client, components, alice):
    ops = client.application.test_client()
    assert sign_in(ops, auth.create_key(components.db, "ops", admin=True).token).status_code == 302
    token = csrf(ops)
    form = {
        "csrf_token": token,
        "maxWorkstations": "3",
        "maxRunningCpuCores": "",
        "maxRunningMemoryGB": "12",
        "maxRunningGpus": "none",
        "maxStorageGB": "100",
    }
    bad = ops.post("/ui/admin/accounts/alice/limits", data=form)
    page = bad.get_data(as_text=True)
    assert bad.status_code == 422 and 'id="limit-alice-maxRunningGpus-error"' in page
    assert _limits(client, alice)["maxWorkstations"] == 20
    assert ops.post("/ui/admin/accounts/alice/limits", data={**form, "maxRunningGpus": "0"}).status_code == 302
    limits = _limits(client, alice)
    assert (limits["maxWorkstations"], limits["maxRunningCpuCores"], limits["maxRunningGpus"]) == (3, 64, 0)
    assert "3 workstations, 64 running cores, 12 GB memory, 0 GPUs" in ops.get("/ui/admin").get_data(as_text=True)
    assert ops.post("/ui/admin/accounts/nobody/limits", data={**form, "maxRunningGpus": "0"}).status_code == 404
