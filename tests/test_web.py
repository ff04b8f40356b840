"""The dashboard at /ui/, through Flask's test client: sign-in and sessions, CSRF, the pages' safety
headers, forms judged by the API's own schema, and one account never seeing another's workstations."""

from __future__ import annotations

import csv
import io
import os
import re
import time

import pytest

from cwhost.accounts import tokens as auth
from cwhost.app import create_app
from cwhost.db.database import Database
from tests.helpers import create_stopped, free_port, make_config, power_off_fake_guests, wait_for_status


def sign_in(client, token: str, follow=False):
    return client.post("/ui/login", data={"token": token}, follow_redirects=follow)


def csrf(client) -> str:
    page = client.get("/ui/").get_data(as_text=True)
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


@pytest.fixture
def alice_token(components):
    return auth.create_key(components.db, "alice").token


@pytest.fixture
def signed_in(client, alice_token):
    assert sign_in(client, alice_token).status_code == 302
    return client


def test_the_root_leads_to_the_dashboard_and_a_stranger_to_its_sign_in(client):
    assert client.get("/").headers["Location"] == "/ui/"
    answer = client.get("/ui/")
    assert answer.status_code == 302 and answer.headers["Location"].startswith("/ui/login")
    page = client.get("/ui/login")
    assert page.status_code == 200 and 'type="password"' in page.get_data(as_text=True)


def test_a_sign_in_sets_a_strict_http_only_cookie_that_is_not_the_token(client, alice_token):
    answer = sign_in(client, alice_token)
    cookie = answer.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/ui/" in cookie and "Max-Age=" in cookie
    assert alice_token not in cookie
    page = client.get("/ui/").get_data(as_text=True)
    assert "Workstations" in page and alice_token not in page


def test_a_bad_token_is_refused_and_repeated_failures_are_slowed(client):
    assert sign_in(client, "cwh_not-a-token").status_code == 401
    statuses = [sign_in(client, "cwh_not-a-token").status_code for _ in range(12)]
    assert statuses[-1] == 429 and "Too many failed sign-ins" in sign_in(client, "x").get_data(as_text=True)


def test_the_api_never_takes_the_session_cookie(signed_in):
    assert signed_in.get("/v1/workstations").status_code == 401


def test_a_change_without_the_csrf_token_is_refused_and_changes_nothing(signed_in, alice_token):
    headers = {"Authorization": f"Bearer {alice_token}"}
    ws = create_stopped(signed_in, headers)["id"]
    wait_for_status(signed_in, headers, ws, "stopped")
    refused = signed_in.post(f"/ui/workstations/{ws}/launch")
    assert refused.status_code == 403
    assert signed_in.post(f"/ui/workstations/{ws}/launch", data={"csrf_token": "forged"}).status_code == 403
    assert signed_in.get(f"/v1/workstations/{ws}", headers=headers).get_json()["status"] == "stopped"
    launched = signed_in.post(f"/ui/workstations/{ws}/launch", data={"csrf_token": csrf(signed_in)})
    assert launched.status_code == 302
    assert signed_in.get(f"/v1/workstations/{ws}", headers=headers).get_json()["status"] == "running"


def test_pages_run_only_their_own_files_and_are_not_framed_elsewhere(signed_in):
    answer = signed_in.get("/ui/")
    policy = answer.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy and "frame-ancestors 'self'" in policy
    assert answer.headers["X-Frame-Options"] == "SAMEORIGIN"
    assert "<script>" not in answer.get_data(as_text=True)


def test_a_form_error_is_the_api_s_own_words_beside_its_field(signed_in):
    token = csrf(signed_in)
    answer = signed_in.post(
        "/ui/workstations",
        data={
            "csrf_token": token,
            "name": "box",
            "mode": "custom",
            "cpuCores": "lots",
            "memoryGB": "1",
            "storageGB": "1",
        },
    )
    assert answer.status_code == 422
    page = answer.get_data(as_text=True)
    assert 'id="cpuCores-error"' in page and "Not a valid integer." in page
    good = {"csrf_token": token, "name": "box", "mode": "custom", "cpuCores": "1", "memoryGB": "1", "storageGB": "1"}
    created = signed_in.post("/ui/workstations", data=good)
    assert created.status_code == 302 and created.headers["Location"].startswith("/ui/workstations/ws-")
    assert ">box</h1>" in signed_in.get(created.headers["Location"]).get_data(as_text=True)


