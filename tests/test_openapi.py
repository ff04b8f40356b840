"""The OpenAPI document describes the API as it is, and its UI works with no internet."""

from __future__ import annotations

import re

import jsonschema
import pytest
from openapi_spec_validator import validate

from cwhost.accounts import tokens as auth
from cwhost.app import create_app
from cwhost.db.database import Database
from tests.helpers import bearer, create_stopped, make_config

ENDPOINTS = {
    ("post", "/v1/workstations"),
    ("get", "/v1/workstations"),
    ("get", "/v1/workstations/{workstation_id}"),
    ("patch", "/v1/workstations/{workstation_id}"),
    ("delete", "/v1/workstations/{workstation_id}"),
    ("post", "/v1/workstations/{workstation_id}/launch"),
    ("post", "/v1/workstations/{workstation_id}/stop"),
    ("get", "/v1/workstations/{workstation_id}/usage"),
    ("get", "/v1/host"),
    ("get", "/healthz"),
    ("get", "/metrics"),
}


@pytest.fixture
def spec(client):
    response = client.get("/openapi.json")
    assert response.status_code == 200
    return response.get_json()


def _operations(spec):
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method in {"get", "post", "put", "patch", "delete"}:
                yield method, path, operation


def test_document_is_valid_openapi_3_1(spec):
    assert spec["openapi"].startswith("3.1")
    validate(spec)


def test_every_endpoint_is_described(spec):
    assert ENDPOINTS <= {(m, p) for m, p, _ in _operations(spec)}


def test_every_v1_operation_documents_auth_and_its_errors(spec):
    for method, path, operation in _operations(spec):
        if path == "/metrics":
            assert {"401", "403"} <= set(operation["responses"])
            continue
        if not path.startswith("/v1/"):
            assert operation.get("security") == [], path
            continue
        responses = operation["responses"]
        assert {"401", "500"} <= set(responses), (method, path)
        if "{workstation_id}" in path:
            assert "404" in responses, (method, path)
        if method in {"post", "patch"} and "requestBody" in operation:
            assert {"400", "415"} <= set(responses), (method, path)
    assert spec["security"] == [{"bearerAuth": []}]


def test_error_responses_use_the_error_schema(spec):
    error = spec["components"]["schemas"]["Error"]
    assert set(error["required"]) == {"error", "message", "requestId"}
    refs = {
        response.get("$ref", "")
        for _, _, operation in _operations(spec)
        for status, response in operation["responses"].items()
        if status.startswith(("4", "5"))
    }
    for ref in refs:
        name = ref.rsplit("/", 1)[-1]
        schema = spec["components"]["responses"][name]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/Error"}


def _documented_headers(spec, method, path, status):
    """The headers the document promises on one answer, each resolved to its header object."""
    response = spec["paths"][path][method]["responses"][status]
    if "$ref" in response:
        response = spec["components"]["responses"][response["$ref"].rsplit("/", 1)[-1]]
    return {
        name: spec["components"]["headers"][header["$ref"].rsplit("/", 1)[-1]] if "$ref" in header else header
        for name, header in response.get("headers", {}).items()
    }


def test_every_answer_documents_its_request_id(spec):
    for method, path, operation in _operations(spec):
        for status in operation["responses"]:
            request_id = _documented_headers(spec, method, path, status).get("X-Request-Id")
            assert request_id and request_id["required"], (method, path, status)


def _assert_headers_as_documented(spec, method, path, response, *expected):
    documented = _documented_headers(spec, method, path, str(response.status_code))
    assert {"X-Request-Id", *expected} <= set(documented)
    for name, header in documented.items():
        if header.get("required"):
            jsonschema.validate(response.headers[name], header["schema"])


def test_401_429_and_503_carry_the_headers_the_document_promises(spec, client, components, tmp_path):
    one = "/v1/workstations/{workstation_id}"
    alice = bearer(auth.create_key(components.db, "alice").token)
    ws = create_stopped(client, alice)
    answer = client.get(f"/v1/workstations/{ws['id']}", headers=alice)
    _assert_headers_as_documented(spec, "get", one, answer)
    unauthorized = client.get(f"/v1/workstations/{ws['id']}")
    assert unauthorized.status_code == 401
    _assert_headers_as_documented(spec, "get", one, unauthorized, "WWW-Authenticate")
    components.driver.set_available(False)
    unavailable = client.post(f"/v1/workstations/{ws['id']}/launch", headers=alice)
    assert unavailable.status_code == 503
    _assert_headers_as_documented(spec, "post", one + "/launch", unavailable, "Retry-After")
    components.driver.set_available(True)

    limited_config = make_config(tmp_path / "limited", server={"threads": 4, "max_in_flight": 2, "rate_limit_per_minute": 1})
    Database(limited_config.database_path).migrate()
    limited_app = create_app(limited_config)
    bob = bearer(auth.create_key(limited_app.extensions["cwhost"].db, "bob").token)
    answers = [limited_app.test_client().get("/v1/workstations", headers=bob) for _ in range(2)]
    assert [a.status_code for a in answers] == [200, 429]
    _assert_headers_as_documented(spec, "get", "/v1/workstations", answers[1], "Retry-After")


