"""``ketamine-fhir remap``: after a mapping upgrade or a new labelling policy, every stored record
is mapped again; what changed gets a new version and goes to the destinations, the rest is left
alone, and a second run changes nothing."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from mappings.security_labels import SecurityPolicy
from service import models
from service.db import make_engine, session_factory
from service.fhir_store import remap
from service.synthetic import clinic_lines

pytestmark = pytest.mark.postgres


@pytest.fixture
def clinic(api) -> None:
    assert api.import_ndjson("\n".join(clinic_lines(2))).get_json()["rejected"] == 0


def _session(settings, **changes):
    return session_factory(make_engine(settings.database_url), dataclasses.replace(settings, **changes))()


def _versions(db) -> int:
    return db.scalar(select(func.count()).select_from(models.FhirResourceVersion))


def test_remap_under_the_same_policy_changes_nothing(settings, clinic):
    with _session(settings) as db:
        before = _versions(db)
        counts = remap(db, datetime.now(UTC))
        assert counts["records"] > 20 and counts["changed"] == 0 and counts["retired"] == 0
        assert _versions(db) == before


def test_a_new_policy_relabels_every_patient_resource_once(settings, clinic):
    with _session(settings, security=SecurityPolicy("V", "MH", False)) as db:
        counts = remap(db, datetime.now(UTC))
        patient = db.get(models.FhirResource, ("Patient", db.scalar(
            select(models.FhirResource.id).where(models.FhirResource.resource_type == "Patient").limit(1))))
        assert patient.version_id == 2 and '"code":"V"' in patient.content and '"code":"MH"' in patient.content
        practitioners = db.scalars(select(models.FhirResource).where(
            models.FhirResource.resource_type == "Practitioner")).all()
        assert practitioners and all(p.version_id == 1 for p in practitioners)  # not about a patient
        assert counts["changed"] > 0 and counts["retired"] == 0
        assert remap(db, datetime.now(UTC))["changed"] == 0