def test_what_a_person_typed_comes_back_as_text_never_markup(signed_in):
    # Names the API takes cannot hold markup; what a form echoes back can, and is escaped.
    hostile = '"><img src=x onerror="alert(1)">'
    answer = signed_in.post(
        "/ui/workstations",
        data={
            "csrf_token": csrf(signed_in),
            "name": hostile,
            "mode": "type",
            "type": "python",
            "sshPublicKeys": hostile,
        },
    )
    page = answer.get_data(as_text=True)
    assert answer.status_code == 422 and 'id="name-error"' in page
    assert hostile not in page and "&#34;&gt;&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in page


def test_another_account_s_workstation_is_404(signed_in, components, client):
    bob = {"Authorization": f"Bearer {auth.create_key(components.db, 'bob').token}"}
    theirs = create_stopped(client, bob, name="bobs")["id"]
    assert signed_in.get(f"/ui/workstations/{theirs}").status_code == 404
    assert signed_in.post(f"/ui/workstations/{theirs}/delete", data={"csrf_token": csrf(signed_in)}).status_code == 404
    assert "bobs" not in signed_in.get("/ui/").get_data(as_text=True)


def test_a_revoked_token_ends_its_sessions_within_a_second(signed_in, components, alice_token):
    assert signed_in.get("/ui/").status_code == 200
    key_id = next(k["id"] for k in auth.list_keys(components.db) if k["account"] == "alice")
    auth.revoke_key(components.db, key_id)
    time.sleep(1.05)
    answer = signed_in.get("/ui/")
    assert answer.status_code == 302 and answer.headers["Location"].startswith("/ui/login")


def test_signing_out_ends_the_session(signed_in):
    assert signed_in.post("/ui/logout", data={"csrf_token": csrf(signed_in)}).status_code == 302
    assert signed_in.get("/ui/").status_code == 302


def test_the_workstation_page_s_totals_are_the_usage_api_s_for_the_same_window(signed_in, alice_token):
    headers = {"Authorization": f"Bearer {alice_token}"}
    ws = create_stopped(signed_in, headers)["id"]
    wait_for_status(signed_in, headers, ws, "stopped")
    page = signed_in.get(f"/ui/workstations/{ws}").get_data(as_text=True)
    for window, granularity in (("day", "hour"), ("month", "day")):
        section = page[page.index(f'data-window="{window}"') - 600 :]
        start, end = re.findall(r"<time>([^<]+)</time>", section)[:2]
        api = signed_in.get(
            f"/v1/workstations/{ws}/usage",
            headers=headers,
            query_string={"from": start, "to": end, "granularity": granularity},
        ).get_json()
        shown = re.search(r'data-figure="memoryGBHours">([0-9.]+)<', section).group(1)
        assert shown == f"{api['memoryGBHours']:.6f}"
        cost = re.search(r'data-figure="costUSD">\$([0-9.]+)<', section).group(1)
        assert cost == f"{api['costUSD']:.6f}"


KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE+oWZ5C4NzdHUnsH/I6CyJpex+Gh3+oYR2m+HorZHGM alice@laptop"


def test_the_account_page_shows_the_balance_and_burn_rate_the_api_gives(signed_in, alice_token):
    api = signed_in.get("/v1/account", headers={"Authorization": f"Bearer {alice_token}"}).get_json()
    page = signed_in.get("/ui/account").get_data(as_text=True)
    balance = "no limit" if api["balanceUSD"] is None else f"${api['balanceUSD']:.4f}"
    assert f'id="balance">{balance}<' in page
    assert f'id="burn-rate">${api["burnRateUSDPerHour"]:.4f} an hour<' in page


