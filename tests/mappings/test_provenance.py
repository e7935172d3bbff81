"""Each clinic write gets a Provenance: the resources it produced, when it was recorded, its author
(the clinician the record names, on behalf of the clinic; else the clinic) and the clinic as the
transmitter (US Core Provenance, mapping revision 2 item 14)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mappings import condition, organization, patient, practitioner, practitioner_role, provenance, service_request
from mappings.datatypes import fhir_id, reference
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


AUTHOR = {"coding": [{"system": SYSTEM["provenance-participant-type"], "code": "author", "display": "Author"}],
          "text": "Author"}
#: US Core 6.1's ProvenanceTransmitter slice pattern
TRANSMITTER = {"coding": [{"system": "http://hl7.org/fhir/us/core/CodeSystem/us-core-provenance-participant-type",
                           "code": "transmitter", "display": "Transmitter"}], "text": "Transmitter"}


def test_targets_recorded_and_the_clinic_as_author_and_transmitter_of_a_record_naming_no_clinician():
    """A referral's referrer works for another organization: the clinic, which recorded the
    referral, is the author."""
    ctx = context()
    p = provenance.to_fhir("referrals", REFERRAL, META, ["ServiceRequest/a", {"reference": "Condition/b"}], ctx)
    assert p["target"] == [{"reference": "ServiceRequest/a"}, {"reference": "Condition/b"}]
    assert p["recorded"] == "2026-01-03T08:00:00.250000+00:00"
    assert p["agent"] == [{"type": AUTHOR, "who": organization.clinic_reference(ctx)},
                          {"type": TRANSMITTER, "who": organization.clinic_reference(ctx)}]
    assert p["meta"] == {"profile": [provenance.PROFILE]}


SESSION = {"id": "se-1", "patient_id": "pt-1", "start": "2026-01-12T09:00:00-05:00", "status": "completed",
           "performers": [{"practitioner_id": "dr-ibarra", "function": "supervising"},
                          {"practitioner_id": "rn-cho", "function": "monitoring"},
                          {"practitioner_id": "rn-diaz", "function": "administering"}]}


def _session_ctx(session: dict = SESSION):
    from mappings.context import MappingContext

    return MappingContext(BASE_URI, lookup=lambda c, i: session if (c, i) == ("sessions", session["id"]) else None)


@pytest.mark.parametrize(("collection", "record", "author"), [
    ("administrations", {"id": "ad-1", "session_id": "se-1", "performer_id": "rn-okafor"}, "rn-okafor"),
    ("administrations", {"id": "ad-2", "session_id": "se-1"}, "rn-diaz"),  # the session's administering
    ("vitals", {"id": "vs-1", "session_id": "se-1"}, "rn-cho"),  # the monitoring clinician takes vitals
    ("sessions", SESSION, "rn-diaz"),
    ("observations", {"id": "ob-1", "patient_id": "pt-1", "rater_id": "dr-ibarra"}, "dr-ibarra"),
])
def test_the_clinician_the_record_names_is_the_author_on_behalf_of_the_clinic(collection, record, author):
    """US Core provenance-1: onBehalfOf is present when the author is a Practitioner."""
    ctx = _session_ctx()
    p = provenance.to_fhir(collection, record, META, ["Patient/x"], ctx)
    assert provenance.recorded_by(collection, record, ctx) == author
    assert p["agent"][0] == {"type": AUTHOR, "who": reference(BASE_URI, "Practitioner", "practitioners", author),
                             "onBehalfOf": organization.clinic_reference(ctx)}
    assert p["agent"][1] == {"type": TRANSMITTER, "who": organization.clinic_reference(ctx)}


@pytest.mark.parametrize(("collection", "record"), [
    ("observations", {"id": "ob-2", "patient_id": "pt-1"}),  # self-report: no rater
    ("vitals", {"id": "vs-2", "session_id": "se-unknown"}),
    ("sessions", {**SESSION, "performers": [{"practitioner_id": "th-nolan", "function": "psychotherapist"}]}),
    ("patients", {"id": "pt-1"}),
    ("courses", {"id": "co-1", "patient_id": "pt-1"}),
])
def test_without_a_clinician_of_its_own_the_clinic_is_the_author(collection, record):
    expected = None if collection != "sessions" else "th-nolan"
    ctx = _session_ctx()
    assert provenance.recorded_by(collection, record, ctx) == expected
    if expected is None:
        who = provenance.to_fhir(collection, record, META, ["Patient/x"], ctx)["agent"][0]
        assert who == {"type": AUTHOR, "who": organization.clinic_reference(ctx)}


def test_an_ehr_client_that_wrote_over_fhir_is_the_author_and_the_clinic_still_transmits():
    ctx = context()
    agent = {"system": f"{BASE_URI}/smart-clients", "value": "ehr-1", "display": "Riverside EHR"}
    p = provenance.to_fhir("referrals", REFERRAL, META, ["ServiceRequest/a"], ctx, agent)
    assert p["agent"] == [
        {"type": AUTHOR, "who": {"identifier": {"system": f"{BASE_URI}/smart-clients", "value": "ehr-1"},
                                 "display": "Riverside EHR"}},
        {"type": TRANSMITTER, "who": organization.clinic_reference(ctx)}]


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
