"""The admin API (/admin): sync destinations, their queues, dead letters and the attempt log.

Nothing here talks to a destination: outbox rows and attempts are set up in the database, as
the delivery engine (tested elsewhere) would leave them.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import func, insert, select, update

from service.auth import create_token
from service.models import DeliveryAttempt, Destination, FhirResource, OutboxMessage, RemoteResource
from service.sync.destinations import DEFAULT_TYPES, SHARED_TYPES
from service.sync.status import destination_status
from service.synthetic import clinic_lines
from tests.factories import OBSERVATION, make

URL = "https://ehr.example/fhir"
TOKEN = "bearer-secret-0123456789"


class Admin:
    """/admin with a token's headers."""

    def __init__(self, client, headers: dict[str, str]):
        self.client, self.headers = client, headers

    def get(self, path: str, **kw):
        return self.client.get(f"/admin{path}", headers=self.headers, **kw)

    def post(self, path: str, body=None, **kw):
        return self.client.post(f"/admin{path}", json=body, headers=self.headers, **kw)

    def patch(self, path: str, body, **kw):
        return self.client.patch(f"/admin{path}", json=body, headers=self.headers, **kw)

    def delete(self, path: str):
        return self.client.delete(f"/admin{path}", headers=self.headers)

    def create(self, enable: bool = True, **fields) -> dict:
        """POST a destination (it starts paused), then enable it as its own step: the destination as
        it is then, with the POST's ``queued`` (the initial load)."""
        response = self.post("/destinations", {"name": fields.get("name", "ehr"), "url": URL, **fields})
        assert response.status_code == 201, response.get_json()
        created = response.get_json()
        if not enable:
            return created
        enabled = self.patch(f"/destinations/{created['id']}", {"enabled": True})
        assert enabled.status_code == 200 and enabled.get_json()["enabled"] is True, enabled.get_json()
        return created | {k: v for k, v in enabled.get_json().items() if k in created and k != "queued"}


@pytest.fixture
def settings(settings):
    """The app's settings with the destination host these tests use allowed (security review, finding 2)."""
    return dataclasses.replace(settings, destination_hosts=("ehr.example",))


@pytest.fixture
def admin(client, auth) -> Admin:
    return Admin(client, auth)


@pytest.fixture
def clinic(api) -> None:
    """Two synthetic patients: pt-0001 referred by pr-001, pt-0002 by pr-002, and the staff."""
    assert api.import_ndjson("\n".join(clinic_lines(2))).get_json()["rejected"] == 0


@pytest.fixture(scope="module")
def ec_pem() -> str:
    key = ec.generate_private_key(ec.SECP384R1())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def smart_auth(pem: str) -> dict:
    return {"kind": "smart", "client_id": "clinic-sync", "token_url": "https://ehr.example/oauth/token",
            "private_key": pem, "kid": "key-1", "scopes": "system/*.cruds"}


def rows(db, dest_id: str) -> list[OutboxMessage]:
    fresh(db)
    return list(db.scalars(select(OutboxMessage).where(OutboxMessage.destination_id == dest_id)
                           .order_by(OutboxMessage.id)))


def fresh(db) -> None:
    """Forget what the test's session read: the next query sees what was committed since."""
    db.rollback()
    db.expire_all()


def set_rows(db, ids: list[int], **values) -> None:
    db.execute(update(OutboxMessage).where(OutboxMessage.id.in_(ids)).values(**values))
    db.commit()


def queued_resources(db, dest_id: str) -> list[FhirResource]:
    fresh(db)
    return list(db.scalars(select(FhirResource).join(OutboxMessage, (OutboxMessage.resource_type == FhirResource
                                                                     .resource_type) & (OutboxMessage.resource_id
                                                                                        == FhirResource.id))
                           .where(OutboxMessage.destination_id == dest_id)))


def add_attempt(db, message: OutboxMessage, at: datetime, result: str = "retry", status_code: int | None = 503) -> int:
    row = {"message_id": message.id, "destination_id": message.destination_id, "at": at, "worker": "w1",
           "request": "transaction", "status_code": status_code, "result": result,
           "error": f"HTTP {status_code}" if status_code else None, "duration_ms": 12}
    attempt_id = db.execute(insert(DeliveryAttempt).values(**row).returning(DeliveryAttempt.id)).scalar_one()
    db.commit()
    return attempt_id


# --- access ---

