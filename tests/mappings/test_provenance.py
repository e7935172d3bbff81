"""Each clinic write gets a Provenance: the resources it produced, when it was recorded, and the
clinic Organization as the responsible author (US Core Provenance)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mappings import condition, organization, patient, practitioner, practitioner_role, provenance, service_request
from mappings.datatypes import fhir_id
from mappings.terminology import SYSTEM
from tests.factories import REFERRAL
from tests.mappings.people_cases import (
    BASE_URI,
    cases,
    check,
    context,
    load_case,
    peer_problems,
    synthetic_clinic,
)

DIR = "provenance"
META = {"version": 2, "created_at": "2026-01-02T15:00:00+00:00", "updated_at": "2026-01-03T08:00:00.250000+00:00"}
#: the mappers of the collections whose writes these tests record
MAPPERS = {"practitioners": (practitioner.to_fhir, practitioner_role.to_fhir), "patients": (patient.to_fhir,),
           "referrals": (service_request.to_fhir, condition.to_fhir)}


def produce(given: dict, ctx) -> dict:
    return provenance.to_fhir(given["collection"], given["record"], given["meta"], given["targets"], ctx)


def targets_of(collection: str, record: dict, ctx) -> list[dict]:
    out = []
    for mapper in MAPPERS[collection]:
        produced = mapper(record, ctx)
        out += [{"reference": f"{r['resourceType']}/{r['id']}"} for r in (produced if isinstance(produced, list)
                                                                          else [produced])]
    return out


@pytest.mark.parametrize("case", cases(DIR))
def test_golden_case(case: str):
    given, ctx, expected = load_case(DIR, case)
    assert produce(given, ctx) == expected


def test_id_comes_from_collection_record_and_version():
    p = provenance.to_fhir("referrals", REFERRAL, META, ["ServiceRequest/x"], context())
    assert p["id"] == fhir_id(BASE_URI, "Provenance", "provenance", "referrals/rf-1/2")
    assert p["id"] != provenance.to_fhir("referrals", REFERRAL, {**META, "version": 3}, ["ServiceRequest/x"],
                                         context())["id"]


def test_has_no_identifier_because_r4_provenance_has_none():
    assert "identifier" not in provenance.to_fhir("referrals", REFERRAL, META, ["ServiceRequest/x"], context())


def test_targets_recorded_and_the_clinic_as_author():
    ctx = context()
    p = provenance.to_fhir("referrals", REFERRAL, META, ["ServiceRequest/a", {"reference": "Condition/b"}], ctx)
    assert p["target"] == [{"reference": "ServiceRequest/a"}, {"reference": "Condition/b"}]
    assert p["recorded"] == "2026-01-03T08:00:00.250000+00:00"
    assert p["agent"] == [{"type": {"coding": [{"system": SYSTEM["provenance-participant-type"], "code": "author",
                                                "display": "Author"}], "text": "Author"},
                           "who": organization.clinic_reference(ctx)}]
    assert p["meta"] == {"profile": [provenance.PROFILE]}


@pytest.mark.parametrize(("targets", "meta", "message"), [
    ([], META, r"^targets: a Provenance needs at least one target"),
    (["https://ehr.example.org/fhir/Patient/1"], META, r"^targets: .* is not a relative reference"),
    (["Patient/1"], {**META, "updated_at": "2026-01-03T08:00:00"}, r"^meta.updated_at: .* is not an instant"),
    (["Patient/1"], {**META, "updated_at": "2026-01-03"}, r"^meta.updated_at: "),
])
def test_rejects_what_cannot_make_a_valid_provenance(targets, meta, message: str):
    with pytest.raises(ValueError, match=message):
        provenance.to_fhir("referrals", REFERRAL, meta, targets, context())


def test_mapping_is_deterministic():
    args = ("referrals", REFERRAL, META, ["ServiceRequest/a"])
    assert json.dumps(provenance.to_fhir(*args, context())) == json.dumps(provenance.to_fhir(*args, context()))


def synthetic_provenances() -> list[dict]:
    records, ctx = synthetic_clinic()
    return [provenance.to_fhir(c, r, META, targets_of(c, r, ctx), ctx) for c, r in records if c in MAPPERS]


def test_every_synthetic_write_of_people_and_referrals_has_a_provenance_over_its_resources():
    out = synthetic_provenances()
    assert len(out) == len({p["id"] for p in out}) == sum(1 for c, _ in synthetic_clinic()[0] if c in MAPPERS)
    for resource in out:
        check(resource)


def test_every_output_passes_the_fhir_checks(tmp_path: Path):
    outputs = [produce(*load_case(DIR, c)[:2]) for c in cases(DIR)] + synthetic_provenances()
    for resource in outputs:
        check(resource)
    assert peer_problems(outputs, tmp_path) == []
