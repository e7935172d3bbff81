"""The OpenAPI document is generated from the schemas, valid OpenAPI 3, and covers every route."""

from __future__ import annotations

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


def test_every_route_of_the_app_is_documented(app, client):
    spec = client.get("/api/v1/openapi.json").get_json()
    documented = {p for p in spec["paths"]}
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1/") or rule.rule == "/api/v1/openapi.json":
            continue
        path = rule.rule.removeprefix("/api/v1").replace("<parent_id>", "{session_id}")
        for collection, coll in COLLECTIONS.items():
            concrete = path.replace("<collection>", collection).replace("<child>", collection)
            concrete = concrete.replace("<record_id>", "{id}")
            if "<child>" in path and not coll.parent:
                continue
            assert concrete in documented, concrete