ROUTES = [("get", "/admin/destinations"), ("post", "/admin/destinations"), ("get", "/admin/destinations/ehr"),
          ("patch", "/admin/destinations/ehr"), ("delete", "/admin/destinations/ehr"),
          ("get", "/admin/destinations/ehr/status"), ("get", "/admin/destinations/ehr/dead-letters"),
          ("post", "/admin/destinations/ehr/dead-letters/replay"), ("get", "/admin/destinations/ehr/attempts"),
          ("post", "/admin/destinations/ehr/sweep")]


@pytest.mark.parametrize("method,path", ROUTES)
def test_every_admin_route_needs_a_token(client, method, path):
    response = getattr(client, method)(path, json={})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("method,path", ROUTES)
def test_a_clinic_token_is_forbidden_the_admin_routes(client, db, method, path):
    headers = {"Authorization": f"Bearer {create_token(db, 'reader', ['clinic:read', 'clinic:write'])}"}
    response = getattr(client, method)(path, json={}, headers=headers)
    assert response.status_code == 403
    assert "admin" in response.get_json()["message"]


def test_the_admin_scope_is_enough_to_run_a_destination(admin, client, db):
    """Status, listing, pausing, sweeps, replays and removal: ``admin``; adding and enabling need
    ``admin:destinations`` (tests/sync/test_destination_security.py)."""
    dest_id = admin.create()["id"]
    ops = Admin(client, {"Authorization": f"Bearer {create_token(db, 'ops', ['admin'])}"})
    for path in ("", "/ehr", "/ehr/status", "/ehr/waiting", "/ehr/dead-letters", "/ehr/attempts"):
        assert ops.get(f"/destinations{path}").status_code == 200, path
    assert ops.post("/destinations/ehr/sweep", {}).status_code == 200
    assert ops.post("/destinations/ehr/dead-letters/replay", {}).status_code == 200
    assert ops.patch("/destinations/ehr", {"enabled": False, "read_timeout": 10}).get_json()["enabled"] is False
    assert ops.delete(f"/destinations/{dest_id}").status_code == 204


@pytest.mark.parametrize("method,path", ROUTES[2:])
def test_an_unknown_destination_is_404(admin, method, path):
    response = getattr(admin.client, method)(path, json={}, headers=admin.headers)
    assert response.status_code == 404
    assert "no destination 'ehr'" in response.get_json()["message"]


# --- create, list, show, change, delete ---

@pytest.mark.postgres
def test_create_list_show_patch_and_delete_a_destination(admin):
    response = admin.post("/destinations", {"name": "ehr", "url": URL + "/", "resource_types": ["Patient"],
                                            "mode": "batch", "retry": {"max_attempts": 3}})
    assert response.status_code == 201
    created = response.get_json()
    assert response.headers["Location"] == f"/admin/destinations/{created['id']}"
    assert created["url"] == URL and created["mode"] == "batch" and created["queued"] == 0
    assert created["retry"]["max_attempts"] == 3 and created["retry"]["base_seconds"] == 2.0
    assert created["auth"] == {"kind": "none"} and created["circuit"] == "closed"
    assert created["enabled"] is False  # a new destination is paused until enabled
    assert admin.patch("/destinations/ehr", {"enabled": True}).get_json()["enabled"] is True

    listed = admin.get("/destinations").get_json()["destinations"]
    assert [d["id"] for d in listed] == [created["id"]]
    assert listed[0]["status"]["pending"] == 0

    by_name, by_id = admin.get("/destinations/ehr").get_json(), admin.get(f"/destinations/{created['id']}").get_json()
    assert by_name == by_id and by_name["status"]["enabled"] is True

    patched = admin.patch("/destinations/ehr", {"name": "ehr-2", "enabled": False}).get_json()
    assert (patched["name"], patched["enabled"], patched["mode"]) == ("ehr-2", False, "batch")
    assert admin.get("/destinations/ehr").status_code == 404

    assert admin.delete("/destinations/ehr-2").status_code == 204
    assert admin.get(f"/destinations/{created['id']}").status_code == 404
    assert admin.get("/destinations").get_json() == {"destinations": []}


def test_destinations_are_listed_by_name(admin):
    for name in ("zeta", "alpha", "mid"):
        admin.post("/destinations", {"name": name, "url": URL})
    assert [d["name"] for d in admin.get("/destinations").get_json()["destinations"]] == ["alpha", "mid", "zeta"]


