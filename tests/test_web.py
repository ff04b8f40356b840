"""The dashboard at /ui/, through Flask's test client: sign-in and sessions, CSRF, the pages' safety
headers, forms judged by the API's own schema, and one account never seeing another's workstations."""

from __future__ import annotations

import re
import time

import pytest

from cwhost.accounts import tokens as auth
from tests.helpers import create_stopped, wait_for_status


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
