"""/import: NDJSON, each line all-or-nothing in file order; a report of accepted and rejected lines."""

from __future__ import annotations

import json

import pytest

from service.clinic.importer import import_lines
from service.models import InfusionSession, Patient, SessionPerformer
from service.synthetic import clinic_lines
from tests.factories import ADMINISTRATION, NURSE, PATIENT, PSYCHIATRIST, SESSION, VITALS, make

pytestmark = pytest.mark.postgres


def _line(kind: str, record: dict) -> str:
    return json.dumps({"type": kind, "record": record})


def test_good_lines_are_stored_and_bad_lines_reported_with_field_errors(api, db):
    lines = [
        _line("practitioners", PSYCHIATRIST),
        _line("patients", make(PATIENT, birth_date="not-a-date")),  # 2: bad field
        _line("patients", PATIENT),  # 3: good, names line 1
        "{not json",  # 4: not JSON
        _line("widgets", {}),  # 5: unknown type
        _line("patients", make(PATIENT, id="pt-9", mrn="MRN-0001")),  # 6: MRN taken by line 3
        "",  # blank lines are skipped
        json.dumps({"type": "patients", "record": PATIENT, "extra": 1}),  # 8: unknown envelope field
    ]
    report = api.import_ndjson("\n".join(lines)).get_json()
    assert report["accepted"] == 2 and report["rejected"] == 5
    errors = {e["line"]: e for e in report["errors"]}
    assert set(errors) == {2, 4, 5, 6, 8}
    assert "record.birth_date" in errors[2]["errors"]
    assert errors[4]["status"] == 400
    assert "type" in errors[5]["errors"]
    assert errors[6]["status"] == 409 and "record.mrn" in errors[6]["errors"]
    assert "extra" in errors[8]["errors"]
    assert [p.id for p in db.query(Patient)] == ["pt-1"]


def test_a_rejected_line_leaves_nothing_half_written(api, db):
    api.put("/practitioners/dr-ortiz", PSYCHIATRIST)
    api.put("/patients/pt-1", PATIENT)
    bad_session = make(
        SESSION,
        course_id=None,
        number=None,
        performers=[
            {"practitioner_id": "dr-ortiz", "function": "supervising"},
            {"practitioner_id": "ghost", "function": "monitoring"},
        ],
    )
    report = api.import_ndjson(_line("sessions", bad_session)).get_json()
    assert report["errors"][0]["errors"] == {
        "record.performers.1.practitioner_id": ["No practitioner with id 'ghost'."]
    }
    assert db.query(InfusionSession).count() == 0
    assert db.query(SessionPerformer).count() == 0


def test_lines_may_refer_to_records_of_earlier_lines_and_nested_records_carry_session_id(api, db):
    lines = [
        _line("practitioners", PSYCHIATRIST),
        _line("practitioners", NURSE),
        _line("patients", PATIENT),
        _line("sessions", make(SESSION, course_id=None, number=None)),
        _line("administrations", make(ADMINISTRATION, session_id="se-1")),
        _line("vitals", make(VITALS, session_id="se-1")),
        _line("vitals", make(VITALS, id="vs-2")),
    ]  # no session_id: rejected
    report = api.import_ndjson("\n".join(lines)).get_json()
    assert report["accepted"] == 6
    assert report["errors"] == [
        {"line": 7, "status": 422, "errors": {"record.session_id": ["Missing data for required field."]}}
    ]
    assert api.get("/sessions/se-1/administrations/ad-1").status_code == 200


def test_reimporting_the_same_file_changes_nothing(api):
    text = "\n".join(clinic_lines(3))
    first = api.import_ndjson(text).get_json()
    assert first["rejected"] == 0 and first["created"] == first["accepted"]
    second = api.import_ndjson(text).get_json()
    assert second["unchanged"] == first["accepted"] and second["created"] == second["updated"] == 0


def test_the_report_carries_clinical_warnings_per_line(api):
    report = api.import_ndjson("\n".join(clinic_lines(14))).get_json()
    codes = {w["code"] for line in report["lines"] for w in line.get("warnings", [])}
    assert {"bp-hold", "safety-signal"} <= codes


def test_import_requires_ndjson_content_type(api):
    response = api.client.post("/api/v1/import", json={"type": "patients"}, headers=api.headers)
    assert response.status_code == 400
    assert "x-ndjson" in response.get_json()["message"]


def test_import_over_the_size_limit_is_413_and_writes_nothing(tmp_path, sqlite_template):
    import shutil

    from service import create_app
    from service.auth import create_token
    from service.config import Settings

    shutil.copy(sqlite_template, tmp_path / "ketamine-fhir.sqlite3")
    app = create_app(Settings.from_env({"KETAMINE_FHIR_DATA": str(tmp_path), "KETAMINE_FHIR_MAX_IMPORT_BYTES": "1000"}))
    with app.app_context():
        from service.db import get_session

        token = create_token(get_session(), "t", ["*"])
    response = app.test_client().post(
        "/api/v1/import",
        data="\n".join(clinic_lines(1)).encode(),
        content_type="application/x-ndjson",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 413
    assert response.get_json()["errors"]


def test_import_lines_is_usable_without_http(db):
    report = import_lines(db, [_line("practitioners", NURSE).encode()])
    db.commit()
    assert report["created"] == 1