def test_patch_changes_only_the_fields_given(admin):
    before = admin.create(mode="batch", max_bundle_entries=20)
    after = admin.patch("/destinations/ehr", {"rate_limit": 5}).get_json()
    assert after["rate_limit"] == 5.0
    unchanged = ("url", "mode", "max_bundle_entries", "resource_types", "patients", "auth", "retry", "created_at")
    assert {k: after[k] for k in unchanged} == {k: before[k] for k in unchanged}
    assert after["updated_at"] >= before["updated_at"]


# --- secrets ---

def test_a_bearer_token_is_never_returned(admin, clinic):
    created = admin.create(auth={"kind": "bearer", "token": TOKEN})
    assert created["auth"] == {"kind": "bearer", "token_set": True}
    answers = [admin.get("/destinations"), admin.get("/destinations/ehr"), admin.get("/destinations/ehr/status"),
               admin.patch("/destinations/ehr", {"mode": "individual"}),
               admin.patch("/destinations/ehr", {"auth": {"kind": "bearer", "token": TOKEN + "-new"}})]
    for response in answers:
        assert response.status_code == 200
        assert TOKEN not in response.get_data(as_text=True)
    assert TOKEN not in str(created)


def test_a_smart_private_key_is_never_returned(admin, ec_pem):
    created = admin.create(auth=smart_auth(ec_pem))
    assert created["auth"] == {"kind": "smart", "client_id": "clinic-sync", "token_url": "https://ehr.example/oauth/token",
                               "kid": "key-1", "scopes": "system/*.cruds", "private_key_set": True}
    key_body = ec_pem.splitlines()[1]
    for response in (admin.get("/destinations"), admin.get("/destinations/ehr"),
                     admin.patch("/destinations/ehr", {"read_timeout": 10})):
        text = response.get_data(as_text=True)
        assert "PRIVATE KEY" not in text and key_body not in text


# --- validation ---

@pytest.mark.parametrize("fields,error_path", [
    ({"url": "not a url"}, "url"),
    ({"url": "ftp://ehr.example/fhir"}, "url"),
    ({"url": URL + "?tenant=1"}, "url"),
    ({"name": "no spaces"}, "name"),
    ({"colour": "blue"}, "colour"),
    ({"mode": "stream"}, "mode"),
    ({"auth": {"kind": "smart", "client_id": "c", "token_url": "https://ehr.example/token", "kid": "k"}},
     "auth.private_key"),
    ({"auth": {"kind": "smart", "client_id": "c", "token_url": "https://ehr.example/token", "kid": "k",
               "private_key": "-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----"}}, "auth.private_key"),
    ({"auth": {"kind": "bearer"}}, "auth.token"),
    ({"auth": {"kind": "basic"}}, "auth.kind"),
    ({"retry": {"max_attempts": 0}}, "retry"),
    ({"retry": {"tries": 3}}, "retry"),
    ({"resource_types": ["Patient", "Spaceship"]}, "resource_types.1"),
    ({"resource_types": []}, "resource_types"),
    ({"patients": {"kind": "referred-by"}}, "patients.practitioner_id"),
    ({"max_bundle_entries": 0}, "max_bundle_entries"),
    ({"max_bundle_entries": "8"}, "max_bundle_entries"),
])
def test_an_invalid_destination_is_422_with_field_errors_and_nothing_stored(admin, fields, error_path):
    response = admin.post("/destinations", {"name": "ehr", "url": URL} | fields)
    assert response.status_code == 422
    assert error_path in response.get_json()["errors"], response.get_json()
    assert admin.get("/destinations").get_json()["destinations"] == []


def test_name_and_url_are_required(admin):
    errors = admin.post("/destinations", {}).get_json()["errors"]
    assert set(errors) == {"name", "url"}


def test_a_taken_name_is_a_422_field_error(admin):
    admin.create()
    response = admin.post("/destinations", {"name": "ehr", "url": URL})
    assert response.status_code == 422 and "exists" in response.get_json()["errors"]["name"][0]
    admin.post("/destinations", {"name": "other", "url": URL})
    response = admin.patch("/destinations/other", {"name": "ehr"})
    assert response.status_code == 422 and "name" in response.get_json()["errors"]


