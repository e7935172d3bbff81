"""No patient data in the logs (issue 10, finding 9: a 500 logged the SQL parameters of 20 MRNs and
names).

The whole synthetic clinic goes through /api/v1/import, is read and searched over /api/v1 and /fhir,
and every error path we know is taken (bad JSON quoting a name, 422s echoing values, 409 MRN taken,
404s with MRNs in the path, forced 500s whose exception messages carry an MRN and a name, a real
IntegrityError, an /import with bad lines) while every log record at DEBUG (and the SQL log at
INFO) is written through the service's handler. Then no line may name a patient.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from gunicorn.config import Config
from gunicorn.http.errors import InvalidRequestLine
from gunicorn.workers.base import Worker
from sqlalchemy import text

from service import create_app, logs
from service.clinic import views as clinic_views
from service.config import Settings
from service.db import get_session
from service.synthetic import clinic_records

pytestmark = pytest.mark.postgres

N_PATIENTS = 12
MRN_SYSTEM = "https://clinic.example.org/fhir/mrn"


def _patients() -> list[dict]:
    return [record for kind, record in clinic_records(N_PATIENTS) if kind == "patients"]


def _phi_tokens(patients: list[dict]) -> set[str]:
    """What would identify a patient, as tokens that cannot occur in a log line by chance: MRNs and
    the EHR's identifiers (``MRN100003``, ``E900003``), ISO birth dates (log times are 2026, the
    synthetic births 1950-2004), "Given Family" and family names of five letters or more. Given
    names and short family names (``Kai``, ``Oak``, ``Elm``) are common words and would match by
    chance; the synthetic clinic draws them from the same short lists, so they are not scanned alone."""
    tokens: set[str] = set()
    for p in patients:
        family, given = p["name"]["family"], p["name"]["given"][0]
        tokens |= {p["mrn"], p["birth_date"], f"{given} {family}", p["phone"],
                   *(i["value"] for i in p.get("identifiers", []))}
        if len(family) >= 5:
            tokens.add(family)
    return tokens


@pytest.fixture
def log_text() -> Iterator[io.StringIO]:
    """Every record from the root logger at DEBUG, and SQLAlchemy's SQL log at INFO (statements and
    their parameters, were they not hidden), written by the service's own handler."""
    stream = io.StringIO()
    handler = logs.make_handler(stream)
    handler.setLevel(logging.DEBUG)
    root, sql = logging.getLogger(), logging.getLogger("sqlalchemy.engine")
    levels = root.level, sql.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    sql.setLevel(logging.INFO)
    yield stream
    root.removeHandler(handler)
    root.setLevel(levels[0])
    sql.setLevel(levels[1])


@pytest.fixture
def app(settings: Settings, log_text):
    # not propagated: a 500 is logged and answered, as in production, instead of raised into the test
    app = create_app(settings, TESTING=True, PROPAGATE_EXCEPTIONS=False)
    yield app
    app.extensions["db_engine"].dispose()


def _ndjson(client, auth, body: str):
    return client.post("/api/v1/import", data=body.encode(), headers=auth, content_type="application/x-ndjson")


def _fhir_patient_url(client, auth, pid: str) -> str:
    return "/fhir/" + client.get(f"/api/v1/patients/{pid}", headers=auth).get_json()["fhir"]["Patient"]


def _import_read_and_search(client, auth, patients: list[dict]) -> None:
    from service.synthetic import clinic_lines

    report = _ndjson(client, auth, "\n".join(clinic_lines(N_PATIENTS))).get_json()
    assert report["rejected"] == 0 and report["accepted"] > 40 * N_PATIENTS, report["errors"][:3]
    first = patients[0]
    family, given = first["name"]["family"], first["name"]["given"][0]
    for path in ("/api/v1/patients?limit=5", f"/api/v1/patients/{first['id']}",
                 f"/api/v1/sessions?patient_id={first['id']}", f"/api/v1/observations?patient_id={first['id']}"):
        assert client.get(path, headers=auth).status_code == 200, path
    fhir_url = _fhir_patient_url(client, auth, first["id"])
    for path in (fhir_url, f"{fhir_url}/_history", f"/fhir/Patient?family={family}&given={given}",
                 f"/fhir/Patient?name={given}%20{family}", f"/fhir/Patient?birthdate={first['birth_date']}",
                 f"/fhir/Patient?identifier={first['identifiers'][0]['system']}|{first['identifiers'][0]['value']}",
                 f"/fhir/Patient?identifier={first['mrn']}", f"/fhir/Observation?subject={fhir_url[6:]}"):
        assert client.get(path, headers=auth).status_code == 200, path
    response = client.post("/fhir/Patient/_search", data={"family": family, "birthdate": first["birth_date"]},
                           headers=auth)
    assert response.status_code == 200


