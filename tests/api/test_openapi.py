"""The OpenAPI document is generated from the schemas, valid OpenAPI 3, and covers every route."""

from __future__ import annotations

import re

from openapi_spec_validator import validate

from service.clinic.collections import COLLECTIONS


def test_the_document_is_valid_openapi_3(client):
    spec = client.get("/api/v1/openapi.json").get_json()
    validate(spec)
    assert spec["openapi"].startswith("3.")


def test_every_collection_has_its_paths_and_schemas(client):
    spec = client.get("/api/v1/openapi.json").get_json()
    for name, coll in COLLECTIONS.items():
        prefixes = [f"/{name}"] + ([f"/sessions/{{session_id}}/{name}"] if coll.parent else [])
        for prefix in prefixes:
            assert {"get", "post"} <= set(spec["paths"][prefix]), name
            assert {"get", "put"} <= set(spec["paths"][f"{prefix}/{{id}}"]), name
    assert "post" in spec["paths"]["/import"]


def test_schemas_come_from_marshmallow_with_required_fields_and_enums(client):
    schemas = client.get("/api/v1/openapi.json").get_json()["components"]["schemas"]
    patient = schemas["Patient"]
    assert set(patient["required"]) == {"mrn", "name", "birth_date", "sex"}
    assert patient["properties"]["sex"]["enum"] == ["female", "male", "other", "unknown"]
    assert schemas["Administration"]["properties"]["drug"]["enum"] == ["ketamine", "esketamine"]


def _documented_paths(rule: str) -> list[str]:
    """The document's paths a URL rule stands for: one per collection its converters name."""
    path = rule.removeprefix("/api/v1").replace("<parent_id>", "{session_id}").replace("<record_id>", "{id}")
    out = [path]
    for name in ("collection", "child"):
        match = re.search(rf"<any\(([^)]*)\):{name}>", path)
        if match:
            out = [p.replace(match.group(0), c.strip()) for p in out for c in match.group(1).split(",")]
    return out


def test_every_route_of_the_app_is_documented_with_its_methods(app, client):
    spec = client.get("/api/v1/openapi.json").get_json()
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1/") or rule.rule == "/api/v1/openapi.json":
            continue
        for path in _documented_paths(rule.rule):
            assert path in spec["paths"], path
            assert set(rule.methods or ()) - {"HEAD", "OPTIONS"} <= {m.upper() for m in spec["paths"][path]}, path


def test_responses_are_closed_objects_that_allow_meta_warnings_and_fhir(client):
    """Finding 17: ``additionalProperties: false`` on the record made every answer violate its schema."""
    schemas = client.get("/api/v1/openapi.json").get_json()["components"]["schemas"]
    for name in ("Patient", "Session", "Administration", "Vitals"):
        response = schemas[f"{name}Response"]
        assert response["additionalProperties"] is False
        assert {"meta", "warnings", "fhir"} <= set(response["properties"])
        assert {"id", "meta", "warnings"} <= set(response["required"])
        # a client may echo them back: documented (read-only) on the body too
        assert schemas[name]["properties"]["fhir"]["readOnly"] is True


def test_exclusive_bounds_are_documented_as_exclusive(client):
    """``dose_mg: 0.0`` was schema-valid and refused: ``Range(min_inclusive=False)`` is ``exclusiveMinimum``."""
    props = client.get("/api/v1/openapi.json").get_json()["components"]["schemas"]["Administration"]["properties"]
    assert props["dose_mg"]["minimum"] == 0 and props["dose_mg"]["exclusiveMinimum"] is True
    assert "exclusiveMinimum" not in props["device_count"]


def test_every_operation_documents_the_statuses_any_request_can_get(client):
    spec = client.get("/api/v1/openapi.json").get_json()
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if method in ("get", "put", "post"):
                assert {"401", "414", "429", "431", "503"} <= set(op["responses"]), (method, path)
            if method in ("put", "post"):
                assert "413" in op["responses"], (method, path)


def test_undocumented_methods_are_405_with_allow(api):
    """``GET /import`` was routed to a collection named "import" (404)."""
    for method, path, allow in (("get", "/api/v1/import", {"POST", "OPTIONS"}),
                                ("delete", "/api/v1/patients/pt-1", {"GET", "HEAD", "PUT", "OPTIONS"}),
                                ("put", "/api/v1/patients", {"GET", "HEAD", "POST", "OPTIONS"})):
        response = getattr(api.client, method)(path, headers=api.headers)
        assert response.status_code == 405, (method, path)
        assert set(response.headers["Allow"].replace(" ", "").split(",")) == allow
        assert response.get_json()["errors"]
    options = api.client.options("/api/v1/import", headers=api.headers)
    assert set(options.headers["Allow"].replace(" ", "").split(",")) == {"POST", "OPTIONS"}