@pytest.mark.parametrize("body,error_path", [
    ({"auth": {"token": "x"}}, "auth.kind"),
    ({"patients": {"practitioner_id": "pr-001"}}, "patients.kind"),
    ({"mode": None}, "mode"),
    ({"url": "nope"}, "url"),
    ({"id": "mine"}, "id"),
])
def test_a_patch_is_validated_like_a_create(admin, body, error_path):
    before = admin.create()
    response = admin.patch("/destinations/ehr", body)
    assert response.status_code == 422 and error_path in response.get_json()["errors"], response.get_json()
    after = admin.get("/destinations/ehr").get_json()
    assert after["updated_at"] == before["updated_at"]


@pytest.mark.parametrize("kwargs", [
    {"data": "name=ehr", "content_type": "application/x-www-form-urlencoded"},
    {"data": "{not json", "content_type": "application/json"},
    {"data": "[1, 2]", "content_type": "application/json"},
])
def test_a_body_that_is_not_a_json_object_is_400(admin, kwargs):
    response = admin.client.post("/admin/destinations", headers=admin.headers, **kwargs)
    assert response.status_code == 400 and response.get_json()["errors"]["_request"]


# --- what a destination receives ---

def resources_held(db, types=DEFAULT_TYPES) -> set[tuple[str, str]]:
    fresh(db)
    return {(r.resource_type, r.id) for r in db.scalars(select(FhirResource).where(
        FhirResource.resource_type.in_(types), FhirResource.deleted.is_(False)))}


@pytest.mark.postgres
def test_a_new_destination_queues_the_clinic_for_its_initial_load(admin, db, clinic):
    created = admin.create()
    queued = rows(db, created["id"])
    assert created["queued"] == len(queued) > 100
    assert {(m.resource_type, m.resource_id) for m in queued} == resources_held(db)
    assert len({(m.resource_type, m.resource_id) for m in queued}) == len(queued)  # each resource once
    assert {m.status for m in queued} == {"pending"}
    shared = [m for m in queued if m.lane == "shared"]
    assert {m.resource_type for m in shared} == set(SHARED_TYPES)
    assert min(m.id for m in queued) == min(m.id for m in shared)  # targets of references go first


@pytest.mark.postgres
def test_a_destination_of_patients_only_gets_only_patients(admin, db, clinic):
    created = admin.create(resource_types=["Patient"])
    assert created["queued"] == 2
    assert {m.resource_type for m in rows(db, created["id"])} == {"Patient"}


@pytest.mark.postgres
def test_a_referred_by_destination_gets_that_referrers_patients_and_the_shared_resources(admin, db, clinic):
    created = admin.create(patients={"kind": "referred-by", "practitioner_id": "pr-001"})
    got = queued_resources(db, created["id"])
    assert {r.patient_id for r in got} == {"pt-0001", None}
    assert {(r.resource_type, r.id) for r in got if r.patient_id is None} == resources_held(db, SHARED_TYPES)
    mine = {(r.resource_type, r.id) for r in db.scalars(select(FhirResource).where(
        FhirResource.patient_id == "pt-0001", FhirResource.resource_type.in_(DEFAULT_TYPES)))}
    assert mine <= {(r.resource_type, r.id) for r in got}


@pytest.mark.postgres
def test_a_clinic_write_is_queued_for_the_destination_when_it_commits(admin, api, db, clinic):
    dest_id = admin.create()["id"]
    before = len(rows(db, dest_id))
    response = api.put("/observations/ob-new", make(OBSERVATION, id="ob-new", patient_id="pt-0001"))
    assert response.status_code == 201
    new = rows(db, dest_id)[before:]
    observation = db.scalar(select(FhirResource).where(FhirResource.source_collection == "observations",
                                                       FhirResource.source_id == "ob-new"))
    assert ("Observation", observation.id) in {(m.resource_type, m.resource_id) for m in new}
    assert {m.status for m in new} == {"pending"}
    rejected = api.put("/observations/ob-bad", make(OBSERVATION, id="ob-bad", patient_id="pt-0001", score=99))
    assert rejected.status_code == 422
    assert len(rows(db, dest_id)) == before + len(new)  # a rolled-back write queues nothing


@pytest.mark.postgres
def test_widening_a_destination_queues_what_it_now_receives(admin, db, clinic):
    admin.create(resource_types=["Patient"])
    patched = admin.patch("/destinations/ehr", {"resource_types": ["Patient", "Observation"]}).get_json()
    observations = resources_held(db, ["Observation"])
    assert patched["queued"] == len(observations) > 0


# --- status ---