def _client_errors(client, auth, patients: list[dict]) -> None:
    first, second = patients[0], patients[1]
    name = f"{first['name']['given'][0]} {first['name']['family']}"
    record = {k: v for k, v in second.items()}
    put = f"/api/v1/patients/{second['id']}"
    expected = [
        # 400: not JSON, quoting a name and an MRN
        (client.put(put, data=f'{{"name": "{name}", "mrn": "{first["mrn"]}"', headers=auth,
                    content_type="application/json"), 400),
        # 422: values the contract rejects, echoed in field errors; an unknown field named after a patient
        (client.put(put, json={**record, "birth_date": f"{first['birth_date']}x", name: first["mrn"]},
                    headers=auth), 422),
        (client.put(put, json={**record, "mrn": 100000}, headers=auth), 422),
        # 409: the MRN belongs to another patient
        (client.put(put, json={**record, "mrn": first["mrn"]}, headers=auth), 409),
        # 404s with patient data in the path
        (client.get(f"/api/v1/patients/{first['mrn']}", headers=auth), 404),
        (client.get(f"/api/v1/{first['name']['family']}-{first['birth_date']}", headers=auth), 404),
        (client.get(f"/fhir/Patient/{first['mrn']}", headers=auth), 404),
        (client.get(f"/fhir/Patient/{first['mrn']}/_history/1", headers=auth), 404),
        # FHIR: an unknown search parameter and a bad date quoting patient data, a bad Patient, a bad Bundle
        (client.get(f"/fhir/Patient?{first['mrn']}={name}", headers=auth), None),  # lenient: ignored
        (client.get(f"/fhir/Patient?birthdate=x{first['birth_date']}", headers=auth), 400),
        (client.post("/fhir/Patient", data=json.dumps({"resourceType": "Patient", "gender": name,
                                                       "birthDate": first["birth_date"]}),
                     headers=auth, content_type="application/fhir+json"), "4xx"),
        (client.post("/fhir", data=f'{{"resourceType": "Bundle", "type": "transaction", "entry": [{{"x": "{name}"',
                     headers=auth, content_type="application/fhir+json"), 400),
    ]
    for response, status in expected:
        if status == "4xx":
            assert 400 <= response.status_code < 500, response.get_json()
        elif status:
            assert response.status_code == status, response.get_json()


def _bad_import(client, auth, patients: list[dict]) -> None:
    first, second = patients[0], patients[1]
    name = f"{first['name']['given'][0]} {first['name']['family']}"
    lines = [
        f'{{"type": "patients", "record": {{"name": "{name}"',  # not JSON
        json.dumps({"type": "patients", "record": {**second, "birth_date": f"{first['birth_date']}!"}}),  # 422
        json.dumps({"type": "patients", "record": {**second, "mrn": first["mrn"]}}),  # 409
        json.dumps({"type": f"{first['mrn']}", "record": {}}),  # unknown type
        json.dumps({"type": "patients", "record": {**second, "x": name * 200_000}}),  # over the line cap: 413
    ]
    report = _ndjson(client, auth, "\n".join(lines)).get_json()
    assert [e["status"] for e in report["errors"]] == [400, 422, 409, 422, 413]


