"""A workstation's screen size is part of its configuration (XGA unless it says otherwise): screenshots
have its size, input is addressed in it, and a bad size is a 400 that changes nothing."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from tests.helpers import create_stopped

WIDE = {"width": 1280, "height": 800}


def test_a_chosen_display_sizes_screenshots_and_bounds_input(client, alice):
    ws = create_stopped(client, alice, display=WIDE)
    assert ws["configuration"]["display"] == WIDE
    url = f"/v1/workstations/{ws['id']}"
    assert client.post(url + "/launch", headers=alice).status_code == 200
    shot = Image.open(io.BytesIO(client.get(url + "/screenshot", headers=alice).data))
    assert shot.size == (1280, 800)
    inside = client.post(url + "/input", json={"actions": [{"type": "move", "x": 1200, "y": 790}]}, headers=alice)
    assert inside.status_code == 200, inside.get_json()
    outside = client.post(url + "/input", json={"actions": [{"type": "move", "x": 1200, "y": 801}]}, headers=alice)
    assert outside.status_code == 400 and "outside the screen" in outside.get_json()["message"]
    client.post(url + "/stop", headers=alice, query_string={"force": "true"})


def test_a_stopped_workstation_changes_its_display_for_its_next_launch(client, alice):
    ws = create_stopped(client, alice)
    assert ws["configuration"]["display"] == {"width": 1024, "height": 768}
    url = f"/v1/workstations/{ws['id']}"
    patched = client.patch(url, json={"configuration": {"display": {"width": 1920, "height": 1080}}}, headers=alice)
    assert patched.get_json()["configuration"]["display"] == {"width": 1920, "height": 1080}
    client.post(url + "/launch", headers=alice)
    assert Image.open(io.BytesIO(client.get(url + "/screenshot", headers=alice).data)).size == (1920, 1080)
    refused = client.patch(url, json={"configuration": {"display": WIDE}}, headers=alice)
    assert (refused.status_code, refused.get_json()["error"]) == (400, "invalid_state")
    client.post(url + "/stop", headers=alice, query_string={"force": "true"})


@pytest.mark.parametrize(
    "display",
    [
        {"width": 100, "height": 768},
        {"width": 1024, "height": 5000},
        {"width": 1024},
        {"width": "1024", "height": 768},
        {"width": 1024.5, "height": 768},
        {"width": 1024, "height": 768, "depth": 24},
        [1024, 768],
        None,
    ],
)
def test_a_display_out_of_range_or_malformed_is_a_400_that_changes_nothing(client, alice, display):
    ws = create_stopped(client, alice)
    url = f"/v1/workstations/{ws['id']}"
    answer = client.patch(url, json={"configuration": {"display": display}}, headers=alice)
    assert (answer.status_code, answer.get_json()["error"]) == (400, "invalid_request"), answer.get_json()
    assert "display" in answer.get_json()["details"]["configuration"]
    assert client.get(url, headers=alice).get_json()["configuration"]["display"] == {"width": 1024, "height": 768}
    created = client.post(
        "/v1/workstations", json={"name": "x", "type": "python", "configuration": {"display": display}}, headers=alice
    )
    assert created.status_code == 400
