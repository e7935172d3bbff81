"""GET /fhir/metadata tells the truth: every type and interaction it lists has a route, and every
route is listed."""

from __future__ import annotations

from mappings.resources import MAPPED_TYPES


def test_metadata_is_open_and_declares_r4(client):
    response = client.get("/fhir/metadata")
    assert response.status_code == 200 and response.mimetype == "application/fhir+json"
    statement = response.get_json(force=True)
    assert statement["resourceType"] == "CapabilityStatement"
    assert statement["fhirVersion"] == "4.0.1" and statement["kind"] == "instance"


def test_every_listed_interaction_is_routed(app, client):
    statement = client.get("/fhir/metadata").get_json(force=True)
    rules = {(r.rule, m) for r in app.url_map.iter_rules() for m in r.methods}
    needed = {"read": ("/fhir/<resource_type>/<resource_id>", "GET"),
              "vread": ("/fhir/<resource_type>/<resource_id>/_history/<version_id>", "GET"),
              "history-instance": ("/fhir/<resource_type>/<resource_id>/_history", "GET"),
              "history-type": ("/fhir/<resource_type>/_history", "GET"),
              "search-type": ("/fhir/<resource_type>", "GET"),
              "create": ("/fhir/<resource_type>", "POST"),
              "update": ("/fhir/<resource_type>/<resource_id>", "PUT")}
    audit = {"read": ("/fhir/AuditEvent/<event_id>", "GET"), "search-type": ("/fhir/AuditEvent", "GET")}
    resources = statement["rest"][0]["resource"]
    assert {r["type"] for r in resources} == {*MAPPED_TYPES, "AuditEvent"}
    for resource in resources:
        for interaction in resource["interaction"]:
            assert (audit if resource["type"] == "AuditEvent" else needed)[interaction["code"]] in rules, interaction
    assert all("search-type" in {i["code"] for i in r["interaction"]} for r in resources)


def test_every_advertised_search_parameter_is_one_the_search_accepts(client):
    from service.fhir.audit_views import SEARCH_PARAMS as AUDIT_PARAMS
    from service.fhir.search import SEARCH_PARAMS

    statement = client.get("/fhir/metadata").get_json(force=True)
    for resource in statement["rest"][0]["resource"]:
        accepted = AUDIT_PARAMS if resource["type"] == "AuditEvent" else SEARCH_PARAMS[resource["type"]]
        assert {p["name"] for p in resource["searchParam"]} == set(accepted)


def test_the_capability_statement_passes_the_independent_validator(client, tmp_path):
    from tests.fhir_checks import validate_with_peer

    assert validate_with_peer([client.get("/fhir/metadata").get_json(force=True)], tmp_path) == []