@pytest.mark.postgres
def test_status_counts_the_queue_by_state_and_how_far_behind_it_is(admin, db, clinic):
    dest_id = admin.create()["id"]
    queued = rows(db, dest_id)
    ids = [m.id for m in queued]
    now = datetime.now(UTC)
    set_rows(db, ids[:10], status="delivered")
    set_rows(db, ids[10:13], status="dead")
    set_rows(db, ids[13:14], status="superseded")
    set_rows(db, ids[14:16], status="in-flight", lease_until=now + timedelta(minutes=1))
    set_rows(db, ids[15:16], created_at=now - timedelta(hours=2))  # the oldest active one
    set_rows(db, ids[16:], next_attempt_at=now + timedelta(minutes=5))
    set_rows(db, ids[20:21], next_attempt_at=now + timedelta(minutes=1))
    shown = admin.get(f"/destinations/{dest_id}/status").get_json()
    assert {k: shown[k] for k in ("pending", "in_flight", "delivered", "dead_letters", "superseded")} == {
        "pending": len(ids) - 16, "in_flight": 2, "delivered": 10, "dead_letters": 3, "superseded": 1}
    assert 7200 <= shown["oldest_pending_age_seconds"] < 7200 + 60
    assert shown["next_attempt_at"] == (now + timedelta(minutes=1)).isoformat()
    assert shown["lanes_waiting"] == len({m.lane for m in queued[14:]})
    assert (shown["circuit"], shown["enabled"], shown["paused_until"]) == ("closed", True, None)
    assert (shown["last_success_at"], shown["last_error_at"], shown["last_error"]) == (None, None, None)


def test_status_of_a_destination_with_nothing_queued(admin):
    dest_id = admin.create()["id"]
    shown = admin.get(f"/destinations/{dest_id}/status").get_json()
    assert shown["pending"] == shown["in_flight"] == shown["lanes_waiting"] == 0
    assert shown["oldest_pending_age_seconds"] is None and shown["next_attempt_at"] is None


def test_status_shows_health_as_operators_see_it(admin, db):
    dest_id = admin.create()["id"]
    now = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
    fresh(db)
    dest = db.get(Destination, dest_id)
    dest.circuit_state, dest.circuit_failures, dest.circuit_opened_at = "open", 5, now - timedelta(seconds=3)
    dest.paused_until, dest.last_error_at, dest.last_error = now + timedelta(seconds=60), now, "HTTP 429"
    dest.last_success_at = now - timedelta(hours=1)
    db.commit()
    shown = destination_status(db, dest, now)
    assert (shown["circuit"], shown["paused_until"]) == ("open", (now + timedelta(seconds=60)).isoformat())
    assert (shown["last_error"], shown["last_error_at"]) == ("HTTP 429", now.isoformat())
    assert shown["last_success_at"] == (now - timedelta(hours=1)).isoformat()
    later = destination_status(db, dest, now + timedelta(minutes=2))
    assert (later["circuit"], later["paused_until"]) == ("half-open", None)  # reset time passed, pause over


# --- dead letters ---

OUTCOME = {"resourceType": "OperationOutcome", "issue": [{
    "severity": "error", "code": "invariant", "diagnostics": "Patient Avery Rowan born 1984-03-12: bad name",
    "details": {"coding": [{"system": "urn:ehr:errors", "code": "E42", "display": "x"}], "text": "Avery Rowan"},
    "expression": ["Patient.name[0]"]}]}


def make_dead(db, messages: list[OutboxMessage]) -> list[int]:
    ids = [m.id for m in messages]
    set_rows(db, ids, status="dead", attempts=1, last_status=422, last_error="HTTP 422 (invariant)", outcome=OUTCOME)
    return ids


@pytest.mark.postgres
def test_dead_letters_are_listed_oldest_first_with_codes_and_no_free_text(admin, db, clinic):
    dest_id = admin.create()["id"]
    dead = make_dead(db, rows(db, dest_id)[5:8])
    page = admin.get(f"/destinations/{dest_id}/dead-letters?limit=2").get_json()
    assert [d["id"] for d in page["dead_letters"]] == dead[:2] and page["next_after"] == dead[1]
    letter = page["dead_letters"][0]
    assert (letter["last_status"], letter["last_error"], letter["attempts"]) == (422, "HTTP 422 (invariant)", 1)
    assert set(letter) >= {"resource_type", "resource_id", "lane", "version_id", "created_at"}
    assert letter["outcome"] == {"resourceType": "OperationOutcome", "issue": [{
        "severity": "error", "code": "invariant", "expression": ["Patient.name[0]"],
        "details": {"coding": [{"system": "urn:ehr:errors", "code": "E42"}]}}]}
    rest = admin.client.get(page["next"], headers=admin.headers).get_json()
    assert [d["id"] for d in rest["dead_letters"]] == dead[2:] and rest["next"] is None
    assert "Avery" not in admin.get(f"/destinations/{dest_id}/dead-letters").get_data(as_text=True)