def _forced_500s(client, auth, patients: list[dict], monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = patients[0], patients[1]
    name = f"{first['name']['given'][0]} {first['name']['family']}"

    def leaky(*_args, **_kwargs):
        raise RuntimeError(f"lookup failed for {name} ({first['mrn']}, born {first['birth_date']})")

    def duplicate_mrn(*_args, **_kwargs):
        # a real IntegrityError: PostgreSQL's message says DETAIL: Key (mrn)=(MRN100000) already exists
        get_session().execute(text("UPDATE patients SET mrn = :mrn WHERE id = :id"),
                              {"mrn": first["mrn"], "id": second["id"]})

    for raiser in (leaky, duplicate_mrn):
        monkeypatch.setattr(clinic_views, "get_record", raiser)
        response = client.get(f"/api/v1/patients/{first['id']}", headers=auth)
        assert response.status_code == 500
        assert first["mrn"] not in response.get_data(as_text=True)


def test_no_patient_data_reaches_the_logs(client, auth, log_text, monkeypatch):
    patients = _patients()
    _import_read_and_search(client, auth, patients)
    _client_errors(client, auth, patients)
    _bad_import(client, auth, patients)
    _forced_500s(client, auth, patients, monkeypatch)

    output = log_text.getvalue()
    lines = output.splitlines()
    leaks = [(token, line) for line in lines for token in _phi_tokens(patients) if token in line]
    assert not leaks, leaks[:5]
    # not vacuous: the access log, the SQL log and both 500s with their tracebacks were captured
    assert len(lines) > 1000
    assert re.search(r"GET /fhir/<[^>]*resource_type> 200", output) and "POST /api/v1/import 200" in output
    assert "[SQL parameters hidden due to hide_parameters=True]" in output
    assert re.search(r"ERROR service Exception on /api/v1/<[^>]*collection>/<record_id> \[GET\]", output)
    assert f"/api/v1/patients/{patients[0]['id']}" not in output  # paths carry ids: the route pattern is logged
    assert "Traceback (most recent call last):" in output
    assert f'File "{Path(__file__)}", line' in output and "in leaky" in output
    assert "RuntimeError (message withheld" in output
    assert "sqlalchemy.exc.IntegrityError (message withheld" in output


def _gunicorn_log() -> tuple[logs.GunicornLogger, io.StringIO, Config]:
    cfg = Config()
    cfg.set("logger_class", "service.logs.GunicornLogger")
    cfg.set("errorlog", "-")
    log = cfg.logger_class(cfg)
    stream = io.StringIO()
    for handler in log.error_log.handlers:
        handler.setStream(stream)
    return log, stream, cfg


def test_gunicorn_error_lines_withhold_the_request_text():
    """gunicorn's own worker code: an unparsable request line is quoted in its warning, and a failed
    request's URI in its error, unless our logger class rewrites them."""
    log, stream, cfg = _gunicorn_log()
    worker = Worker(0, os.getpid(), [], None, 30, cfg, log)
    ours, theirs = socket.socketpair()
    try:
        line = "GET /fhir/Patient?name=Kai%20Cedar&birthdate=1957-08-25 HTTP/1.1 junk"
        worker.handle_error(None, ours, ("10.1.2.3", 4567), InvalidRequestLine(line))
        request = SimpleNamespace(method="GET", uri="/fhir/Patient?identifier=MRN100000")
        try:
            raise ValueError("Key (mrn)=(MRN100000) already exists")
        except ValueError as exc:
            with pytest.raises(AttributeError):  # our stand-in request is not enough for its access log
                worker.handle_error(request, ours, ("10.1.2.3", 4567), exc)
    finally:
        ours.close()
        theirs.close()
        worker.tmp.close()
    output = stream.getvalue()
    assert "Invalid request from ip=10.1.2.3 (the request text is withheld)" in output
    assert "Error handling request GET (the URI is withheld)" in output
    assert "ValueError (message withheld" in output and 'in test_gunicorn_error_lines_withhold' in output
    assert "Cedar" not in output and "MRN100000" not in output and "1957" not in output


def test_serve_uses_the_redacting_gunicorn_logger(monkeypatch):
    from service import server

    seen = {}
    monkeypatch.setattr(server._Gunicorn, "run", lambda self: seen.update(self.options))
    server.run(Settings.from_env({"KETAMINE_FHIR_DATA": "/nonexistent"}), "127.0.0.1", 0, 1, 1)
    assert seen["logger_class"] == "service.logs.GunicornLogger"


def test_chained_exceptions_print_every_frame_and_class_and_no_message():
    try:
        try:
            {}["MRN100000"]
        except KeyError as exc:
            raise ValueError("Avery Cedar") from exc
    except ValueError as exc:
        text_ = logs.redacted_traceback(exc)
    assert text_.count("Traceback (most recent call last):") == 2
    assert text_.index("KeyError (message withheld") < text_.index("The above exception was the direct cause")
    assert text_.rstrip().endswith("ValueError (message withheld: it may carry patient data)")
    assert "MRN100000" not in text_ and "Cedar" not in text_


def test_exception_arguments_and_celery_failure_lines_print_the_class_only():
    stream = io.StringIO()
    logger = logging.getLogger("celery.app.trace")
    handler = logs.make_handler(stream)
    logger.addHandler(handler)
    try:
        exc = LookupError("no patient Avery Cedar")
        logging.getLogger("tests.privacy").addHandler(handler)
        logging.getLogger("tests.privacy").warning("pull failed: %s", exc)
        try:
            raise exc
        except LookupError:
            logger.error("Task %(name)s[%(id)s] %(description)s: %(exc)s",
                         {"name": "ketamine_fhir.pull", "id": "1", "description": "raised unexpected",
                          "exc": repr(exc), "traceback": "Traceback ... Avery Cedar"}, exc_info=True)
    finally:
        logger.removeHandler(handler)
        logging.getLogger("tests.privacy").removeHandler(handler)
    output = stream.getvalue()
    assert "pull failed: <LookupError>" in output
    assert "Task ketamine_fhir.pull[1] raised unexpected: <LookupError>" in output
    assert "Cedar" not in output


def test_command_line_tracebacks_are_redacted(capsys, monkeypatch):
    monkeypatch.setattr("sys.excepthook", __import__("sys").excepthook)  # restored after the test
    logs.protect_command_line()
    import sys

    try:
        raise RuntimeError("MRN100000 Avery Cedar")
    except RuntimeError as exc:
        sys.excepthook(type(exc), exc, exc.__traceback__)
    err = capsys.readouterr().err
    assert "RuntimeError (message withheld" in err and "MRN100000" not in err


def test_request_urls_stay_out_of_the_log_even_at_debug():
    # urllib3 logs each request's URL at DEBUG; the sync engine's conditional updates carry MRNs
    # (PUT Patient?identifier=<system>|<MRN>)
    root, urllib3 = logging.getLogger(), logging.getLogger("urllib3")
    levels = root.level, urllib3.level
    root.setLevel(logging.DEBUG)
    urllib3.setLevel(logging.NOTSET)
    try:
        logs.configure("DEBUG")
        assert not urllib3.isEnabledFor(logging.DEBUG) and urllib3.isEnabledFor(logging.INFO)
    finally:
        root.setLevel(levels[0])
        urllib3.setLevel(levels[1])
