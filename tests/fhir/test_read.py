"""/fhir read, vread and history over the resources stored at write time; every error an
OperationOutcome; JSON only (XML answered 406)."""

from __future__ import annotations

import pytest

from tests.factories import OBSERVATION, PATIENT, make, seed_course

pytestmark = pytest.mark.postgres

FHIR_JSON = "application/fhir+json"


@pytest.fixture
def patient_url(api) -> str:
    seed_course(api)
    return "/fhir/" + api.get("/patients/pt-1").get_json()["fhir"]["Patient"]


def _outcome(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json(force=True)
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["code"] == code and body["issue"][0]["diagnostics"]
    return body


def test_read_serves_the_stored_resource_with_etag_and_last_modified(client, auth, patient_url):
    response = client.get(patient_url, headers=auth)
    assert response.status_code == 200
    assert response.mimetype == FHIR_JSON
    body = response.get_json(force=True)
    assert body["resourceType"] == "Patient" and body["meta"]["versionId"] == "1"
    assert response.headers["ETag"] == 'W/"1"'
    assert response.headers["Last-Modified"].endswith("GMT")


def test_if_none_match_with_the_current_version_is_304(client, auth, patient_url):
    response = client.get(patient_url, headers=auth | {"If-None-Match": 'W/"1"'})
    assert response.status_code == 304


def test_vread_serves_each_version_and_history_lists_them_newest_first(client, auth, api, patient_url):
    api.put("/patients/pt-1", make(PATIENT, phone="+1 555 0199"))
    assert client.get(patient_url, headers=auth).get_json(force=True)["meta"]["versionId"] == "2"
    first = client.get(f"{patient_url}/_history/1", headers=auth).get_json(force=True)
    assert first["meta"]["versionId"] == "1" and "telecom" not in first
    history = client.get(f"{patient_url}/_history", headers=auth).get_json(force=True)
    assert history["type"] == "history"
    assert [e["resource"]["meta"]["versionId"] for e in history["entry"]] == ["2", "1"]
    assert history["entry"][1]["request"]["method"] == "POST"
    assert history["entry"][0]["response"]["etag"] == 'W/"2"'


def test_type_history_pages_with_count_and_since(client, auth, api):
    seed_course(api)
    for i in range(5):
        api.put(f"/observations/ob-{i}", make(OBSERVATION, id=f"ob-{i}", instrument="pain-nrs", score=i, items=None))
    seen, url = [], "/fhir/Observation/_history?_count=2"
    while url:
        page = client.get(url, headers=auth).get_json(force=True)
        seen += [(e["resource"]["id"], e["resource"]["meta"]["versionId"]) for e in page.get("entry", [])]
        nxt = [link["url"] for link in page["link"] if link["relation"] == "next"]
        url = nxt[0].removeprefix("http://localhost") if nxt else None
    assert len(seen) == len(set(seen)) == 5
    future = client.get("/fhir/Observation/_history?_since=2999-01-01T00:00:00Z", headers=auth).get_json(force=True)
    assert "entry" not in future


def test_a_retired_resource_reads_as_410_gone(client, auth, api):
    seed_course(api)
    from tests.factories import SESSION

    ae = api.put("/sessions/se-1", make(SESSION, adverse_events=[{"text": "Nausea", "severity": "mild"}]))
    url = "/fhir/" + ae.get_json()["fhir"]["AdverseEvent"]
    api.put("/sessions/se-1", SESSION)
    _outcome(client.get(url, headers=auth), 410, "deleted")


@pytest.mark.parametrize("path,status,code", [
    ("/fhir/Patient/nope", 404, "not-found"),
    ("/fhir/Widget/1", 404, "not-supported"),
    ("/fhir/Patient/nope/_history/1", 404, "not-found"),
    ("/fhir/Patient/nope/_history", 404, "not-found"),
    ("/fhir/Observation/_history?_count=abc", 400, "invalid"),
    ("/fhir/Observation/_history?_since=yesterday", 400, "invalid"),
    ("/fhir/Observation/_history?_page=garbage", 400, "invalid"),
])
def test_errors_are_operation_outcomes(client, auth, path, status, code):
    _outcome(client.get(path, headers=auth), status, code)


def test_xml_is_406_and_format_json_is_honoured(client, auth, patient_url):
    _outcome(client.get(patient_url, headers=auth | {"Accept": "application/fhir+xml"}), 406, "not-supported")
    _outcome(client.get(f"{patient_url}?_format=xml", headers=auth), 406, "not-supported")
    assert client.get(f"{patient_url}?_format=json", headers=auth).status_code == 200
    plain = client.get(patient_url, headers=auth | {"Accept": "application/json"})
    assert plain.mimetype == "application/json"
    pretty = client.get(f"{patient_url}?_pretty=true", headers=auth).get_data(as_text=True)
    assert pretty.startswith("{\n")


@pytest.mark.parametrize("method", ["put", "delete", "patch"])
def test_clinical_resources_are_read_only(client, auth, api, method):
    seed_course(api)
    url = "/fhir/" + api.get("/sessions/se-1").get_json()["fhir"]["Encounter"]
    body = _outcome(getattr(client, method)(url, json={"resourceType": "Encounter"}, headers=auth), 405,
                    "not-supported")
    assert "read-only" in body["issue"][0]["diagnostics"]


def test_unknown_fhir_paths_are_operation_outcomes(client, auth):
    _outcome(client.get("/fhir/Patient/1/2/3/4", headers=auth), 404, "not-found")


def test_reads_need_a_token(client, patient_url):
    _outcome(client.get(patient_url), 401, "login")
