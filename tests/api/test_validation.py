"""Validation of every write path, read as a specification.

Each rule says what a clinic's software may not send, and each rejection is checked three ways:
the status code (400 not JSON, 404 unknown session in the URL, 409 another patient's record or a
taken unique value, 413 too large, 422 failed validation), the field path in ``errors``, and that
the database is exactly as it was before. The clinical checks come last: they answer
``warnings[]`` and never block a write.

Most tests run on SQLite; the ones about stored state and database constraints (``TestStoredState``)
also run on PostgreSQL.
"""

from __future__ import annotations

import base64
import copy
import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from service import create_app, models
from service.auth import create_token
from service.config import Settings
from service.synthetic import EHR_MRN_SYSTEM, npi_with_check_digit
from tests.conftest import Api
from tests.factories import (
    ADMINISTRATION,
    COURSE,
    OBSERVATION,
    PATIENT,
    REFERRAL,
    SESSION,
    VITALS,
    make,
    seed_course,
)

# --------------------------------------------------------------------------------------------
# The clinic every test starts from, and how a rejection is checked
# --------------------------------------------------------------------------------------------

#: a second patient with their own referral, course and session (pt-2 has no weight on file)
PATIENT_2 = {"id": "pt-2", "mrn": "MRN-0002", "name": {"family": "Birch", "given": ["Blake"]},
             "birth_date": "1990-05-01", "sex": "male",
             "identifiers": [{"system": EHR_MRN_SYSTEM, "value": "E100300"}]}
REFERRAL_2 = make(REFERRAL, id="rf-2", patient_id="pt-2")
COURSE_2 = make(COURSE, id="co-2", patient_id="pt-2", referral_id="rf-2")
SESSION_2 = make(SESSION, id="se-2", patient_id="pt-2", course_id="co-2", number=1)

#: a valid new record of each collection (not yet stored), and where it is written
NEW: dict[str, tuple[str, dict[str, Any]]] = {
    "practitioners": ("/practitioners/md-hale", {"name": {"family": "Hale", "given": ["Jo"]},
                                                 "role": "anesthesiologist", "npi": npi_with_check_digit("123456789"),
                                                 "phone": "+1 555 010 2000", "email": "hale@example.org"}),
    "patients": ("/patients/pt-new", make(PATIENT, id=None, mrn="MRN-0099",
                                          identifiers=[{"system": EHR_MRN_SYSTEM, "value": "E999999"}])),
    "referrals": ("/referrals/rf-new", make(REFERRAL, id=None)),
    "courses": ("/courses/co-new", make(COURSE, id=None, end_date="2026-02-20")),
    "sessions": ("/sessions/se-new", make(SESSION, id=None, number=2, adverse_events=[
        {"text": "transient nausea", "severity": "mild", "code": "422587007"}])),
    "administrations": ("/sessions/se-1/administrations/ad-new", make(ADMINISTRATION, id=None)),
    "observations": ("/observations/ob-new", make(OBSERVATION, id=None)),
    "vitals": ("/sessions/se-1/vitals/vs-new", make(VITALS, id=None)),
}
COLLECTION_NAMES = list(NEW)

DROP = object()  # as a value in ``alter``: remove the field


