"""The ``ketamine-fhir`` command line, including ``serve`` under gunicorn over real HTTP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner

from service.cli import main
from service.synthetic import clinic_lines
from tests.factories import NURSE
from tests.served import free_port, wait_ready


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"KETAMINE_FHIR_DATA": str(tmp_path / "data"), "DATABASE_URL": ""}


def run(env: dict[str, str], *args: str, input: str | None = None):
    return CliRunner().invoke(main, list(args), env=env, input=input, catch_exceptions=False)


def test_init_db_creates_the_sqlite_database_in_the_data_folder(env):
    result = run(env, "init-db")
    assert result.exit_code == 0, result.output
    assert Path(env["KETAMINE_FHIR_DATA"], "ketamine-fhir.sqlite3").exists()
    assert run(env, "init-db").exit_code == 0  # idempotent


def test_token_create_prints_only_the_token(env):
    result = run(env, "token", "create", "--name", "ehr", "--scope", "clinic:read clinic:write")
    assert result.exit_code == 0
    assert result.output.strip().startswith("kf_") and len(result.output.strip().splitlines()) == 1
    listed = run(env, "token", "list").output
    assert "ehr\tclinic:read clinic:write\tactive" in listed and result.output.strip() not in listed


def test_token_create_refuses_unknown_scopes_and_duplicate_names(env):
    assert run(env, "token", "create", "--name", "a", "--scope", "root").exit_code == 2
    run(env, "token", "create", "--name", "a", "--scope", "*")
    assert run(env, "token", "create", "--name", "a", "--scope", "*").exit_code == 2


def test_token_revoke(env):
    run(env, "token", "create", "--name", "a", "--scope", "*")
    assert run(env, "token", "revoke", "--name", "a").exit_code == 0
    assert "revoked" in run(env, "token", "list").output
    assert run(env, "token", "revoke", "--name", "a").exit_code == 1


def test_import_file_prints_the_report_and_fails_on_rejected_lines(env, tmp_path):
    good = tmp_path / "clinic.ndjson"
    good.write_text("\n".join(clinic_lines(2)) + "\n")
    result = run(env, "import", str(good))
    assert result.exit_code == 0
    report = json.loads(result.output)
    assert report["rejected"] == 0 and report["created"] > 50
    bad = tmp_path / "bad.ndjson"
    bad.write_text(json.dumps({"type": "practitioners", "record": {"id": "x"}}) + "\n")
    result = run(env, "import", str(bad))
    assert result.exit_code == 1
    assert json.loads(result.output)["errors"][0]["errors"]["record.name"]


def test_remap_relabels_stored_resources_under_a_new_policy_and_then_changes_nothing(env, tmp_path):
    source = tmp_path / "clinic.ndjson"
    source.write_text("\n".join(clinic_lines(1)) + "\n")
    assert run(env, "import", str(source)).exit_code == 0
    first = json.loads(run({**env, "KETAMINE_FHIR_SENSITIVITY": "BH"}, "remap").output)
    assert first["records"] > 10 and first["changed"] > 10 and first["retired"] == 0
    assert json.loads(run({**env, "KETAMINE_FHIR_SENSITIVITY": "BH"}, "remap").output)["changed"] == 0


def test_synth_prints_import_ndjson(env):
    lines = run(env, "synth", "--patients", "1").output.splitlines()
    assert {json.loads(line)["type"] for line in lines} >= {"patients", "sessions", "administrations", "vitals"}



def test_serve_runs_gunicorn_and_answers_over_http(tmp_path):
    exe = Path(sys.executable).with_name("ketamine-fhir")
    env = os.environ | {"KETAMINE_FHIR_DATA": str(tmp_path / "data")}
    env.pop("DATABASE_URL", None)
    port = free_port()
    proc = subprocess.Popen([str(exe), "serve", "--port", str(port), "--workers", "1"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        banner = proc.stdout.readline() + proc.stdout.readline() + proc.stdout.readline()
        assert f"http://127.0.0.1:{port}" in banner and "token create" in banner
        base = f"http://127.0.0.1:{port}"
        wait_ready(base)
        token = subprocess.run([str(exe), "token", "create", "--name", "t", "--scope", "*"], env=env,
                               capture_output=True, text=True, check=True).stdout.strip()
        headers = {"Authorization": f"Bearer {token}"}
        assert requests.get(f"{base}/api/v1/patients", timeout=5).status_code == 401
        response = requests.put(f"{base}/api/v1/practitioners/rn-cho", json=NURSE, headers=headers, timeout=5)
        assert response.status_code == 201
        assert "Server" not in response.headers  # no software banner (security review, finding 15)
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert "rn-cho" not in output  # ids and bodies stay out of the logs


def test_map_writes_fhir_ndjson_without_a_database(env, tmp_path):
    source = tmp_path / "clinic.ndjson"
    source.write_text("\n".join(clinic_lines(2)) + "\n")
    result = CliRunner().invoke(main, ["map", str(source)], env=env)
    assert result.exit_code == 0, result.output
    resources = [json.loads(line) for line in result.stdout.splitlines()]
    assert {"Patient", "Encounter", "MedicationAdministration", "Observation"} <= {r["resourceType"] for r in resources}
    assert not Path(env["KETAMINE_FHIR_DATA"]).exists()  # no database was made
    assert "resource(s); 0 bad line(s)" in result.stderr


def test_map_reports_bad_lines_by_number_and_still_maps_the_good_ones(env, tmp_path):
    lines = list(clinic_lines(1))
    bad = json.loads(lines[-1])
    bad["record"]["score"] = 999
    source = tmp_path / "clinic.ndjson"
    source.write_text("\n".join([*lines[:-1], json.dumps(bad), '{"type": "patients"}']) + "\n")
    result = CliRunner().invoke(main, ["map", str(source)], env=env)
    assert result.exit_code == 1
    assert f"line {len(lines)}: record.score:" in result.stderr
    assert f"line {len(lines) + 1}: record:" in result.stderr
    assert any(json.loads(line)["resourceType"] == "Patient" for line in result.stdout.splitlines())


def test_map_leaves_provenance_out_unless_asked_and_then_names_author_and_transmitter(env, tmp_path):
    """Mapping revision 2, item 14: the dry run can show the Provenance the service would record:
    one per record, over its resources, its clinician as author on behalf of the clinic, the
    clinic as transmitter."""
    lines = list(clinic_lines(1))
    source = tmp_path / "clinic.ndjson"
    source.write_text("\n".join(lines) + "\n")
    plain = [json.loads(line) for line in CliRunner().invoke(main, ["map", str(source)], env=env).stdout.splitlines()]
    assert "Provenance" not in {r["resourceType"] for r in plain}
    result = CliRunner().invoke(main, ["map", "--provenance", str(source)], env=env)
    assert result.exit_code == 0, result.output
    out = [json.loads(line) for line in result.stdout.splitlines()]
    provenances = [r for r in out if r["resourceType"] == "Provenance"]
    assert len(provenances) == len(lines)  # one per record (each written once)
    ids = {f"{r['resourceType']}/{r['id']}" for r in out}
    organization = next(r for r in out if r["resourceType"] == "Organization")
    for p in provenances:
        assert {t["reference"] for t in p["target"]} <= ids
        author, transmitter = p["agent"]
        assert author["type"]["coding"][0]["code"] == "author"
        assert transmitter["type"]["coding"][0]["code"] == "transmitter"
        assert transmitter["who"]["reference"] == f"Organization/{organization['id']}"
        if author["who"]["reference"].startswith("Practitioner/"):
            assert author["onBehalfOf"]["reference"] == f"Organization/{organization['id']}"  # US Core provenance-1
            assert author["who"]["reference"] in ids
    dose = next(r for r in out if r["resourceType"] == "MedicationAdministration")
    target = {"reference": f"MedicationAdministration/{dose['id']}"}
    [dose_provenance] = [p for p in provenances if target in p["target"]]
    assert dose_provenance["agent"][0]["who"]["reference"] == dose["performer"][0]["actor"]["reference"]
    assert [p["resourceType"] for p in plain] == [p["resourceType"] for p in out][:len(plain)]  # the rest unchanged


def test_map_bundle_is_an_idempotent_transaction(env, tmp_path):
    source = tmp_path / "clinic.ndjson"
    source.write_text("\n".join(clinic_lines(1)) + "\n")
    result = CliRunner().invoke(main, ["map", "--bundle", str(source)], env=env)
    bundle = json.loads(result.stdout)
    assert bundle["type"] == "transaction"
    entry = next(e for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
    assert entry["request"]["method"] == "PUT"
    assert entry["request"]["url"].startswith("Patient?identifier=https://clinic.example.org/fhir/patients|")
    assert entry["fullUrl"].startswith("urn:uuid:") and "id" not in entry["resource"]
    encounter = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Encounter")
    assert encounter["subject"]["reference"] == entry["fullUrl"]