def test_ssh_keys_are_added_with_the_api_s_checks_and_removed(signed_in, alice_token):
    headers = {"Authorization": f"Bearer {alice_token}"}
    token = csrf(signed_in)
    bad = signed_in.post("/ui/account/keys", data={"csrf_token": token, "name": "laptop", "publicKey": "ssh-rsa AAAA"})
    assert bad.status_code == 400 and 'id="publicKey-error"' in bad.get_data(as_text=True)
    assert signed_in.get("/v1/account/ssh-keys", headers=headers).get_json()["data"] == []
    added = signed_in.post("/ui/account/keys", data={"csrf_token": token, "name": "laptop", "publicKey": KEY})
    assert added.status_code == 302
    (key,) = signed_in.get("/v1/account/ssh-keys", headers=headers).get_json()["data"]
    assert key["fingerprint"] in signed_in.get("/ui/account").get_data(as_text=True)
    assert signed_in.post(f"/ui/account/keys/{key['id']}/delete", data={"csrf_token": token}).status_code == 302
    assert signed_in.get("/v1/account/ssh-keys", headers=headers).get_json()["data"] == []


def test_the_usage_csv_holds_each_workstation_s_days_summing_to_the_usage_api_s(signed_in, alice_token):
    headers = {"Authorization": f"Bearer {alice_token}"}
    ws = create_stopped(signed_in, headers)["id"]
    time.sleep(1.1)  # the figures run to the last whole second
    answer = signed_in.get("/ui/account/usage.csv")
    assert answer.mimetype == "text/csv" and "attachment" in answer.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(answer.get_data(as_text=True))))
    mine = [row for row in rows if row["workstationId"] == ws]
    assert len(mine) == 30 and {row["name"] for row in mine} == {"ws1"}
    year = list(csv.DictReader(io.StringIO(signed_in.get("/ui/account/usage.csv?span=year").get_data(as_text=True))))
    assert len([row for row in year if row["workstationId"] == ws]) == 365
    assert signed_in.get("/ui/account?span=decade").status_code == 404
    window = {"from": mine[0]["from"], "to": mine[-1]["to"]}
    api = signed_in.get(f"/v1/workstations/{ws}/usage", headers=headers, query_string=window).get_json()
    assert sum(float(row["memoryGBHours"]) for row in mine) == pytest.approx(api["memoryGBHours"], rel=1e-9, abs=1e-15)
    assert sum(float(row["costUSD"]) for row in mine) == pytest.approx(api["costUSD"], rel=1e-9, abs=1e-15)
    assert api["costUSD"] > 0  # its disk is priced from its creation


def test_the_workstation_page_shows_its_log(signed_in, alice_token):
    headers = {"Authorization": f"Bearer {alice_token}"}
    ws = create_stopped(signed_in, headers)["id"]
    logged = signed_in.get(f"/v1/workstations/{ws}/logs", headers=headers).get_json()["data"]
    event = next(entry for entry in logged if entry["type"] == "event")
    text = signed_in.get(f"/v1/workstations/{ws}/logs/{event['id']}/content", headers=headers).get_data(as_text=True)
    page = signed_in.get(f"/ui/workstations/{ws}").get_data(as_text=True)
    assert text.split(" ", 2)[2].strip() in page


@pytest.fixture
def console_client(tmp_path):
    novnc = tmp_path / "novnc"
    (novnc / "core").mkdir(parents=True)
    (novnc / "core" / "rfb.js").write_text("export default class RFB {}\n")
    config = make_config(tmp_path / "data", console={"port": free_port(), "novnc_dir": str(novnc)})
    Database(config.database_path).migrate()
    app = create_app(config)
    token = auth.create_key(app.extensions["cwhost"].db, "alice").token
    client = app.test_client()
    assert sign_in(client, token).status_code == 302
    yield app, client, {"Authorization": f"Bearer {token}"}
    app.extensions["cwhost"].services.background.wait_idle()
    power_off_fake_guests(config.data_dir)