def alter(body: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of ``body`` with dotted-path changes (``"name.family"``, ``"performers.0.function"``)."""
    out = copy.deepcopy(body)
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        node: Any = out
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        key: Any = int(last) if isinstance(node, list) else last
        if value is DROP:
            del node[key]
        else:
            node[key] = value
    return out


def new(collection: str, **changes: Any) -> tuple[str, dict[str, Any]]:
    """Path and body of the valid new record of ``collection`` with dotted-path changes."""
    path, body = NEW[collection]
    return path, alter(body, changes)


def snapshot(db: Session) -> dict[str, list[tuple]]:
    """Every row that matters, as plain tuples: ids, versions and content of records, side tables."""
    db.rollback()  # end any read transaction so the next queries see what is committed now
    db.expire_all()
    state: dict[str, list[tuple]] = {}
    for model in (models.Practitioner, models.Patient, models.Referral, models.Course, models.InfusionSession,
                  models.Administration, models.Observation, models.Vitals):
        rows = db.execute(select(model.id, model.version, model.content_hash, model.updated_at).order_by(model.id))
        state[model.__tablename__] = [tuple(r) for r in rows]
    state["patient_identifiers"] = [tuple(r) for r in db.execute(select(
        models.PatientIdentifier.patient_id, models.PatientIdentifier.system, models.PatientIdentifier.value
    ).order_by(models.PatientIdentifier.system, models.PatientIdentifier.value))]
    state["session_performers"] = [tuple(r) for r in db.execute(select(
        models.SessionPerformer.session_id, models.SessionPerformer.practitioner_id, models.SessionPerformer.function
    ).order_by(models.SessionPerformer.session_id, models.SessionPerformer.practitioner_id))]
    return state


def seed_clinic(api: Api) -> None:
    """Two patients, each with a referral, course and session; pt-1 also has a dose, vitals and a score."""
    seed_course(api)
    for path, body in (("/patients/pt-2", PATIENT_2), ("/referrals/rf-2", REFERRAL_2), ("/courses/co-2", COURSE_2),
                       ("/sessions/se-2", SESSION_2), ("/sessions/se-1/administrations/ad-1", ADMINISTRATION),
                       ("/sessions/se-1/vitals/vs-1", VITALS), ("/observations/ob-1", OBSERVATION)):
        response = api.put(path, body)
        assert response.status_code == 201, (path, response.get_json())


class Rejects:
    """Send a write that must fail; check status, error paths and that nothing changed."""

    def __init__(self, api: Api, db: Session):
        self.api, self.db = api, db

    def send(self, method: str, path: str, body: Any, status: int, *paths: str) -> dict[str, list[str]]:
        return self.raw(method, path, json.dumps(body), status, *paths)

    def put(self, path: str, body: Any, status: int, *paths: str) -> dict[str, list[str]]:
        return self.send("put", path, body, status, *paths)

    def post(self, path: str, body: Any, status: int, *paths: str) -> dict[str, list[str]]:
        return self.send("post", path, body, status, *paths)

    def raw(self, method: str, path: str, data: bytes | str, status: int, *paths: str,
            content_type: str | None = "application/json") -> dict[str, list[str]]:
        before = snapshot(self.db)
        kw: dict[str, Any] = {"data": data, "headers": self.api.headers}
        if content_type is not None:
            kw["content_type"] = content_type
        response = self.api.client.open(f"/api/v1{path}", method=method.upper(), **kw)
        assert response.status_code == status, response.get_json()
        errors = response.get_json()["errors"]
        for error_path in paths:
            assert error_path in errors, (error_path, errors)
            assert errors[error_path] and all(isinstance(m, str) and m for m in errors[error_path])
        assert snapshot(self.db) == before, "a rejected write changed the database"
        return errors


@pytest.fixture(scope="session")
def seeded_sqlite(tmp_path_factory, sqlite_template) -> Path:
    """The migrated SQLite database with the clinic of ``seed_clinic`` written through the API, built once."""
    folder = tmp_path_factory.mktemp("seeded-clinic")
    shutil.copy(sqlite_template, folder / "ketamine-fhir.sqlite3")
    app = create_app(Settings.from_env({"KETAMINE_FHIR_DATA": str(folder)}), TESTING=True)
    with Session(app.extensions["db_engine"]) as db:
        token = create_token(db, "seeder", ["*"])
    seed_clinic(Api(app.test_client(), {"Authorization": f"Bearer {token}"}))
    app.extensions["db_engine"].dispose()  # the last connection closing checkpoints the WAL into the file
    assert not (folder / "ketamine-fhir.sqlite3-wal").exists()
    return folder / "ketamine-fhir.sqlite3"


@pytest.fixture
def settings(settings: Settings, backend: str, request: pytest.FixtureRequest) -> Settings:
    """conftest's settings; on SQLite the database starts as a copy of the seeded clinic (faster)."""
    if backend == "sqlite":
        shutil.copy(request.getfixturevalue("seeded_sqlite"), settings.data_dir / "ketamine-fhir.sqlite3")
    return settings


@pytest.fixture
def clinic(api: Api, backend: str) -> Api:
    """The API over a database holding the clinic of ``seed_clinic``."""
    if backend != "sqlite":
        seed_clinic(api)
    return api


@pytest.fixture
def reject(clinic: Api, db: Session) -> Rejects:
    return Rejects(clinic, db)


def accepted(response, status: int = 201) -> dict[str, Any]:
    assert response.status_code == status, response.get_json()
    return response.get_json()


def codes(response) -> list[str]:
    return [w["code"] for w in response.get_json()["warnings"]]


# --------------------------------------------------------------------------------------------
# The valid records the rules below break one at a time
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("collection", COLLECTION_NAMES)
def test_the_valid_record_of_each_collection_is_accepted(clinic, db, collection):
    before = snapshot(db)
    path, body = new(collection)
    accepted(clinic.put(path, body))
    assert snapshot(db) != before


# --------------------------------------------------------------------------------------------
# Request bodies: JSON, one object, not too large
# --------------------------------------------------------------------------------------------

WRITE_PATHS = [NEW[c][0] for c in COLLECTION_NAMES]


@pytest.mark.parametrize("path", WRITE_PATHS)
@pytest.mark.parametrize("content_type,data", [
    pytest.param("application/json", b"{not json", id="broken JSON"),
    pytest.param("application/json", b"", id="empty body"),
    pytest.param("application/json", b'{"name": NaN}', id="NaN"),
    pytest.param("application/json", b'{"score": Infinity}', id="Infinity"),
    pytest.param("application/json", b'{"mrn": "\xff\xfe"}', id="not UTF-8"),
    pytest.param("application/json", b"[" * 100_000 + b"]" * 100_000, id="nested too deeply"),
    pytest.param("text/plain", b'{"role": "nurse"}', id="text/plain"),
    pytest.param("application/x-www-form-urlencoded", b"role=nurse", id="form"),
    pytest.param("application/x-ndjson", b'{"role": "nurse"}', id="NDJSON outside /import"),
    pytest.param(None, b'{"role": "nurse"}', id="no Content-Type"),
])
def test_a_body_that_is_not_json_is_400(reject, path, content_type, data):
    reject.raw("put", path, data, 400, "_request", content_type=content_type)


@pytest.mark.parametrize("path", WRITE_PATHS)
@pytest.mark.parametrize("body", [[], [{"role": "nurse"}], "nurse", 42, None, True],
                         ids=["empty array", "array of object", "string", "number", "null", "boolean"])
def test_a_json_body_that_is_not_an_object_is_422(reject, path, body):
    reject.raw("put", path, json.dumps(body), 422, "_request")


def test_post_takes_the_same_body_rules_as_put(reject):
    reject.raw("post", "/patients", b"[1, 2]", 422, "_request")
    reject.raw("post", "/sessions/se-1/vitals", b"{oops", 400, "_request")
    reject.raw("post", "/observations", b'{"score": NaN}', 400, "_request")


@pytest.fixture
def small_body_api(tmp_path, seeded_sqlite):
    """An app over the seeded clinic whose write bodies may be at most 2000 bytes."""
    shutil.copy(seeded_sqlite, tmp_path / "ketamine-fhir.sqlite3")
    app = create_app(Settings.from_env({"KETAMINE_FHIR_DATA": str(tmp_path),
                                        "KETAMINE_FHIR_MAX_BODY_BYTES": "2000"}), TESTING=True)
    with Session(app.extensions["db_engine"], expire_on_commit=False) as db:
        token = create_token(db, "operator", ["*"])
        yield Api(app.test_client(), {"Authorization": f"Bearer {token}"}), db
    app.extensions["db_engine"].dispose()


@pytest.mark.parametrize("collection", COLLECTION_NAMES)
def test_a_body_over_max_body_bytes_is_413_and_writes_nothing(small_body_api, collection):
    api, db = small_body_api
    path, body = new(collection)
    padded = json.dumps(body) + " " * 3000  # the same valid record, with JSON whitespace after it
    Rejects(api, db).raw("put", path, padded, 413, "_request")
    Rejects(api, db).raw("post", path.rsplit("/", 1)[0], padded, 413, "_request")
    assert accepted(api.put(path, body))  # the same record, small enough, is fine


def test_the_body_limit_is_checked_before_the_body_is_parsed(small_body_api):
    api, db = small_body_api
    Rejects(api, db).raw("post", "/patients", b"{" + b" " * 5000, 413, "_request")


def test_import_has_its_own_larger_limit_but_each_line_is_one_write(small_body_api):
    """The file may exceed the single-write limit; each of its lines may not (a line is one record;
    KETAMINE_FHIR_MAX_IMPORT_LINE_BYTES defaults to KETAMINE_FHIR_MAX_BODY_BYTES)."""
    api, _ = small_body_api
    lines = [json.dumps({"type": "referrals", "record": make(REFERRAL, id=f"rf-big{n}", notes="n" * 1000)})
             for n in range(3)]
    assert len("\n".join(lines)) > 2000
    report = accepted(api.import_ndjson("\n".join(lines)), 200)
    assert report["accepted"] == 3
    too_long = json.dumps({"type": "referrals", "record": make(REFERRAL, id="rf-huge", notes="n" * 3000)})
    report = accepted(api.import_ndjson(too_long), 200)
    assert report["accepted"] == 0 and report["errors"][0]["status"] == 413


def test_a_body_over_the_default_1_mib_is_413(reject):
    path, body = new("sessions", notes="x" * (1024 * 1024 + 1))
    reject.put(path, body, 413, "_request")


# --------------------------------------------------------------------------------------------
# Fields: unknown names, required, strict JSON types
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("collection", COLLECTION_NAMES)
def test_an_unknown_top_level_field_is_422_not_dropped(reject, collection):
    path, body = new(collection, colour="blue")
    errors = reject.put(path, body, 422, "colour")
    assert errors["colour"] == ["Unknown field."]


@pytest.mark.parametrize("collection,field", [
    ("practitioners", "name.nickname"),
    ("patients", "name.nickname"),
    ("patients", "identifiers.0.type"),
    ("sessions", "performers.0.role"),
    ("sessions", "adverse_events.0.grade"),
])
def test_an_unknown_nested_field_is_422_at_its_path(reject, collection, field):
    path, body = new(collection, **{field: "x"})
    reject.put(path, body, 422, field)


@pytest.mark.parametrize("collection", COLLECTION_NAMES)
def test_read_only_fields_of_a_response_are_not_unknown_fields(clinic, collection):
    path, body = new(collection, meta={"version": 7}, warnings=[], fhir={"Patient": "Patient/x"})
    accepted(clinic.put(path, body))


REQUIRED = {
    "practitioners": ["name", "name.family", "role"],
    "patients": ["mrn", "name", "name.family", "birth_date", "sex", "identifiers.0.value"],
    "referrals": ["patient_id", "referrer_id", "referred_on", "diagnoses"],
    "courses": ["patient_id", "kind", "route", "planned_sessions", "start_date"],
    "sessions": ["patient_id", "start", "status", "performers.0.practitioner_id", "performers.0.function",
                 "adverse_events.0.text", "adverse_events.0.severity"],
    "administrations": ["drug", "route", "dose_mg", "start", "status"],
    "observations": ["patient_id", "instrument", "score", "effective"],
    "vitals": ["effective"],
}


def test_the_required_fields_listed_here_are_those_of_the_schemas():
    """Keeps REQUIRED honest: every top-level required field of every schema is exercised."""
    from service.clinic.collections import COLLECTIONS

    for name, coll in COLLECTIONS.items():
        declared = {f for f, field in coll.schema().fields.items() if field.required}
        assert declared == {f for f in REQUIRED[name] if "." not in f}, name


@pytest.mark.parametrize("collection,field", [(c, f) for c, fs in REQUIRED.items() for f in fs])
def test_a_missing_required_field_is_422_at_its_path(reject, collection, field):
    path, body = new(collection, **{field: DROP})
    errors = reject.put(path, body, 422, field)
    assert errors[field] == ["Missing data for required field."]


@pytest.mark.parametrize("collection,field", [(c, f) for c, fs in REQUIRED.items() for f in fs])
def test_null_for_a_required_field_is_422(reject, collection, field):
    path, body = new(collection, **{field: None})
    reject.put(path, body, 422, field)


def test_a_session_id_is_required_where_the_url_does_not_give_it(reject):
    reject.put("/administrations/ad-top", make(ADMINISTRATION, id=None), 422, "session_id")
    reject.post("/vitals", make(VITALS, id=None), 422, "session_id")


STRICT_TYPES = [
    # numbers are JSON numbers, not strings or booleans
    ("patients", "weight_kg", "70"),
    ("patients", "weight_kg", True),
    ("patients", "height_cm", "170 cm"),
    ("courses", "target_dose_mg_per_kg", "0.5"),
    ("courses", "sessions_per_week", False),
    ("administrations", "dose_mg", "35"),
    ("administrations", "dose_mg_per_kg", True),
    ("observations", "score", "16"),
    ("vitals", "temperature_c", "36.6"),
    # integers are JSON integers: not 5.0, "5" or true
    ("courses", "planned_sessions", 6.0),
    ("courses", "planned_sessions", "6"),
    ("courses", "planned_sessions", True),
    ("sessions", "number", 2.0),
    ("sessions", "number", "2"),
    ("sessions", "number", True),
    ("vitals", "systolic_mmhg", 122.0),
    ("vitals", "heart_rate_bpm", "72"),
    ("vitals", "spo2_pct", 97.5),
    ("vitals", "respiratory_rate_bpm", True),
    ("observations", "items.0", 2.0),
    ("observations", "items.0", "2"),
    ("observations", "items.0", True),
    # booleans are JSON booleans: not "true", 1 or "yes"
    ("sessions", "psychotherapy", "true"),
    ("sessions", "psychotherapy", 1),
    ("sessions", "psychotherapy", 0),
    ("sessions", "psychotherapy", "yes"),
    # strings are strings, lists are lists, objects are objects
    ("practitioners", "npi", int(npi_with_check_digit("123456789"))),
    ("practitioners", "name", "Hale"),
    ("practitioners", "name.given", "Jo"),
    ("patients", "identifiers", {"system": EHR_MRN_SYSTEM, "value": "E1"}),
    ("patients", "identifiers.0", "E1"),
    ("patients", "mrn", 99),
    ("patients", "birth_date", 19840312),
    ("referrals", "diagnoses", "F33.2"),
    ("referrals", "patient_id", ["pt-1"]),
    ("sessions", "start", 1768226400),
    ("sessions", "performers", {"practitioner_id": "rn-cho", "function": "monitoring"}),
    ("observations", "items", 16),
]


@pytest.mark.parametrize("collection,field,value", STRICT_TYPES,
                         ids=[f"{c}.{f}={v!r}" for c, f, v in STRICT_TYPES])
def test_a_value_of_the_wrong_json_type_is_422_never_coerced(reject, collection, field, value):
    path, body = new(collection, **{field: value})
    reject.put(path, body, 422, field)


@pytest.mark.parametrize("collection,field", [
    ("administrations", "dose_mg"), ("vitals", "weight_kg"), ("patients", "weight_kg"), ("observations", "score"),
])
def test_a_number_too_large_for_a_float_is_422(reject, collection, field):
    path, body = new(collection)
    raw = json.dumps(alter(body, {field: 1})).replace(f'"{field}": 1', f'"{field}": {"9" * 400}')
    reject.raw("put", path, raw, 422, field)
    reject.raw("put", path, raw.replace("9" * 400, "1e400"), 422, field)  # parses to infinity


@pytest.mark.parametrize("collection,field", [
    ("practitioners", "name.family"), ("patients", "mrn"), ("referrals", "reason"), ("sessions", "location"),
    ("sessions", "adverse_events.0.text"), ("administrations", "lot_number"),
])
@pytest.mark.parametrize("value", ["", "   ", "\t\n"], ids=["empty", "spaces", "tab-newline"])
def test_a_blank_text_is_422(reject, collection, field, value):
    path, body = new(collection, **{field: value})
    errors = reject.put(path, body, 422, field)
    assert any("blank" in m or "Length" in m or "length" in m for m in errors[field]), errors


def test_text_with_surrounding_spaces_is_not_blank(clinic):
    path, body = new("practitioners", **{"name.family": " Hale", "organization": "  Riverside  "})
    assert accepted(clinic.put(path, body))["name"]["family"] == " Hale"


@pytest.mark.parametrize("collection,field,limit", [
    ("patients", "mrn", 64), ("practitioners", "name.family", 100), ("referrals", "reason", 1000),
    ("sessions", "notes", 10000), ("administrations", "product", 100), ("patients", "email", 254),
])
def test_a_text_over_its_length_limit_is_422(reject, clinic, collection, field, limit):
    path, body = new(collection)
    longest = "a" * (limit - len("@example.org")) + "@example.org" if field == "email" else "a" * limit
    reject.put(path, alter(body, {field: longest + "a"}), 422, field)
    accepted(clinic.put(path, alter(body, {field: longest})))


@pytest.mark.parametrize("collection,field,value", [
    ("patients", "phone", "call me"),
    ("patients", "phone", "12"),
    ("practitioners", "email", "not-an-email"),
    ("patients", "identifiers.0.system", "EHR"),
    ("patients", "identifiers.0.system", "ftp://ehr.example.org"),
    ("patients", "identifiers.0.system", "urn:oid:1.2.3\n"),
    ("sessions", "adverse_events.0.code", "nausea"),
    ("sessions", "adverse_events.0.code", "0123456"),
    ("sessions", "adverse_events.0.code", "422587007\n"),
    ("patients", "phone", "+1 555 0100\n"),
])
def test_formatted_strings_must_match_their_whole_format(reject, collection, field, value):
    path, body = new(collection, **{field: value})
    reject.put(path, body, 422, field)


@pytest.mark.parametrize("collection,field,value", [
    ("patients", "mrn", "MRN\x00-1"),
    ("patients", "identifiers.0.value", "E\x001"),
    ("patients", "mrn", "MRN-\ud800"),
    ("practitioners", "organization", "Riverside \udfff"),
    ("sessions", "notes", "stopped\x00"),
])
def test_strings_a_database_cannot_store_are_422(reject, collection, field, value):
    """NUL characters and unpaired UTF-16 surrogates (legal JSON escapes, not storable text)."""
    path, body = new(collection, **{field: value})
    reject.raw("put", path, json.dumps(body), 422, field)


def test_characters_beyond_the_basic_plane_are_storable_text(clinic):
    """An emoji arrives as a surrogate pair escape, which is one character, not an unpaired surrogate."""
    path, body = new("sessions", notes="patient felt calm \U0001F60C", location="Room \u00e9\u4e2d")
    raw = json.dumps(body)
    assert "\\ud83d\\ude0c" in raw
    response = clinic.client.put(f"/api/v1{path}", data=raw, content_type="application/json", headers=clinic.headers)
    assert accepted(response)["notes"].endswith("\U0001F60C")


# --------------------------------------------------------------------------------------------
# Ids: in the URL and in the body
# --------------------------------------------------------------------------------------------

BAD_IDS = ["a b", "x" * 65, "bad!id", "pätient", "a/b", "abc\n", ""]


@pytest.mark.parametrize("collection", COLLECTION_NAMES)
@pytest.mark.parametrize("bad_id", [i for i in BAD_IDS if i not in ("", "a/b")], ids=repr)
def test_an_id_in_the_url_outside_the_id_pattern_is_422(reject, collection, bad_id):
    path, body = new(collection)
    base = path.rsplit("/", 1)[0]
    reject.put(f"{base}/{quote(bad_id, safe='')}", body, 422, "id")


@pytest.mark.parametrize("collection", COLLECTION_NAMES)
@pytest.mark.parametrize("bad_id", [*BAD_IDS, 17, None, ["a"]], ids=repr)
def test_an_id_in_the_body_outside_the_id_pattern_is_422(reject, collection, bad_id):
    path, body = new(collection, id=bad_id)
    reject.put(path, body, 422, "id")
    reject.post(path.rsplit("/", 1)[0], body, 422, "id")


@pytest.mark.parametrize("collection", COLLECTION_NAMES)
def test_a_body_id_other_than_the_url_id_is_422(reject, collection):
    path, body = new(collection, id="some-other-id")
    errors = reject.put(path, body, 422, "id")
    assert "URL" in errors["id"][0]


def test_a_longest_id_of_every_allowed_character_is_accepted(clinic):
    record_id = ("Az09._-" * 10)[:64]
    accepted(clinic.put(f"/practitioners/{record_id}", new("practitioners")[1]))
    assert clinic.get(f"/practitioners/{record_id}").status_code == 200


@pytest.mark.parametrize("collection,field", [
    ("referrals", "patient_id"), ("referrals", "referrer_id"), ("courses", "referral_id"),
    ("sessions", "course_id"), ("sessions", "performers.0.practitioner_id"), ("observations", "session_id"),
    ("administrations", "performer_id"), ("patients", "referring_practitioner_id"),
])
@pytest.mark.parametrize("bad_id", ["a b", "x" * 65, "", "pt-1\n"], ids=repr)
def test_a_reference_outside_the_id_pattern_is_422(reject, collection, field, bad_id):
    path, body = new(collection, **{field: bad_id})
    reject.put(path, body, 422, field)


@pytest.mark.parametrize("collection", ["administrations", "vitals"])
def test_a_nested_body_naming_another_session_than_the_url_is_422(reject, collection):
    path, body = new(collection, session_id="se-2")
    reject.put(path, body, 422, "session_id")


# --------------------------------------------------------------------------------------------
# Enumerations, ranges and formats of single fields
# --------------------------------------------------------------------------------------------

ENUMS = [
    ("practitioners", "role", "surgeon"),
    ("practitioners", "role", "Nurse"),
    ("practitioners", "status", "retired"),
    ("patients", "sex", "f"),
    ("patients", "sex", "FEMALE"),
    ("patients", "sex", "intersex"),
    ("patients", "status", "deceased"),
    ("referrals", "status", "open"),
    ("courses", "kind", "booster"),
    ("courses", "route", "oral"),
    ("courses", "route", "IV"),
    ("courses", "status", "paused"),
    ("sessions", "status", "done"),
    ("sessions", "status", "stopped"),
    ("sessions", "kind", "rescue"),
    ("sessions", "performers.0.function", "observer"),
    ("sessions", "adverse_events.0.severity", "fatal"),
    ("administrations", "drug", "s-ketamine"),
    ("administrations", "drug", "Ketamine"),
    ("administrations", "route", "intravenous"),
    ("administrations", "status", "done"),
    ("administrations", "status", "stopped-early"),
    ("observations", "instrument", "hdrs"),
    ("observations", "instrument", "PHQ9"),
    ("observations", "timing", "after"),
    ("observations", "status", "preliminary"),
    ("vitals", "timing", "before"),
    ("vitals", "status", "preliminary"),
]


@pytest.mark.parametrize("collection,field,value", ENUMS, ids=[f"{c}.{f}={v}" for c, f, v in ENUMS])
def test_a_value_outside_its_enumeration_is_422(reject, collection, field, value):
    path, body = new(collection, **{field: value})
    errors = reject.put(path, body, 422, field)
    assert "Must be one of" in errors[field][0]


@pytest.mark.parametrize("collection,field,values", [
    ("patients", "sex", ["female", "male", "other", "unknown"]),
    ("practitioners", "role", ["psychiatrist", "anesthesiologist", "physician", "nurse", "psychotherapist"]),
    ("sessions", "status", ["planned", "in-progress", "completed", "stopped-early", "cancelled", "entered-in-error"]),
    ("administrations", "status", ["completed", "not-done", "stopped", "in-progress", "entered-in-error"]),
    ("administrations", "route", ["iv", "im", "intranasal", "subcutaneous", "oral", "sublingual"]),
    ("observations", "timing", ["baseline", "pre", "post", "follow-up"]),
    ("vitals", "timing", ["pre-dose", "during", "post-dose", "discharge"]),
])
def test_every_value_of_an_enumeration_is_accepted(clinic, collection, field, values):
    path, body = new(collection)
    for value in values:
        assert clinic.put(path, alter(body, {field: value})).status_code in (200, 201), value


RANGES = [
    ("patients", "weight_kg", 0), ("patients", "weight_kg", -70), ("patients", "weight_kg", 500.1),
    ("patients", "height_cm", 0), ("patients", "height_cm", 300.5),
    ("courses", "planned_sessions", 0), ("courses", "planned_sessions", 101),
    ("courses", "target_dose_mg_per_kg", 0), ("courses", "target_dose_mg_per_kg", 5.01),
    ("courses", "sessions_per_week", 0), ("courses", "sessions_per_week", 7.5),
    ("sessions", "number", 0), ("sessions", "number", 1001),
    ("administrations", "dose_mg", 0), ("administrations", "dose_mg", -35), ("administrations", "dose_mg", 1000.5),
    ("administrations", "dose_mg_per_kg", 0), ("administrations", "dose_mg_per_kg", 20.5),
    ("administrations", "weight_kg", 0), ("administrations", "weight_kg", 501),
    ("administrations", "rate_mg_per_kg_per_h", 0), ("administrations", "rate_mg_per_kg_per_h", 50.1),
    ("vitals", "systolic_mmhg", 39), ("vitals", "systolic_mmhg", 301),
    ("vitals", "diastolic_mmhg", 19), ("vitals", "heart_rate_bpm", 19), ("vitals", "heart_rate_bpm", 251),
    ("vitals", "respiratory_rate_bpm", 1), ("vitals", "respiratory_rate_bpm", 81),
    ("vitals", "spo2_pct", 49), ("vitals", "spo2_pct", 101),
    ("vitals", "temperature_c", 29.9), ("vitals", "temperature_c", 45.1),
    ("vitals", "weight_kg", 0), ("vitals", "weight_kg", 500.5),
]


@pytest.mark.parametrize("collection,field,value", RANGES, ids=[f"{c}.{f}={v}" for c, f, v in RANGES])
def test_a_number_outside_its_range_is_422(reject, collection, field, value):
    path, body = new(collection, **{field: value})
    if collection == "administrations":  # keep dose_mg = dose_mg_per_kg x weight_kg out of the picture
        body = alter(body, {"dose_mg_per_kg": DROP, "weight_kg": DROP} if field == "dose_mg" else
                     {"dose_mg_per_kg": DROP} if field == "weight_kg" else
                     {"weight_kg": DROP} if field == "dose_mg_per_kg" else {})
    reject.put(path, body, 422, field)


@pytest.mark.parametrize("collection,field,value", [
    ("vitals", "systolic_mmhg", 40), ("vitals", "spo2_pct", 100), ("vitals", "temperature_c", 45),
    ("courses", "planned_sessions", 100), ("sessions", "number", 1000), ("patients", "weight_kg", 500),
])
def test_a_number_on_the_edge_of_its_range_is_accepted(clinic, collection, field, value):
    path, body = new(collection, **{field: value})
    if field == "systolic_mmhg":
        body = alter(body, {"diastolic_mmhg": 30})
    accepted(clinic.put(path, body))


# NPI: 10 digits, Luhn check digit over the 80840 prefix
VALID_NPI = npi_with_check_digit("123456789")  # 1234567893, the CMS example
WRONG_CHECK_DIGIT = VALID_NPI[:-1] + str((int(VALID_NPI[-1]) + 1) % 10)


@pytest.mark.parametrize("npi", [WRONG_CHECK_DIGIT, "123456789", "12345678931", "abcdefghij", "",
                                 "1234-56789", " 1234567893", "1234567893\n"], ids=repr)
def test_an_npi_that_fails_the_luhn_check_or_format_is_422(reject, npi):
    path, body = new("practitioners", npi=npi)
    reject.put(path, body, 422, "npi")


@pytest.mark.parametrize("npi", [VALID_NPI, npi_with_check_digit("987654321"), npi_with_check_digit("000000000")])
def test_an_npi_with_a_good_check_digit_is_accepted(clinic, npi):
    path, body = new("practitioners", npi=npi)
    assert accepted(clinic.put(path, body))["npi"] == npi


# ICD-10-CM: letter, digit, digit or A/B; optional dot and 1-4 characters
@pytest.mark.parametrize("code", ["F332", "F33.", "f33.2", "F3", "33.2", "F33.2X12Y", "F33 2", "F33.2\n",
                                  "depression", ""], ids=repr)
def test_a_diagnosis_that_is_not_an_icd10cm_code_is_422(reject, code):
    path, body = new("referrals", diagnoses=["F41.1", code])
    reject.put(path, body, 422, "diagnoses.1")
    path, body = new("courses", indication=code)
    reject.put(path, body, 422, "indication")


@pytest.mark.parametrize("code", ["F33.2", "F32.A", "G89.4", "F43.10", "R45.851", "F33.9", "Z91.5"])
def test_icd10cm_codes_are_accepted(clinic, code):
    accepted(clinic.put(*new("referrals", diagnoses=[code])))
    accepted(clinic.put(*new("courses", indication=code)))


THIRTEEN_DIAGNOSES = [f"F3{i}.1" for i in range(10)] + ["F40.1", "F41.1", "F42.1"]


@pytest.mark.parametrize("diagnoses", [[], ["F33.2", "F33.2"], THIRTEEN_DIAGNOSES],
                         ids=["none", "duplicate", "more than 12"])
def test_a_referral_needs_one_to_twelve_different_diagnoses(reject, diagnoses):
    path, body = new("referrals", diagnoses=diagnoses)
    reject.put(path, body, 422, "diagnoses")


# Dates and times
DAY_AFTER_TOMORROW = (datetime.now(UTC).date() + timedelta(days=2)).isoformat()


@pytest.mark.parametrize("birth_date", [DAY_AFTER_TOMORROW, "2999-01-01", "1899-12-31", "1984-02-30", "12/03/1984",
                                        "1984-03-12T00:00:00Z"])
def test_a_birth_date_in_the_future_before_1900_or_not_a_date_is_422(reject, birth_date):
    path, body = new("patients", birth_date=birth_date)
    reject.put(path, body, 422, "birth_date")


@pytest.mark.parametrize("day", [DAY_AFTER_TOMORROW, "2026-02-30", "2026-01-02T09:00:00Z"])
def test_a_body_measurement_day_in_the_future_or_not_a_date_is_422(reject, day):
    reject.put(*new("patients", body_measured_on=day), 422, "body_measured_on")


def test_a_body_measurement_day_is_stored_as_sent(clinic):
    path, body = new("patients", weight_kg=71.5, height_cm=168.0, body_measured_on="2026-01-02")
    accepted(clinic.put(path, body))
    assert clinic.get(path).get_json()["body_measured_on"] == "2026-01-02"


def test_a_birth_date_of_1900_or_yesterday_is_accepted(clinic):
    accepted(clinic.put(*new("patients", birth_date="1900-01-01")))
    yesterday = (datetime.now(UTC).date() - timedelta(days=1)).isoformat()
    assert clinic.put(*new("patients", birth_date=yesterday)).status_code == 200


@pytest.mark.parametrize("collection,field", [
    ("sessions", "start"), ("sessions", "end"), ("administrations", "start"), ("administrations", "end"),
    ("observations", "effective"), ("vitals", "effective"),
])
@pytest.mark.parametrize("value", [
    "2026-01-12T09:00:00",  # no UTC offset
    "2026-01-12",
    "2026-01-12T25:00:00Z",
    "12 Jan 2026 09:00",
    "0001-01-01T00:00:00+05:00",  # before the first representable UTC instant
    "9999-12-31T23:00:00-05:00",  # after the last
], ids=["naive", "date only", "hour 25", "not ISO", "before year 1 in UTC", "after year 9999 in UTC"])
def test_a_time_without_a_utc_offset_or_outside_utc_is_422(reject, collection, field, value):
    path, body = new(collection, **{field: value})
    reject.put(path, body, 422, field)


@pytest.mark.parametrize("collection,start,end,value", [
    ("courses", "start_date", "end_date", "2026-01-11"),
    ("sessions", "start", "end", "2026-01-12T08:59:59-05:00"),
    ("sessions", "start", "end", "2026-01-12T13:59:59+00:00"),  # 08:59:59-05:00 in another offset
    ("administrations", "start", "end", "2026-01-12T09:09:00-05:00"),
])
def test_an_end_before_the_start_is_422_at_the_end(reject, clinic, collection, start, end, value):
    path, body = new(collection, **{end: value})
    reject.put(path, body, 422, end)
    accepted(clinic.put(path, alter(body, {end: body[start]})))  # ending as it starts is fine


# --------------------------------------------------------------------------------------------
# Rules across the fields of one record
# --------------------------------------------------------------------------------------------


def test_an_identifier_needs_its_system(reject):
    path, body = new("patients", identifiers=[{"value": "E999999"}])
    errors = reject.put(path, body, 422, "identifiers")
    assert "system" in errors["identifiers"][0]


def test_an_identifier_may_appear_once_per_patient(reject):
    ident = {"system": EHR_MRN_SYSTEM, "value": "E999999"}
    path, body = new("patients", identifiers=[ident, dict(ident)])
    reject.put(path, body, 422, "identifiers")


def test_the_same_value_in_two_systems_is_two_identifiers(clinic):
    idents = [{"system": EHR_MRN_SYSTEM, "value": "E999999"}, {"system": "urn:oid:1.2.3.4", "value": "E999999"}]
    accepted(clinic.put(*new("patients", identifiers=idents)))


def test_a_performer_may_appear_once_per_function(reject, clinic):
    twice = [{"practitioner_id": "rn-cho", "function": "monitoring"}] * 2
    reject.put(*new("sessions", performers=twice), 422, "performers")
    two_roles = [{"practitioner_id": "rn-cho", "function": "monitoring"},
                 {"practitioner_id": "rn-cho", "function": "administering"}]
    accepted(clinic.put(*new("sessions", performers=two_roles)))


ESKETAMINE = {"drug": "esketamine", "route": "intranasal", "dose_mg": 56, "device_count": 2,
              "product": "spravato-28mg-device", "dose_mg_per_kg": DROP, "weight_kg": DROP,
              "rate_mg_per_kg_per_h": DROP}


@pytest.mark.parametrize("route", ["iv", "im", "subcutaneous", "oral", "sublingual"])
def test_esketamine_is_intranasal_only(reject, route):
    reject.put(*new("administrations", **{**ESKETAMINE, "route": route}), 422, "route")


def test_intranasal_esketamine_by_device_count_is_accepted(clinic):
    body = accepted(clinic.put(*new("administrations", **ESKETAMINE)))
    assert body["device_count"] == 2 and body["dose_mg"] == 56


def test_device_count_is_only_for_esketamine(reject):
    reject.put(*new("administrations", device_count=1), 422, "device_count")


@pytest.mark.parametrize("devices,dose_mg", [(2, 84), (3, 56), (1, 56), (2, 56.5), (3, 83)])
def test_device_count_times_28_mg_must_be_dose_mg(reject, devices, dose_mg):
    reject.put(*new("administrations", **{**ESKETAMINE, "device_count": devices, "dose_mg": dose_mg}),
               422, "dose_mg")


@pytest.mark.parametrize("devices", [0, 11, 2.0])
def test_device_count_is_a_whole_number_of_devices_from_1_to_10(reject, devices):
    reject.put(*new("administrations", **{**ESKETAMINE, "device_count": devices}), 422, "device_count")


# dose_mg against dose_mg_per_kg x weight_kg: the larger of 2.5 mg and 2.5 % either way
@pytest.mark.parametrize("dose_mg,per_kg,weight", [
    (35, 0.5, 70), (37.5, 0.5, 70), (32.5, 0.5, 70), (36, 0.5, 70),
    (204.9, 1.0, 200), (195.1, 1.0, 200), (10.5, 0.1, 80),
])
def test_a_dose_within_rounding_of_mg_per_kg_times_weight_is_accepted(clinic, dose_mg, per_kg, weight):
    body = accepted(clinic.put(*new("administrations", dose_mg=dose_mg, dose_mg_per_kg=per_kg, weight_kg=weight)))
    assert body["dose_mg"] == dose_mg


@pytest.mark.parametrize("dose_mg,per_kg,weight", [
    (37.6, 0.5, 70), (32.4, 0.5, 70), (70, 0.5, 70), (3.5, 0.5, 70), (205.1, 1.0, 200), (194.9, 1.0, 200),
])
def test_a_dose_beyond_rounding_of_mg_per_kg_times_weight_is_422(reject, dose_mg, per_kg, weight):
    errors = reject.put(*new("administrations", dose_mg=dose_mg, dose_mg_per_kg=per_kg, weight_kg=weight),
                        422, "dose_mg")
    assert "dose_mg_per_kg x weight_kg" in errors["dose_mg"][0]


def test_dose_consistency_is_only_checked_when_both_factors_are_given(clinic):
    accepted(clinic.put(*new("administrations", dose_mg=70, weight_kg=DROP)))
    accepted(clinic.put("/sessions/se-1/administrations/ad-2",
                        alter(NEW["administrations"][1], {"dose_mg": 70, "dose_mg_per_kg": DROP})))


# Outcome scores: the instrument's range, whole numbers, items
@pytest.mark.parametrize("instrument,score", [
    ("phq9", 28), ("phq9", -1), ("gad7", 22), ("madrs", 61), ("pcl5", 81), ("ymbocs", 41), ("cssrs", 7),
    ("pain-nrs", 11), ("pain-nrs", -0.5), ("bprs", 17), ("bprs", 127), ("cadss", 93), ("peg", 10.5),
])
def test_a_score_outside_the_instruments_range_is_422(reject, instrument, score):
    path, body = new("observations", instrument=instrument, score=score, items=DROP)
    errors = reject.put(path, body, 422, "score")
    assert "scores run from" in errors["score"][0]


@pytest.mark.parametrize("instrument,score", [("phq9", 16.5), ("gad7", 3.2), ("madrs", 20.01), ("pain-nrs", 6.5)])
def test_a_non_integer_score_of_an_integer_instrument_is_422(reject, instrument, score):
    path, body = new("observations", instrument=instrument, score=score, items=DROP)
    errors = reject.put(path, body, 422, "score")
    assert "whole numbers" in errors["score"][0]


def test_a_mean_scored_instrument_takes_fractional_scores(clinic):
    accepted(clinic.put(*new("observations", instrument="peg", score=5.3, items=[5, 6, 5])))


@pytest.mark.parametrize("instrument,score,items", [
    ("phq9", 14, [2, 2, 2, 2, 2, 2, 2]),  # 7 of 9
    ("phq9", 18, [2] * 9 + [0]),  # 10 of 9
    ("gad7", 7, [1] * 8),
    ("cssrs", 0, [0] * 5),
    ("pain-nrs", 5, [5]),  # a single rating: no items
])
def test_the_wrong_number_of_items_is_422(reject, instrument, score, items):
    path, body = new("observations", instrument=instrument, score=score, items=items)
    errors = reject.put(path, body, 422, "items")
    assert "items" in errors["items"][0]


@pytest.mark.parametrize("instrument,score,items", [
    ("phq9", 17, [4, 2, 2, 2, 2, 2, 2, 1, 0]),
    ("phq9", 15, [-1, 2, 2, 2, 2, 2, 2, 2, 2]),
    ("cssrs", 2, [2, 0, 0, 0, 0, 0]),
    ("bprs", 35, [0] + [2] * 17),  # BPRS items run 1-7
    ("bprs", 42, [8] + [2] * 17),
    ("madrs", 20, [7, 2, 2, 2, 2, 2, 2, 1, 0, 0]),
])
def test_an_item_outside_the_instruments_item_range_is_422(reject, instrument, score, items):
    path, body = new("observations", instrument=instrument, score=score, items=items)
    errors = reject.put(path, body, 422, "items")
    assert "out of range" in errors["items"][0]


@pytest.mark.parametrize("instrument,score,items", [
    ("phq9", 15, [2, 2, 2, 2, 2, 2, 2, 2, 0]),
    ("phq9", 17, [2, 2, 2, 2, 2, 2, 2, 2, 0]),
    ("gad7", 0, [1, 0, 0, 0, 0, 0, 0]),
    ("peg", 5.5, [5, 6, 5]),  # the mean is 5.33
])
def test_items_that_do_not_add_up_to_the_score_are_422(reject, instrument, score, items):
    path, body = new("observations", instrument=instrument, score=score, items=items)
    errors = reject.put(path, body, 422, "score")
    assert "items give" in errors["score"][0]


def test_an_instrument_not_scored_from_its_items_takes_any_items_in_range(clinic):
    items = [1] * 16  # QIDS-SR16 scores from the highest of item groups, not the sum
    accepted(clinic.put(*new("observations", instrument="qids-sr16", score=9, items=items)))


# Vital signs
def test_vitals_need_at_least_one_measurement(reject):
    body = {"effective": "2026-01-12T09:05:00-05:00", "timing": "pre-dose"}
    errors = reject.put("/sessions/se-1/vitals/vs-new", body, 422, "_request")
    assert "At least one of" in errors["_request"][0]


@pytest.mark.parametrize("present,missing", [("systolic_mmhg", "diastolic_mmhg"),
                                             ("diastolic_mmhg", "systolic_mmhg")])
def test_blood_pressure_needs_both_systolic_and_diastolic(reject, present, missing):
    reject.put(*new("vitals", **{missing: DROP}), 422, missing)


@pytest.mark.parametrize("systolic,diastolic", [(120, 120), (110, 130), (60, 59 + 2)])
def test_diastolic_must_be_below_systolic(reject, systolic, diastolic):
    reject.put(*new("vitals", systolic_mmhg=systolic, diastolic_mmhg=diastolic), 422, "diastolic_mmhg")


@pytest.mark.parametrize("measurement,value", [("heart_rate_bpm", 70), ("spo2_pct", 97), ("temperature_c", 36.8),
                                               ("respiratory_rate_bpm", 12), ("weight_kg", 71.5)])
def test_any_single_measurement_makes_a_set_of_vitals(clinic, measurement, value):
    body = {"effective": "2026-01-12T09:05:00-05:00", measurement: value}
    accepted(clinic.put("/sessions/se-1/vitals/vs-new", body))


# --------------------------------------------------------------------------------------------
# References to other records
# --------------------------------------------------------------------------------------------

UNKNOWN_REFERENCES = [
    ("patients", "referring_practitioner_id", "practitioner"),
    ("referrals", "patient_id", "patient"),
    ("referrals", "referrer_id", "practitioner"),
    ("courses", "patient_id", "patient"),
    ("courses", "referral_id", "referral"),
    ("sessions", "patient_id", "patient"),
    ("sessions", "course_id", "course"),
    ("sessions", "performers.0.practitioner_id", "practitioner"),
    ("administrations", "performer_id", "practitioner"),
    ("observations", "patient_id", "patient"),
    ("observations", "session_id", "session"),
]


@pytest.mark.parametrize("collection,field,label", UNKNOWN_REFERENCES)
def test_a_reference_to_an_unknown_record_is_422_at_the_field(reject, collection, field, label):
    errors = reject.put(*new(collection, **{field: "ghost"}), 422, field)
    assert errors[field] == [f"No {label} with id 'ghost'."]


def test_every_unknown_reference_of_a_record_is_reported_at_once(reject):
    body = alter(NEW["sessions"][1], {"course_id": "ghost-course", "performers": [
        {"practitioner_id": "rn-cho", "function": "monitoring"},
        {"practitioner_id": "ghost-1", "function": "administering"},
        {"practitioner_id": "ghost-2", "function": "supervising"}]})
    errors = reject.put(NEW["sessions"][0], body, 422, "course_id", "performers.1.practitioner_id",
                        "performers.2.practitioner_id")
    assert "performers.0.practitioner_id" not in errors


@pytest.mark.parametrize("collection", ["administrations", "vitals"])
def test_a_top_level_nested_record_naming_an_unknown_session_is_422(reject, collection):
    path, body = new(collection, session_id="ghost")
    reject.put(f"/{collection}/{path.rsplit('/', 1)[1]}", body, 422, "session_id")


@pytest.mark.parametrize("collection", ["administrations", "vitals"])
@pytest.mark.parametrize("method", ["put", "post"])
def test_a_nested_record_under_an_unknown_session_is_404(reject, collection, method):
    _, body = new(collection)
    path = f"/sessions/ghost/{collection}" + ("/x-1" if method == "put" else "")
    reject.send(method, path, body, 404, "_request")


def test_an_unknown_session_in_the_url_is_404_even_when_the_body_is_invalid(reject):
    reject.put("/sessions/ghost/vitals/vs-x", {"bogus": True}, 404, "_request")


@pytest.mark.parametrize("collection,field,other", [
    ("courses", "referral_id", "rf-2"),
    ("sessions", "course_id", "co-2"),
    ("observations", "session_id", "se-2"),
])
def test_a_reference_to_another_patients_record_is_409_at_the_field(reject, collection, field, other):
    path, body = new(collection, **{field: other})
    if collection == "sessions":
        body = alter(body, {"number": 7})
    errors = reject.put(path, body, 409, field)
    assert "another patient" in errors[field][0]


@pytest.mark.parametrize("path,body", [
    ("/referrals/rf-1", make(REFERRAL, patient_id="pt-2")),
    ("/courses/co-1", make(COURSE, patient_id="pt-2", referral_id="rf-2")),
    ("/courses/co-1", make(COURSE, patient_id="pt-2", referral_id=None)),
    ("/sessions/se-1", make(SESSION, patient_id="pt-2", course_id=None, number=None)),
    ("/sessions/se-1", make(SESSION, patient_id="pt-2", course_id="co-2", number=9)),
    ("/observations/ob-1", make(OBSERVATION, patient_id="pt-2")),
    ("/sessions/se-2/administrations/ad-1", ADMINISTRATION),
    ("/sessions/se-2/vitals/vs-1", VITALS),
    ("/administrations/ad-1", make(ADMINISTRATION, session_id="se-2")),
], ids=["referral", "course with referral", "course", "session", "session with course", "score", "dose",
        "vitals", "dose at top level"])
def test_a_stored_record_cannot_move_to_another_patient(reject, path, body):
    errors = reject.put(path, body, 409, "patient_id")
    assert "another patient" in errors["patient_id"][0]


# --------------------------------------------------------------------------------------------
# Lists: query parameters
# --------------------------------------------------------------------------------------------

LIST_PATHS = ["/patients", "/observations", "/sessions/se-1/vitals"]
NAIVE_CURSOR = base64.urlsafe_b64encode(json.dumps(["2026-01-01T00:00:00", "pt-1"]).encode()).decode().rstrip("=")
NUL_CURSOR = base64.urlsafe_b64encode(json.dumps(["2026-01-01T00:00:00+00:00", "a\x00"]).encode()).decode()
FAR_CURSOR = base64.urlsafe_b64encode(json.dumps(["0001-01-01T00:00:00+05:00", "a"]).encode()).decode()


@pytest.mark.parametrize("path", LIST_PATHS)
@pytest.mark.parametrize("query,field", [
    ("page=2", "page"),
    ("offset=10", "offset"),
    ("limit=0", "limit"),
    ("limit=-1", "limit"),
    ("limit=ten", "limit"),
    ("limit=1.5", "limit"),
    ("limit=", "limit"),
    ("since=yesterday", "since"),
    ("since=2026-01-01T00:00:00", "since"),
    ("since=2026-13-01T00:00:00Z", "since"),
    ("since=0001-01-01T00:00:00%2B05:00", "since"),
    ("cursor=!!!", "cursor"),
    ("cursor=bm9wZQ", "cursor"),  # "nope"
    (f"cursor={NAIVE_CURSOR}", "cursor"),
    (f"cursor={NUL_CURSOR}", "cursor"),
    (f"cursor={FAR_CURSOR}", "cursor"),
    ("cursor=", "cursor"),
    ("patient_id=", "patient_id"),
    ("patient_id=a%00b", "patient_id"),
    ("status=a%00b", "status"),
], ids=lambda v: v if "=" in str(v) and len(str(v)) < 40 else None)
def test_a_bad_list_query_is_422_at_the_parameter(clinic, path, query, field):
    response = clinic.get(f"{path}?{query}")
    assert response.status_code == 422, response.get_json()
    assert field in response.get_json()["errors"]


def test_patient_id_is_not_a_filter_of_practitioners(clinic):
    response = clinic.get("/practitioners?patient_id=pt-1")
    assert response.status_code == 422
    assert "patient_id" in response.get_json()["errors"]


@pytest.mark.parametrize("path", ["/sessions/ghost/vitals", "/sessions/ghost/administrations",
                                  "/sessions/a%00b/vitals"])
def test_listing_under_an_unknown_session_is_404(clinic, path):
    assert clinic.get(path).status_code == 404


@pytest.mark.parametrize("path", ["/patients/a%00b", "/patients/" + "x" * 65, "/sessions/a%00b/vitals/vs-1"])
def test_reading_an_id_that_cannot_exist_is_404(clinic, path):
    assert clinic.get(path).status_code == 404


# --------------------------------------------------------------------------------------------
# Database-level rules, on SQLite and PostgreSQL
# --------------------------------------------------------------------------------------------


@pytest.mark.postgres
class TestStoredState:
    """Unique values taken by another record are 409 at the field; a rejected write writes nothing."""

    def test_an_mrn_of_another_patient_is_409(self, reject):
        errors = reject.put(*new("patients", mrn=PATIENT["mrn"]), 409, "mrn")
        assert "pt-1" not in errors["mrn"][0]  # names no other patient (security review, finding 1)

    def test_an_ehr_identifier_of_another_patient_is_409_at_the_identifier(self, reject):
        taken = PATIENT["identifiers"][0]
        idents = [{"system": "urn:oid:1.2.3.4", "value": "X1"}, dict(taken)]
        errors = reject.put(*new("patients", identifiers=idents), 409, "identifiers.1")
        assert "pt-1" not in errors["identifiers.1"][0]

    def test_a_patient_keeps_its_own_identifiers_and_mrn_on_replace(self, clinic):
        assert accepted(clinic.put("/patients/pt-1", make(PATIENT, phone="+1 555 0100")), 200)

    def test_an_npi_of_another_practitioner_is_409(self, reject):
        errors = reject.put(*new("practitioners", npi=npi_with_check_digit("198765432")), 409, "npi")
        assert "dr-ortiz" not in errors["npi"][0]

    def test_a_session_number_taken_in_the_course_is_409(self, reject, clinic):
        errors = reject.put(*new("sessions", number=1), 409, "number")
        assert "se-1" not in errors["number"][0]
        # the same number in another course, or no course, is fine
        accepted(clinic.put("/sessions/se-3", make(SESSION, id="se-3", course_id=None, number=1)))

    def test_post_of_an_existing_id_with_other_content_is_409(self, reject):
        reject.post("/observations", make(OBSERVATION, score=15, items=[2] * 7 + [1, 0]), 409, "id")

    def test_another_patients_course_is_409_and_writes_no_performers(self, reject, db):
        reject.put(*new("sessions", course_id="co-2", number=8), 409, "course_id")
        assert db.query(models.SessionPerformer).filter_by(session_id="se-new").count() == 0

    def test_a_rejected_patient_replace_keeps_the_stored_version_and_identifiers(self, reject, clinic, db):
        stored = clinic.get("/patients/pt-2").get_json()
        bad = make(PATIENT_2, mrn=PATIENT["mrn"], identifiers=[{"system": EHR_MRN_SYSTEM, "value": "E555"}])
        reject.put("/patients/pt-2", bad, 409, "mrn")
        assert clinic.get("/patients/pt-2").get_json() == stored
        idents = db.scalars(select(models.PatientIdentifier.value).where(
            models.PatientIdentifier.patient_id == "pt-2")).all()
        assert idents == ["E100300"]

    def test_a_rejected_write_of_each_kind_leaves_every_table_as_it_was(self, reject):
        reject.put("/patients/pt-new", {"mrn": "M"}, 422, "name")
        reject.put(*new("sessions", **{"performers.0.practitioner_id": "ghost"}), 422,
                   "performers.0.practitioner_id")
        reject.put(*new("courses", referral_id="rf-2"), 409, "referral_id")
        reject.put("/sessions/ghost/vitals/vs-new", VITALS, 404, "_request")
        reject.raw("put", "/patients/pt-new", b"{", 400, "_request")

    @pytest.mark.parametrize("collection,field,value", [
        ("patients", "mrn", "MRN\x00-1"),
        ("patients", "identifiers.0.value", "E\x001"),
        ("patients", "identifiers.0.system", "urn:oid:1.2\x00"),
        ("patients", "mrn", "MRN-\ud800"),
    ])
    def test_strings_a_database_cannot_store_are_422_on_every_backend(self, reject, collection, field, value):
        path, body = new(collection, **{field: value})
        reject.raw("put", path, json.dumps(body), 422, field)

    def test_ids_with_nul_in_the_url_are_not_found_or_invalid(self, reject, clinic):
        assert clinic.get("/patients/a%00b").status_code == 404
        assert clinic.get("/sessions?patient_id=a%00b").status_code == 422
        assert clinic.get("/sessions?status=a%00b").status_code == 422
        reject.put("/sessions/a%00b/vitals/vs-1", VITALS, 404, "_request")
        reject.put("/patients/a%00b", new("patients")[1], 422, "id")

    def test_an_import_line_that_breaks_a_rule_writes_nothing_of_that_line(self, clinic, db):
        before = snapshot(db)
        lines = [json.dumps({"type": "patients", "record": make(PATIENT_2, id="pt-9", mrn="MRN-0009")}),
                 json.dumps({"type": "sessions", "record": make(SESSION, id="se-9", number=1)}),
                 json.dumps({"type": "vitals", "record": make(VITALS, id="vs-9", session_id="se-1",
                                                              diastolic_mmhg=None)})]
        report = accepted(clinic.import_ndjson("\n".join(lines)), 200)
        assert report["accepted"] == 0
        assert {(e["line"], e["status"]) for e in report["errors"]} == {(1, 409), (2, 409), (3, 422)}
        assert "record.identifiers.0" in report["errors"][0]["errors"]
        assert "record.number" in report["errors"][1]["errors"]
        assert "record.diastolic_mmhg" in report["errors"][2]["errors"]
        assert snapshot(db) == before


# --------------------------------------------------------------------------------------------
# Clinical checks: warnings[] on the write, never a rejection
# --------------------------------------------------------------------------------------------


def dose(api: Api, session_id: str = "se-1", aid: str = "ad-check", **changes: Any):
    body = alter(make(ADMINISTRATION, id=None), changes)
    return api.put(f"/sessions/{session_id}/administrations/{aid}", body)


def fresh(db: Session, model: type, record_id: str) -> Any:
    """The row as committed now (not as this test's session last saw it)."""
    db.rollback()
    db.expire_all()
    return db.get(model, record_id)


@pytest.mark.parametrize("dose_mg,per_kg,expected", [
    (35.0, 0.5, []),
    (52.5, 0.75, []),
    (56.0, 0.8, ["dose-review"]),
    (66.5, 0.95, ["dose-review"]),
    (70.0, 1.0, ["dose-out-of-range"]),
    (105.0, 1.5, ["dose-out-of-range"]),
])
@pytest.mark.parametrize("route", ["iv", "im"])
def test_an_iv_or_im_ketamine_dose_is_checked_against_the_psychiatric_range(clinic, db, dose_mg, per_kg, expected,
                                                                           route):
    response = dose(clinic, dose_mg=dose_mg, dose_mg_per_kg=per_kg, route=route)
    assert accepted(response)["status"] == "completed"  # stored whatever the warning
    assert codes(response) == expected
    stored = fresh(db, models.Administration, "ad-check")
    assert [w["code"] for w in stored.warnings] == expected


def test_the_mg_per_kg_comes_from_the_patients_weight_when_the_dose_has_none(clinic):
    response = dose(clinic, dose_mg=56.0, dose_mg_per_kg=DROP, weight_kg=DROP)  # pt-1 weighs 70 kg
    assert codes(response) == ["dose-review"]


def test_a_dose_with_no_weight_anywhere_is_unchecked(clinic):
    response = dose(clinic, "se-2", dose_mg=56.0, dose_mg_per_kg=DROP, weight_kg=DROP)  # pt-2 has no weight
    accepted(response)
    assert codes(response) == ["dose-unchecked"]
    assert response.get_json()["warnings"][0]["field"] == "weight_kg"


@pytest.mark.parametrize("course,referral_diagnoses", [
    ({"indication": "G89.4"}, ["F33.2"]),  # the course's indication counts
    ({"indication": None}, ["G89.4"]),  # else the referral's first diagnosis
])
def test_a_pain_indication_is_not_held_to_the_psychiatric_range(clinic, course, referral_diagnoses):
    clinic.put("/referrals/rf-pain", make(REFERRAL, id="rf-pain", diagnoses=referral_diagnoses))
    accepted(clinic.put("/courses/co-pain", make(COURSE, id="co-pain", referral_id="rf-pain", **course)))
    accepted(clinic.put("/sessions/se-pain", make(SESSION, id="se-pain", course_id="co-pain")))
    response = dose(clinic, "se-pain", dose_mg=70.0, dose_mg_per_kg=1.0)
    assert accepted(response) and codes(response) == []
    assert codes(dose(clinic, "se-1", "ad-psych", dose_mg=70.0, dose_mg_per_kg=1.0)) == ["dose-out-of-range"]


def test_an_intranasal_ketamine_dose_has_no_mg_per_kg_range(clinic):
    assert codes(dose(clinic, route="intranasal", dose_mg=105.0, dose_mg_per_kg=1.5)) == []


def test_an_unusual_esketamine_dose_is_a_warning(clinic):
    response = dose(clinic, **{**ESKETAMINE, "dose_mg": 28, "device_count": 1})
    assert accepted(response) and "esketamine-dose-unusual" in codes(response)


@pytest.mark.parametrize("status", ["not-done", "entered-in-error"])
def test_a_dose_not_given_is_not_checked(clinic, status):
    assert codes(dose(clinic, status=status, dose_mg=105.0, dose_mg_per_kg=1.5)) == []


def vitals(api: Api, session_id: str = "se-1", vid: str = "vs-check", **fields: Any):
    body = {"effective": "2026-01-12T09:30:00-05:00", "timing": "during", **fields}
    return api.put(f"/sessions/{session_id}/vitals/{vid}", body)


@pytest.mark.parametrize("measurements,expected", [
    ({"systolic_mmhg": 181, "diastolic_mmhg": 95}, ["bp-hold"]),
    ({"systolic_mmhg": 170, "diastolic_mmhg": 101}, ["bp-hold"]),
    ({"systolic_mmhg": 180, "diastolic_mmhg": 100}, []),
    ({"heart_rate_bpm": 111}, ["heart-rate-high"]),
    ({"heart_rate_bpm": 110}, []),
    ({"spo2_pct": 91}, ["spo2-low"]),
    ({"spo2_pct": 92}, []),
    ({"systolic_mmhg": 200, "diastolic_mmhg": 110, "heart_rate_bpm": 130, "spo2_pct": 88},
     ["bp-hold", "heart-rate-high", "spo2-low"]),
])
def test_vitals_past_the_hold_thresholds_are_warnings(clinic, db, measurements, expected):
    response = vitals(clinic, **measurements)
    accepted(response)
    assert codes(response) == expected
    assert [w["code"] for w in fresh(db, models.Vitals, "vs-check").warnings] == expected


@pytest.mark.parametrize("fields,expected", [
    ({"timing": "pre-dose", "systolic_mmhg": 141, "diastolic_mmhg": 80}, ["bp-review"]),
    ({"timing": "pre-dose", "systolic_mmhg": 130, "diastolic_mmhg": 91}, ["bp-review"]),
    ({"timing": "pre-dose", "systolic_mmhg": 140, "diastolic_mmhg": 90}, []),
    ({"timing": "during", "systolic_mmhg": 150, "diastolic_mmhg": 95}, []),  # only before dosing
    ({"timing": "pre-dose", "systolic_mmhg": 190, "diastolic_mmhg": 95}, ["bp-hold"]),  # hold, not review
    # no timing: before the session's first dose (ad-1 starts 09:10) counts as pre-dose
    ({"timing": None, "effective": "2026-01-12T09:05:00-05:00", "systolic_mmhg": 150, "diastolic_mmhg": 85},
     ["bp-review"]),
    ({"timing": None, "effective": "2026-01-12T09:20:00-05:00", "systolic_mmhg": 150, "diastolic_mmhg": 85}, []),
])
def test_a_pre_dose_bp_over_140_90_is_a_review_warning(clinic, fields, expected):
    body = {k: v for k, v in {"effective": "2026-01-12T09:05:00-05:00", **fields}.items() if v is not None}
    response = clinic.put("/sessions/se-1/vitals/vs-check", body)
    accepted(response)
    assert codes(response) == expected


def test_entered_in_error_vitals_are_not_checked(clinic):
    assert codes(vitals(clinic, systolic_mmhg=200, diastolic_mmhg=120, status="entered-in-error")) == []


def score(api: Api, **changes: Any):
    return api.put("/observations/ob-check", alter(make(OBSERVATION, id=None), changes))


@pytest.mark.parametrize("changes,signal", [
    ({"items": [2, 2, 2, 2, 2, 2, 2, 1, 1]}, True),  # PHQ-9 item 9 above 0
    ({"items": [2, 2, 2, 2, 2, 2, 2, 2, 0]}, False),
    ({"instrument": "cssrs", "score": 1, "items": [1, 0, 0, 0, 0, 0]}, True),
    ({"instrument": "cssrs", "score": 2, "items": DROP}, True),
    ({"instrument": "cssrs", "score": 0, "items": [0] * 6}, False),
    ({"instrument": "gad7", "score": 21, "items": [3] * 7}, False),
    ({"items": [2, 2, 2, 2, 2, 2, 2, 1, 1], "status": "entered-in-error"}, False),
])
def test_phq9_item_9_or_a_positive_cssrs_is_a_safety_signal(clinic, db, changes, signal):
    response = score(clinic, **changes)
    accepted(response)
    assert ("safety-signal" in codes(response)) is signal
    assert fresh(db, models.Observation, "ob-check").safety_signal is signal


def test_the_safety_signal_follows_the_latest_version_of_the_score(clinic, db):
    score(clinic, items=[2, 2, 2, 2, 2, 2, 2, 1, 1])
    corrected = score(clinic, items=[2, 2, 2, 2, 2, 2, 2, 2, 0], status="amended")
    assert accepted(corrected, 200) and codes(corrected) == []
    assert fresh(db, models.Observation, "ob-check").safety_signal is False


@pytest.mark.parametrize("changes,expected", [
    ({"status": "stopped-early"}, ["stop-reason-missing"]),
    ({"status": "stopped-early", "stop_reason": "emergence reaction"}, []),
    ({"status": "cancelled"}, []),
])
def test_a_session_stopped_early_should_say_why(clinic, changes, expected):
    response = clinic.put("/sessions/se-1", make(SESSION, **changes))
    accepted(response, 200)
    assert codes(response) == expected


# Spravato (esketamine) REMS monitoring: BP before and ~40 min after the dose, pulse oximetry, >= 2 h
REMS_SESSION = make(SESSION, id=None, course_id=None, number=None, start="2026-03-02T09:00:00-05:00",
                    end="2026-03-02T11:30:00-05:00", performers=None)
REMS_DOSE = {"drug": "esketamine", "route": "intranasal", "dose_mg": 56, "device_count": 2,
             "product": "spravato-28mg-device", "start": "2026-03-02T09:10:00-05:00", "status": "completed"}
REMS_PRE = {"effective": "2026-03-02T09:05:00-05:00", "timing": "pre-dose", "systolic_mmhg": 128,
            "diastolic_mmhg": 80, "spo2_pct": 98}
REMS_POST = {"effective": "2026-03-02T09:50:00-05:00", "timing": "post-dose", "systolic_mmhg": 134,
             "diastolic_mmhg": 84, "spo2_pct": 97}


def rems_session(api: Api, session: dict, pre: dict, post: dict):
    """Write an esketamine session, its dose and two sets of vitals (``None`` values left out);
    the last write's response."""

    def clean(body: dict) -> dict:
        return {k: v for k, v in body.items() if v is not None}

    accepted(api.put("/sessions/se-rems", clean(session)))
    accepted(api.put("/sessions/se-rems/administrations/ad-rems", REMS_DOSE))
    accepted(api.put("/sessions/se-rems/vitals/vs-pre", clean(pre)))
    last = api.put("/sessions/se-rems/vitals/vs-post", clean(post))
    accepted(last)
    return last


def rems_warnings(api: Api) -> list[dict]:
    return [w for w in api.get("/sessions/se-rems").get_json()["warnings"]
            if w["code"] == "rems-monitoring-incomplete"]


def test_complete_rems_monitoring_gives_no_warning(clinic):
    last = rems_session(clinic, REMS_SESSION, REMS_PRE, REMS_POST)
    assert "rems-monitoring-incomplete" not in codes(last)
    assert rems_warnings(clinic) == []


@pytest.mark.parametrize("session,pre,post,missing", [
    (REMS_SESSION, {**REMS_PRE, "systolic_mmhg": None, "diastolic_mmhg": None}, REMS_POST,
     "blood pressure before the dose"),
    (REMS_SESSION, REMS_PRE, {**REMS_POST, "effective": "2026-03-02T10:40:00-05:00"},
     "blood pressure about 40 minutes after the dose"),
    (REMS_SESSION, REMS_PRE, {**REMS_POST, "systolic_mmhg": None, "diastolic_mmhg": None, "heart_rate_bpm": 80},
     "blood pressure about 40 minutes after the dose"),
    (REMS_SESSION, {**REMS_PRE, "spo2_pct": None, "heart_rate_bpm": 70}, {**REMS_POST, "spo2_pct": None},
     "pulse oximetry"),
    ({**REMS_SESSION, "end": "2026-03-02T10:30:00-05:00"}, REMS_PRE, REMS_POST,
     "monitoring of at least 120 minutes (recorded 80)"),
    ({**REMS_SESSION, "end": None}, REMS_PRE, REMS_POST, "the end of monitoring"),
], ids=["no pre-dose BP", "no BP at 40 min", "no post-dose BP", "no pulse oximetry", "under 120 min", "no end"])
def test_incomplete_rems_monitoring_is_a_warning_naming_what_is_missing(clinic, session, pre, post, missing):
    last = rems_session(clinic, session, pre, post)
    assert last.status_code == 201  # never blocks the write
    answered = [w for w in last.get_json()["warnings"] if w["code"] == "rems-monitoring-incomplete"]
    assert len(answered) == 1 and missing in answered[0]["message"]
    stored = rems_warnings(clinic)
    assert len(stored) == 1 and missing in stored[0]["message"]


def test_rems_monitoring_is_not_checked_before_the_session_is_finished(clinic):
    last = rems_session(clinic, {**REMS_SESSION, "status": "in-progress", "end": None}, REMS_PRE,
                        {**REMS_POST, "spo2_pct": None})
    assert "rems-monitoring-incomplete" not in codes(last)


def test_completing_the_monitoring_clears_the_rems_warning(clinic):
    rems_session(clinic, REMS_SESSION, REMS_PRE, {**REMS_POST, "effective": "2026-03-02T10:40:00-05:00"})
    assert rems_warnings(clinic)
    response = clinic.put("/sessions/se-rems/vitals/vs-40", {**REMS_POST, "effective": "2026-03-02T09:52:00-05:00"})
    assert accepted(response) and "rems-monitoring-incomplete" not in codes(response)
    assert rems_warnings(clinic) == []


def test_warnings_never_block_a_write(clinic, db):
    """Every check firing at once: each record is still stored, and the import accepts every line."""
    responses = [
        dose(clinic, "se-2", "ad-unweighed", dose_mg=56.0, dose_mg_per_kg=DROP, weight_kg=DROP),
        dose(clinic, "se-1", "ad-high", dose_mg=105.0, dose_mg_per_kg=1.5),
        vitals(clinic, systolic_mmhg=220, diastolic_mmhg=130, heart_rate_bpm=140, spo2_pct=85),
        score(clinic, instrument="cssrs", score=6, items=[1] * 6),
        clinic.put("/sessions/se-1", make(SESSION, status="stopped-early")),
    ]
    assert [r.status_code for r in responses] == [201, 201, 201, 201, 200]
    assert all(r.get_json()["warnings"] for r in responses)
    assert fresh(db, models.Vitals, "vs-check") is not None
    assert fresh(db, models.InfusionSession, "se-1").status == "stopped-early"
    lines = [json.dumps({"type": "vitals", "record": {"id": "vs-imp", "session_id": "se-1",
                                                      "effective": "2026-01-12T09:40:00-05:00", "spo2_pct": 80}}),
             json.dumps({"type": "observations", "record": make(OBSERVATION, id="ob-imp", items=[3] * 9, score=27)})]
    report = accepted(clinic.import_ndjson("\n".join(lines)), 200)
    assert report["accepted"] == 2 and report["rejected"] == 0
    assert [w["code"] for line in report["lines"] for w in line["warnings"]] == ["spo2-low", "safety-signal"]


def test_an_adverse_event_onset_before_the_session_start_is_422_and_writes_nothing(reject):
    """Mapping revision 2: ``onset`` dates the AdverseEvent, so it may not precede the visit."""
    path, body = new("sessions")
    body["adverse_events"] = [{"text": "Nausea", "severity": "mild", "onset": "2000-01-01T09:00:00-05:00"}]
    reject.put(path, body, 422, "adverse_events.0.onset")


def test_an_adverse_event_recorded_before_its_onset_is_422_and_writes_nothing(reject):
    """``recorded`` (AdverseEvent.recordedDate) cannot precede the event it records."""
    path, body = new("sessions")
    body["adverse_events"] = [{"text": "Nausea", "severity": "mild", "onset": body["start"],
                               "recorded": "2000-01-01T09:00:00-05:00"}]
    reject.put(path, body, 422, "adverse_events.0.recorded")


@pytest.mark.parametrize(("changes", "field"), [
    ({"psychotherapy_minutes": 45}, "psychotherapy_minutes"),  # psychotherapy not said
    ({"psychotherapy": False, "psychotherapy_minutes": 45}, "psychotherapy_minutes"),
    ({"psychotherapy": True, "psychotherapy_minutes": 0}, "psychotherapy_minutes"),
    ({"psychotherapy": True, "psychotherapy_minutes": 601}, "psychotherapy_minutes"),
    ({"psychotherapy": True, "psychotherapy_minutes": 45.5}, "psychotherapy_minutes"),
    ({"psychotherapy": True, "psychotherapy_minutes": "45"}, "psychotherapy_minutes"),
    # longer than the session (start to end): 09:00 to 10:30 is 90 minutes
    ({"psychotherapy": True, "psychotherapy_minutes": 91, "start": "2026-01-12T09:00:00-05:00",
      "end": "2026-01-12T10:30:00-05:00"}, "psychotherapy_minutes"),
])
def test_psychotherapy_minutes_are_whole_minutes_of_a_session_with_psychotherapy(reject, changes, field):
    """Mapping revision 2: the minutes code the psychotherapy Procedure (CPT 90832/90834/90837)."""
    path, body = new("sessions", **changes)
    reject.put(path, body, 422, field)


def test_psychotherapy_minutes_within_the_session_are_kept(clinic, db):
    path, body = new("sessions", psychotherapy=True, psychotherapy_minutes=90, start="2026-01-12T09:00:00-05:00",
                     end="2026-01-12T10:30:00-05:00")
    assert accepted(clinic.put(path, body))["psychotherapy_minutes"] == 90
