"""/import and ``ketamine-fhir import`` bound what one line costs: a line over
KETAMINE_FHIR_MAX_IMPORT_LINE_BYTES is rejected unread, the report lists at most
KETAMINE_FHIR_MAX_IMPORT_ERRORS rejected lines (counting all), and each listed error is small."""

from __future__ import annotations

import io
import json
from pathlib import Path

from click.testing import CliRunner

from service.cli import main
from service.clinic.importer import DEFAULT_MAX_ERRORS, import_lines, read_lines
from service.config import Settings
from service.models import Patient
from tests.factories import NURSE, PATIENT, PSYCHIATRIST, make

MIB = 1024 * 1024


def _line(kind: str, record: dict) -> str:
    return json.dumps({"type": kind, "record": record})


def _huge_patient(size: int) -> str:
    # valid JSON with a field the contract rejects: were it parsed, it would be a 422 echoing it
    return _line("patients", make(PATIENT, id="pt-huge", unknown_field="x" * size))


def test_a_line_over_the_cap_is_rejected_unread_and_the_lines_after_it_still_import(api, db):
    body = "\n".join([_line("practitioners", PSYCHIATRIST), _huge_patient(2 * MIB), _line("patients", PATIENT)])
    response = api.import_ndjson(body)
    assert response.status_code == 200
    report = response.get_json()
    assert report["accepted"] == 2 and report["rejected"] == 1
    assert report["errors"] == [{"line": 2, "status": 413, "errors": {
        "_line": [f"Longer than {MIB} bytes; not read. Send one record a line."]}}]
    assert len(response.get_data()) < 2000
    assert [p.id for p in db.query(Patient)] == ["pt-1"]


def test_the_report_lists_at_most_the_cap_of_errors_and_counts_every_rejected_line(api):
    body = "\n".join(["{not json"] * 1500 + [_line("practitioners", NURSE)])
    report = api.import_ndjson(body).get_json()
    assert report["rejected"] == 1500 and report["accepted"] == 1
    assert len(report["errors"]) == DEFAULT_MAX_ERRORS == 1000
    assert report["errors"][-1]["line"] == 1000
    assert report["errors_truncated"] is True


def test_a_report_under_the_cap_says_it_is_complete(api):
    report = api.import_ndjson("{not json").get_json()
    assert report["rejected"] == len(report["errors"]) == 1 and report["errors_truncated"] is False


def test_a_listed_error_stays_small_whatever_the_line_held(api):
    # ~900 kB of unknown fields, each name 900 characters: under the line cap, so it is parsed
    record = make(PATIENT, **{f"{i:04d}" + "k" * 896: 1 for i in range(1000)})
    response = api.import_ndjson(_line("patients", record))
    errors = response.get_json()["errors"][0]["errors"]
    assert len(response.get_data()) < 10_000
    assert len(errors) == 21 and errors["_line"] == ["980 more fields have errors."]
    assert all(len(path) <= 201 for path in errors)


def test_the_cap_is_bytes_of_the_line_without_its_line_break(db):
    exact = _line("practitioners", NURSE)
    cap = len(exact.encode())
    report = import_lines(db, read_lines(io.BytesIO(f"{exact}\r\n{exact} \n".encode()), cap), max_line_bytes=cap)
    assert report["accepted"] == 1 and report["errors"][0]["line"] == 2 and report["errors"][0]["status"] == 413
    # lines given as text are measured in UTF-8 bytes too
    report = import_lines(db, [_line("practitioners", make(NURSE, organization="é" * 60))], max_line_bytes=100)
    assert report["errors"][0]["status"] == 413


def test_read_lines_keeps_no_more_of_a_long_line_than_it_needs():
    stream = io.BytesIO(b"a" * (3 * MIB) + b"\n{}\n" + b"b" * 50)
    assert [len(line) for line in read_lines(stream, 100)] == [102, 3, 50]


def test_the_settings_default_to_the_single_write_limit_and_1000_errors():
    settings = Settings.from_env({"KETAMINE_FHIR_MAX_BODY_BYTES": "2048"})
    assert settings.max_import_line_bytes == 2048 and settings.max_import_errors == 1000
    settings = Settings.from_env({"KETAMINE_FHIR_MAX_IMPORT_LINE_BYTES": "512", "KETAMINE_FHIR_MAX_IMPORT_ERRORS": "3"})
    assert settings.max_import_line_bytes == 512 and settings.max_import_errors == 3
    assert Settings.from_env({}).max_import_line_bytes == MIB


def test_the_command_line_import_applies_the_same_caps(tmp_path: Path):
    source = tmp_path / "clinic.ndjson"
    source.write_text("\n".join([_line("practitioners", PSYCHIATRIST), _huge_patient(2 * MIB), "{", "{", "{",
                                 _line("patients", PATIENT)]) + "\n")
    env = {"KETAMINE_FHIR_DATA": str(tmp_path / "data"), "DATABASE_URL": "", "KETAMINE_FHIR_MAX_IMPORT_ERRORS": "2"}
    result = CliRunner().invoke(main, ["import", str(source)], env=env, catch_exceptions=False)
    assert result.exit_code == 1
    report = json.loads(result.output)
    assert report["accepted"] == 2 and report["rejected"] == 4 and report["errors_truncated"] is True
    assert [(e["line"], e["status"]) for e in report["errors"]] == [(2, 413), (3, 400)]
    assert len(result.output) < 3000