@pytest.mark.postgres
def test_waiting_lists_what_holds_each_lane_up_and_why(admin, db, clinic):
    dest_id = admin.create()["id"]
    queued = rows(db, dest_id)
    lanes: dict[str, list] = {}
    for m in queued:
        lanes.setdefault(m.lane, []).append(m)
    first, second = (lanes[lane] for lane in sorted(lanes, key=lambda lane: lanes[lane][0].id)[:2])
    set_rows(db, [m.id for m in first[:2]], status="delivered")  # the lane's head is now its third message
    later = datetime.now(UTC) + timedelta(minutes=3)
    set_rows(db, [first[2].id], attempts=2, last_status=503, last_error="HTTP 503 (transient)",
             next_attempt_at=later)
    set_rows(db, [second[0].id], last_error=f"waiting for Practitioner/{first[0].resource_id}")

    page = admin.get(f"/destinations/{dest_id}/waiting?limit=2").get_json()
    head, other = page["waiting"]
    assert (head["id"], head["lane"], head["status"], head["attempts"], head["last_error"]) == (
        first[2].id, first[2].lane, "pending", 2, "HTTP 503 (transient)")
    assert head["next_attempt_at"] == later.isoformat() and head["behind"] == len(first) - 3
    assert (other["id"], other["last_error"]) == (second[0].id, f"waiting for Practitioner/{first[0].resource_id}")
    rest = admin.client.get(page["next"], headers=admin.headers).get_json()["waiting"]
    assert len(rest) == len(lanes) - 2 and all(r["id"] > other["id"] for r in rest)
    assert "Avery" not in admin.get(f"/destinations/{dest_id}/waiting").get_data(as_text=True)  # no PHI


@pytest.mark.postgres
def test_replay_sends_the_chosen_dead_letters_again_or_all_of_them(admin, db, clinic):
    dest_id = admin.create()["id"]
    other_id = admin.post("/destinations", {"name": "other", "url": URL}).get_json()["id"]
    dead = make_dead(db, rows(db, dest_id)[:3])
    other_dead = make_dead(db, rows(db, other_id)[:1])
    assert admin.post(f"/destinations/{dest_id}/dead-letters/replay", {"ids": [dead[0], *other_dead]}).get_json() == {
        "replayed": 1}
    replayed = {m.id: m for m in rows(db, dest_id)}[dead[0]]
    assert (replayed.status, replayed.attempts) == ("pending", 0)
    assert admin.post(f"/destinations/{dest_id}/dead-letters/replay", {}).get_json() == {"replayed": 2}
    assert admin.post(f"/destinations/{dest_id}/dead-letters/replay").get_json() == {"replayed": 0}
    assert {m.status for m in rows(db, other_id) if m.id in other_dead} == {"dead"}


@pytest.mark.parametrize("body,error_path", [({"ids": ["x"]}, "ids.0"), ({"ids": 3}, "ids"), ({"idz": [1]}, "idz"),
                                             ({"ids": [2**64]}, "ids.0")])
def test_a_bad_replay_request_is_422(admin, body, error_path):
    admin.create()
    response = admin.post("/destinations/ehr/dead-letters/replay", body)
    assert response.status_code == 422 and error_path in response.get_json()["errors"]


@pytest.mark.parametrize("query,error_path", [("limit=0", "limit"), ("limit=1001", "limit"), ("limit=ten", "limit"),
                                              ("after=-1", "after"), (f"after={2**70}", "after"),
                                              ("sort=id", "sort")])
def test_bad_paging_parameters_are_400_with_field_errors(admin, query, error_path):
    admin.create()
    for listing in ("dead-letters", "attempts"):
        response = admin.get(f"/destinations/ehr/{listing}?{query}")
        assert response.status_code == 400 and error_path in response.get_json()["errors"]


# --- the attempt log ---