def test_a_ready_workstation_s_page_embeds_its_console_and_a_screenshot(console_client):
    app, client, headers = console_client
    ws = create_stopped(client, headers)["id"]
    assert client.post(f"/v1/workstations/{ws}/launch", headers=headers).status_code == 200
    app.extensions["cwhost"].services.readiness.check()
    page = client.get(f"/ui/workstations/{ws}").get_data(as_text=True)
    link = re.search(r'<iframe id="console" src="([^"]+)"', page).group(1)
    assert link.startswith("/console/")
    # The embedded console is the API's one-time page: it opens once.
    assert client.get(link).status_code == 200 and client.get(link).status_code == 404
    shot = client.get(f"/ui/workstations/{ws}/screenshot.png")
    assert shot.status_code == 200 and shot.data.startswith(b"\x89PNG")
    assert client.post(f"/v1/workstations/{ws}/stop", headers=headers).status_code == 200
    assert client.get(f"/ui/workstations/{ws}/screenshot.png").status_code == 400
    assert '<iframe id="console"' not in client.get(f"/ui/workstations/{ws}").get_data(as_text=True)


def test_workspaces_are_made_filled_streamed_back_archived_and_deleted(signed_in, alice_token, components):
    headers = {"Authorization": f"Bearer {alice_token}"}
    token = csrf(signed_in)
    assert signed_in.post("/ui/workspaces", data={"csrf_token": token, "name": "bad name!"}).status_code == 422
    assert signed_in.post("/ui/workspaces", data={"csrf_token": token, "name": "data"}).status_code == 302
    (workspace,) = signed_in.get("/v1/workspaces", headers=headers).get_json()["data"]
    body = os.urandom(3 * 1024 * 1024)
    url = f"/ui/workspaces/{workspace['id']}/files/inputs/<b>big</b>.bin"
    assert signed_in.put(url, data=body).status_code == 403  # no CSRF token: nothing stored
    stored = signed_in.put(url, data=body, headers={"X-CSRF-Token": token})
    assert stored.status_code == 201 and stored.get_json()["size"] == len(body)
    page = signed_in.get(f"/ui/workspaces/{workspace['id']}").get_data(as_text=True)
    assert "inputs/&lt;b&gt;big&lt;/b&gt;.bin" in page and "<b>big</b>" not in page
    download = re.search(r'href="(/ui/workspaces/[^"]+/download/[^"]+)"', page).group(1)
    with signed_in.get(download) as got:
        assert got.data == body and "attachment" in got.headers["Content-Disposition"]
    bob = {"Authorization": f"Bearer {auth.create_key(components.db, 'bob').token}"}
    assert signed_in.get("/v1/workspaces", headers=bob).get_json()["data"] == []
    signed_in.post(f"/ui/workspaces/{workspace['id']}/archive", data={"csrf_token": token})
    assert signed_in.get(f"/v1/workspaces/{workspace['id']}", headers=headers).get_json()["status"] == "archived"
    refused = signed_in.put(url, data=b"x", headers={"X-CSRF-Token": token})
    assert refused.status_code >= 400 and refused.get_json()["message"]
    signed_in.post(f"/ui/workspaces/{workspace['id']}/delete", data={"csrf_token": token})
    assert signed_in.get(f"/ui/workspaces/{workspace['id']}").status_code == 404


def test_another_account_s_workspace_is_404(signed_in, components, client):
    bob = {"Authorization": f"Bearer {auth.create_key(components.db, 'bob').token}"}
    theirs = client.post("/v1/workspaces", headers=bob, json={"name": "bobs"}).get_json()["id"]
    assert signed_in.get(f"/ui/workspaces/{theirs}").status_code == 404
    token = csrf(signed_in)
    assert (
        signed_in.put(f"/ui/workspaces/{theirs}/files/x", data=b"x", headers={"X-CSRF-Token": token}).status_code == 404
    )
    assert signed_in.post(f"/ui/workspaces/{theirs}/delete", data={"csrf_token": token}).status_code == 404


