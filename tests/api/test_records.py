"""Each collection of the clinic API: create, read, replace, list — on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from tests.factories import (
    ADMINISTRATION,
    COURSE,
    NURSE,
    OBSERVATION,
    PATIENT,
    PSYCHIATRIST,
    REFERRAL,
    SESSION,
    VITALS,
    make,
    seed_course,
)

pytestmark = pytest.mark.postgres

TOP_LEVEL = [
    ("practitioners", PSYCHIATRIST),
    ("patients", PATIENT),
    ("referrals", REFERRAL),
    ("courses", COURSE),
    ("sessions", SESSION),
    ("observations", OBSERVATION),
]


def test_every_top_level_collection_round_trips_what_was_put(api):
    api.put("/practitioners/rn-cho", NURSE)
    for collection, body in TOP_LEVEL:
        created = api.put(f"/{collection}/{body['id']}", body)
        assert created.status_code in (200, 201), created.get_json()
        read = api.get(f"/{collection}/{body['id']}")
        assert read.status_code == 200
        stored = {k: v for k, v in read.get_json().items() if k not in ("meta", "warnings")}
        for key, value in body.items():
            assert stored[key] == value, (collection, key)
        assert read.get_json()["meta"]["version"] == 1


def test_put_creates_with_201_and_location_then_replaces_with_200(api):
    first = api.put("/practitioners/dr-ortiz", PSYCHIATRIST)
    assert first.status_code == 201
    assert first.headers["Location"].endswith("/api/v1/practitioners/dr-ortiz")
    assert first.headers["X-Write-Outcome"] == "created"
    second = api.put("/practitioners/dr-ortiz", make(PSYCHIATRIST, organization="Lakeside Psychiatry"))
    assert second.status_code == 200
    assert second.headers["X-Write-Outcome"] == "updated"
    assert second.get_json()["organization"] == "Lakeside Psychiatry"
    assert second.get_json()["meta"]["version"] == 2


def test_same_put_twice_is_one_record_with_unchanged_updated_at(api, db):
    from service.models import Patient

    api.put("/practitioners/dr-ortiz", PSYCHIATRIST)
    first = api.put("/patients/pt-1", PATIENT).get_json()
    again = api.put("/patients/pt-1", PATIENT)
    assert again.status_code == 200
    assert again.headers["X-Write-Outcome"] == "unchanged"
    assert again.get_json()["meta"] == first["meta"]
    assert db.query(Patient).count() == 1


def test_equivalent_times_in_another_notation_are_unchanged(api):
    seed_course(api)
    body = make(SESSION, start="2026-01-12T09:00:00.000-05:00")
    response = api.put("/sessions/se-1", body)
    assert response.headers["X-Write-Outcome"] == "unchanged"


def test_post_assigns_an_id_when_none_is_given(api):
    response = api.post("/practitioners", make(NURSE, id=None))
    assert response.status_code == 201
    new_id = response.get_json()["id"]
    assert api.get(f"/practitioners/{new_id}").status_code == 200


def test_post_with_an_existing_id_and_other_content_is_409_and_changes_nothing(api):
    api.post("/practitioners", NURSE)
    assert api.post("/practitioners", NURSE).status_code == 200  # a retried POST is idempotent
    clash = api.post("/practitioners", make(NURSE, role="physician"))
    assert clash.status_code == 409
    assert api.get("/practitioners/rn-cho").get_json()["role"] == "nurse"


def test_administrations_and_vitals_nest_under_their_session(api):
    seed_course(api)
    adm = api.put("/sessions/se-1/administrations/ad-1", ADMINISTRATION)
    assert adm.status_code == 201, adm.get_json()
    assert adm.get_json()["session_id"] == "se-1"
    assert adm.headers["Location"].endswith("/api/v1/sessions/se-1/administrations/ad-1")
    vit = api.post("/sessions/se-1/vitals", make(VITALS, id=None))
    assert vit.status_code == 201
    listed = api.get("/sessions/se-1/vitals").get_json()["items"]
    assert [v["id"] for v in listed] == [vit.get_json()["id"]]
    assert api.get("/sessions/se-1/administrations/ad-1").status_code == 200
    # also readable at the top level, and filterable by patient
    assert api.get("/administrations/ad-1").status_code == 200
    assert [a["id"] for a in api.get("/administrations?patient_id=pt-1").get_json()["items"]] == ["ad-1"]


def test_nested_record_under_an_unknown_session_is_404(api):
    seed_course(api)
    assert api.put("/sessions/nope/administrations/ad-1", ADMINISTRATION).status_code == 404
    assert api.get("/sessions/nope/vitals").status_code == 404
    api.put("/sessions/se-1/administrations/ad-1", ADMINISTRATION)
    api.put("/sessions/se-2", make(SESSION, id="se-2", number=2))
    assert api.get("/sessions/se-2/administrations/ad-1").status_code == 404


def test_unknown_ids_and_collections_are_404(api):
    assert api.get("/patients/nobody").status_code == 404
    response = api.get("/widgets")
    assert response.status_code == 404
    # no route: the clinic routes name their collections (so GET /import is 405, not a collection)
    assert response.get_json()["message"] == "no such path"


def test_entered_in_error_replaces_delete(api):
    seed_course(api)
    api.put("/observations/ob-1", OBSERVATION)
    response = api.put("/observations/ob-1", make(OBSERVATION, status="entered-in-error"))
    assert response.status_code == 200
    assert response.get_json()["status"] == "entered-in-error"
    assert api.client.delete("/api/v1/observations/ob-1", headers=api.headers).status_code == 405
    assert api.get("/observations?status=entered-in-error").get_json()["items"][0]["id"] == "ob-1"


def test_read_only_fields_echoed_back_from_a_get_are_ignored(api):
    api.put("/practitioners/dr-ortiz", PSYCHIATRIST)
    fetched = api.get("/practitioners/dr-ortiz").get_json()
    response = api.put("/practitioners/dr-ortiz", fetched)
    assert response.status_code == 200
    assert response.headers["X-Write-Outcome"] == "unchanged"