@pytest.mark.postgres
def test_the_attempt_log_is_newest_first_and_searchable(admin, db, clinic):
    dest_id = admin.create()["id"]
    other_id = admin.post("/destinations", {"name": "other", "url": URL}).get_json()["id"]
    queued = rows(db, dest_id)
    patient = next(m for m in queued if m.resource_type == "Patient")
    practitioner = next(m for m in queued if m.resource_type == "Practitioner")
    t0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
    first = add_attempt(db, patient, t0)
    second = add_attempt(db, patient, t0 + timedelta(minutes=1), "delivered", 200)
    third = add_attempt(db, practitioner, t0 + timedelta(minutes=2), "dead", 422)
    add_attempt(db, rows(db, other_id)[0], t0)

    def ids(query: str = "") -> list[int]:
        response = admin.get(f"/destinations/{dest_id}/attempts?{query}")
        assert response.status_code == 200, response.get_json()
        return [a["id"] for a in response.get_json()["attempts"]]

    assert ids() == [third, second, first]
    assert ids(f"message_id={patient.id}") == [second, first]
    assert ids("result=delivered") == [second]
    assert ids("resource_type=Practitioner") == [third]
    assert ids("since=2026-11-23T09:01:00Z") == [third, second]
    assert ids(f"after={second}") == [first]
    page = admin.get(f"/destinations/{dest_id}/attempts?limit=2&result=retry").get_json()
    assert page["next"] is None
    page = admin.get(f"/destinations/{dest_id}/attempts?limit=2").get_json()
    assert page["next_after"] == second and "after=" in page["next"]
    logged = page["attempts"][0]
    assert logged == {"id": third, "at": (t0 + timedelta(minutes=2)).isoformat(), "message_id": practitioner.id,
                      "resource_type": "Practitioner", "resource_id": practitioner.resource_id, "worker": "w1",
                      "request": "transaction", "status_code": 422, "result": "dead", "error": "HTTP 422",
                      "duration_ms": 12}


@pytest.mark.parametrize("query,error_path", [("result=lost", "result"), ("resource_type=Spaceship", "resource_type"),
                                              ("since=2026-11-23T09:00:00", "since"), ("since=yesterday", "since"),
                                              ("message_id=0", "message_id")])
def test_attempt_filters_are_validated(admin, query, error_path):
    admin.create()
    response = admin.get(f"/destinations/ehr/attempts?{query}")
    assert response.status_code == 400 and error_path in response.get_json()["errors"]


# --- sweep ---

@pytest.mark.postgres
def test_sweep_queues_again_what_the_destination_has_not_acknowledged(admin, db, clinic):
    dest_id = admin.create()["id"]
    queued = rows(db, dest_id)
    assert admin.post(f"/destinations/{dest_id}/sweep").get_json() == {"queued": 0}  # all queued already
    set_rows(db, [m.id for m in queued], status="delivered")
    patients = db.scalars(select(FhirResource).where(FhirResource.resource_type == "Patient")).all()
    db.execute(insert(RemoteResource), [
        {"destination_id": dest_id, "resource_type": "Patient", "resource_id": p.id, "remote_id": f"r{i}",
         "content_hash": p.content_hash, "version_id": p.version_id, "deleted": False, "updated_at": p.last_updated}
        for i, p in enumerate(patients)])
    db.commit()
    assert admin.post(f"/destinations/{dest_id}/sweep").get_json() == {"queued": len(queued) - len(patients)}
    assert admin.post(f"/destinations/{dest_id}/sweep").get_json() == {"queued": 0}


# --- delete ---

@pytest.mark.postgres
def test_deleting_a_destination_removes_its_outbox_attempts_and_remote_records(admin, db, clinic):
    gone, kept = admin.create()["id"], admin.post("/destinations", {"name": "kept", "url": URL}).get_json()["id"]
    for dest_id in (gone, kept):
        message = rows(db, dest_id)[0]
        add_attempt(db, message, datetime.now(UTC))
        db.execute(insert(RemoteResource).values(destination_id=dest_id, resource_type=message.resource_type,
                                                 resource_id=message.resource_id, deleted=False,
                                                 updated_at=datetime.now(UTC)))
        db.commit()
    assert admin.delete(f"/destinations/{gone}").status_code == 204
    fresh(db)
    for table in (OutboxMessage, DeliveryAttempt, RemoteResource):
        left = dict(db.execute(select(table.destination_id, func.count()).group_by(table.destination_id)).all())
        assert gone not in left and left[kept] > 0, table.__tablename__
