"""The OpenAPI document describes the API as it is, and its UI works with no internet."""

from __future__ import annotations

import re

import pytest
from openapi_spec_validator import validate

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