def test_the_operators_page_is_for_admins_only_and_sets_credits(client, components, signed_in):
    assert signed_in.get("/ui/admin").status_code == 404
    assert signed_in.post("/ui/admin/accounts/alice/credits", data={"csrf_token": csrf(signed_in)}).status_code == 404
    assert "Operators" not in signed_in.get("/ui/").get_data(as_text=True)
    ops = auth.create_key(components.db, "ops", admin=True).token
    second = client.application.test_client()
    assert sign_in(second, ops).status_code == 302
    page = second.get("/ui/admin").get_data(as_text=True)
    host = second.get("/v1/host", headers={"Authorization": f"Bearer {ops}"}).get_json()
    assert f"<td>{host['cpuCores']}</td>" in page and "alice" in page and "python" in page
    token = csrf(second)
    bad = second.post("/ui/admin/accounts/alice/credits", data={"csrf_token": token, "balanceUSD": "lots"})
    assert bad.status_code == 422 and 'id="balance-alice-error"' in bad.get_data(as_text=True)
    assert (
        second.post("/ui/admin/accounts/alice/credits", data={"csrf_token": token, "balanceUSD": "12.5"}).status_code
        == 302
    )
    assert 'id="balance">$12.5000<' in signed_in.get("/ui/account").get_data(as_text=True)


def test_a_stopped_workstation_is_reconfigured_with_the_api_s_rules(signed_in, alice_token):
    headers = {"Authorization": f"Bearer {alice_token}"}
    ws = create_stopped(signed_in, headers)
    token = csrf(signed_in)
    size = str(ws["configuration"]["storageGB"])
    form = {"csrf_token": token, "name": "renamed", "cpuCores": "2", "memoryGB": "2", "storageGB": size, "gpu": ""}
    shrink = signed_in.post(f"/ui/workstations/{ws['id']}/reconfigure", data={**form, "storageGB": "1"})
    page = shrink.get_data(as_text=True)
    assert shrink.status_code == 400 and 'id="re-storageGB-error"' in page and "never shrink" in page
    typo = signed_in.post(f"/ui/workstations/{ws['id']}/reconfigure", data={**form, "cpuCores": "two"})
    assert typo.status_code == 422 and 'id="re-cpuCores-error"' in typo.get_data(as_text=True)
    assert signed_in.get(f"/v1/workstations/{ws['id']}", headers=headers).get_json()["name"] == "ws1"
    tiny = signed_in.post(f"/ui/workstations/{ws['id']}/reconfigure", data={**form, "width": "10", "height": "768"})
    assert tiny.status_code == 422 and 'id="re-width-error"' in tiny.get_data(as_text=True)
    form = {**form, "width": "1280", "height": "800"}
    assert signed_in.post(f"/ui/workstations/{ws['id']}/reconfigure", data=form).status_code == 302
    after = signed_in.get(f"/v1/workstations/{ws['id']}", headers=headers).get_json()
    assert after["name"] == "renamed" and after["configuration"]["cpuCores"] == 2
    assert after["configuration"]["memoryGB"] == 2
    assert after["configuration"]["display"] == {"width": 1280, "height": 800}


def test_a_workspace_and_keys_are_attached_at_create(signed_in, alice_token, components):
    headers = {"Authorization": f"Bearer {alice_token}"}
    workspace = signed_in.post("/v1/workspaces", headers=headers, json={"name": "code"}).get_json()["id"]
    form = signed_in.get("/ui/workstations/new").get_data(as_text=True)
    assert f'<option value="{workspace}">code</option>' in form
    data = {"csrf_token": csrf(signed_in), "name": "box", "mode": "custom", "cpuCores": "1", "memoryGB": "1"}
    data |= {"storageGB": "1", "workspaceId": workspace, "sshPublicKeys": KEY}
    created = signed_in.post("/ui/workstations", data=data)
    assert created.status_code == 302
    ws = signed_in.get("/v1" + created.headers["Location"].removeprefix("/ui"), headers=headers).get_json()
    assert ws["workspace"]["id"] == workspace
    assert components.services.store.find(ws["id"]).ssh_public_keys == (KEY,)