def test_request_schemas_reject_unknown_fields_and_bound_numbers(spec):
    create = spec["components"]["schemas"]["WorkstationCreate"]
    assert create["additionalProperties"] is False
    cpu = spec["components"]["schemas"]["ConfigurationIn"]["properties"]["cpuCores"]
    assert cpu["minimum"] == 1 and cpu["maximum"] >= 1


def test_swagger_ui_is_served_without_a_cdn(client):
    page = client.get("/docs")
    assert page.status_code == 200
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.get_data(as_text=True))
    assert sources and all(s.startswith("/docs/assets/") for s in sources)
    for source in sources:
        asset = client.get(source)
        assert asset.status_code == 200 and len(asset.get_data()) > 1000
        asset.close()


def test_links_lead_from_a_created_workstation_through_its_life_cycle(spec):
    def followed(method, path, status):
        return spec["paths"][path][method]["responses"][status].get("links", {})

    created = followed("post", "/v1/workstations", "201")
    assert {"launch", "stop", "patch", "delete"} <= set(created)
    assert "stop" in followed("post", "/v1/workstations/{workstation_id}/launch", "200")
    assert "patch" in followed("post", "/v1/workstations/{workstation_id}/stop", "200")
    for method, path, operation in _operations(spec):
        for status, response in operation["responses"].items():
            for link in response.get("links", {}).values():
                # Each link names an operation of this document and one of its path parameters.
                target_path, target_method = link["operationRef"].removeprefix("#/paths/").rsplit("/", 1)
                target_path = target_path.replace("~1", "/").replace("~0", "~")
                target = spec["paths"][target_path]
                assert target_method in target
                names = {p["name"] for p in target.get("parameters", []) + target[target_method].get("parameters", [])}
                assert set(link["parameters"]) <= names
                assert all(value == "$response.body#/id" for value in link["parameters"].values())


def _document_accepts(spec, component: str, value) -> bool:
    schema = {**spec["components"]["schemas"][component], "$schema": "https://json-schema.org/draft/2020-12/schema"}
    return jsonschema.Draft202012Validator(schema).is_valid(value)


INPUT_ACTIONS = [
    {"type": "key"},
    {"type": "key", "keys": ["ctrl", "a"]},
    {"type": "text"},
    {"type": "text", "text": "hi"},
    {"type": "move", "x": 1},
    {"type": "move", "x": 1, "y": 2},
    {"type": "click"},
    {"type": "click", "x": 3},
    {"type": "click", "x": 3, "y": 4, "button": "right"},
    {"type": "double_click", "y": 4},
    {"type": "drag", "x": 1, "y": 1},
    {"type": "drag", "x": 1, "y": 1, "toX": 2},
    {"type": "drag", "x": 1, "y": 1, "toX": 2, "toY": 2},
    {"type": "scroll", "dy": 2},
]


def test_the_document_states_what_each_input_action_needs_as_the_server_checks_it(spec, client, alice):
    """An action the document allows is sent; one it does not is refused: a generated client agrees."""
    url = f"/v1/workstations/{create_stopped(client, alice, cpuCores=1, memoryGB=1)['id']}"
    client.post(url + "/launch", headers=alice)
    for action in INPUT_ACTIONS:
        answer = client.post(url + "/input", json={"actions": [action]}, headers=alice)
        assert answer.status_code in (200, 400), answer.get_json()
        assert _document_accepts(spec, "InputAction", action) == (answer.status_code == 200), (action, answer.get_json())
    client.post(url + "/stop", headers=alice, query_string={"force": "true"})


ED25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE+oWZ5C4NzdHUnsH/I6CyJpex+Gh3+oYR2m+HorZHGM"


@pytest.mark.parametrize(
    "key",
    [
        ED25519,
        ED25519 + " alice@laptop",
        "  " + ED25519.replace(" ", "\t") + "\tlaptop \n",
        ED25519 + " alice\x1b[2J",
        ED25519 + " a\x00b",
        "ssh-dss " + ED25519.split()[1],
        "ecdsa-sha2-nistp999 " + ED25519.split()[1],
        ED25519.split()[1],
    ],
    ids=["plain", "comment", "tabs-and-blanks", "escape", "nul", "dss", "no-such-type", "no-type"],
)
def test_an_ssh_key_the_documents_pattern_refuses_the_server_refuses(spec, client, alice, key):
    answer = client.post("/v1/account/ssh-keys", json={"name": "k", "publicKey": key}, headers=alice)
    pattern = spec["components"]["schemas"]["SshKeyCreate"]["properties"]["publicKey"]["pattern"]
    if re.search(pattern, key) is None:
        assert answer.status_code == 400, (key, answer.get_json())
    else:
        assert answer.status_code == 201, (key, answer.get_json())


def test_a_patch_with_no_body_is_refused_as_the_document_requires_one(spec, client, alice):
    operation = spec["paths"]["/v1/workstations/{workstation_id}"]["patch"]
    assert operation["requestBody"]["required"] is True
    url = f"/v1/workstations/{create_stopped(client, alice)['id']}"
    refused = client.patch(url, headers=alice)
    assert refused.status_code == 400 and "needs a JSON body" in str(refused.get_json()["details"])
    assert client.patch(url, json={}, headers=alice).status_code == 200
