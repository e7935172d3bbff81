"""Upgrading to mapping revision 2 keeps every destination whole: one that took the default types
gets the new ones, one that chose types gets those its resources now reference (a dose's
Medication, a score's QuestionnaireResponse, a plan's CareTeam), so nothing it holds dangles."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from sqlalchemy import create_engine, text

from service.config import Settings
from service.db import migrate
from service.sync.destinations import DEFAULT_TYPES, SYNCABLE_TYPES

MIGRATION = Path(__file__).parents[2] / "service/migrations/versions/0008_destinations_gain_revision_2_types.py"
OLD_DEFAULT = ["Organization", "Practitioner", "PractitionerRole", "Patient", "Condition", "ServiceRequest",
               "CarePlan", "Encounter", "Procedure", "MedicationAdministration", "Observation", "AdverseEvent"]


def _module():
    spec = importlib.util.spec_from_file_location("m0008", MIGRATION)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_migration_knows_the_current_type_order():
    assert _module().ORDER == SYNCABLE_TYPES


def test_the_old_defaults_become_the_new_defaults_and_chosen_types_gain_what_they_reference():
    upgraded = _module().upgraded
    assert tuple(upgraded(OLD_DEFAULT)) == DEFAULT_TYPES
    assert upgraded([*OLD_DEFAULT, "Provenance"]) == [*DEFAULT_TYPES, "Provenance"]
    assert upgraded(["Patient", "MedicationAdministration"]) == ["Patient", "Medication", "MedicationAdministration"]
    assert upgraded(["Patient", "Observation"]) == ["Patient", "QuestionnaireResponse", "Observation"]
    assert upgraded(["Patient"]) == ["Patient"]


def test_stored_destinations_are_upgraded_in_place(tmp_path):
    settings = Settings.from_env({"KETAMINE_FHIR_DATA": str(tmp_path)})
    migrate(settings, "0007")
    engine = create_engine(settings.database_url)
    with engine.begin() as conn:
        for name, types in (("all", OLD_DEFAULT), ("doses", ["Patient", "MedicationAdministration"])):
            conn.execute(text(
                "INSERT INTO sync_destinations (id, name, base_url, auth_kind, auth_config, resource_types, patients,"
                " mode, max_bundle_entries, connect_timeout, read_timeout, retry, enabled, pull, pull_watermarks,"
                " created_at, updated_at, circuit_state, circuit_failures) VALUES (:id, :id, 'https://ehr.test/fhir',"
                " 'none', '{}', :types, '{\"kind\": \"all\"}', 'transaction', 8, 5, 30, '{}', 1, 0, '{}',"
                " '2026-12-01 00:00:00', '2026-12-01 00:00:00', 'closed', 0)"),
                {"id": name, "types": json.dumps(types)})
    migrate(settings)
    with engine.connect() as conn:
        stored = {r.id: json.loads(r.resource_types)
                  for r in conn.execute(text("SELECT id, resource_types FROM sync_destinations"))}
    engine.dispose()
    assert tuple(stored["all"]) == DEFAULT_TYPES
    assert stored["doses"] == ["Patient", "Medication", "MedicationAdministration"]
