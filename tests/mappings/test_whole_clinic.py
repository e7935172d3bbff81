"""A whole synthetic clinic, covering every archetype, maps to FHIR that an independent validator
accepts in full — and the service stores exactly what the dry run maps."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from service.mapfile import map_lines
from service.synthetic import clinic_lines
from tests.fhir_checks import terminology_problems, validate_with_models, validate_with_peer

BASE = "https://clinic.example.org/fhir"
PATIENTS = 24  # archetypes cycle every 8 patients; edge cases every 9-13: 24 covers them all


@pytest.fixture(scope="module")
def clinic() -> list[dict]:
    result = map_lines(clinic_lines(PATIENTS), BASE, "Synthetic Ketamine Clinic")
    assert result.errors == []
    return result.resources


def test_the_independent_validator_accepts_every_resource(clinic, tmp_path: Path):
    assert validate_with_peer(clinic, tmp_path) == []


def test_every_resource_parses_with_the_r4b_models(clinic):
    for resource in clinic:
        validate_with_models(resource)


def test_no_code_system_or_display_is_missing_from_the_clinical_reference(clinic):
    problems = {p for r in clinic for p in terminology_problems(r, BASE)}
    assert problems == set()


def test_ids_are_unique_and_every_reference_resolves(clinic):
    keys = [f"{r['resourceType']}/{r['id']}" for r in clinic]
    assert len(keys) == len(set(keys))

    def refs(value):
        if isinstance(value, dict):
            for k, v in value.items():
                if k == "reference" and isinstance(v, str) and not v.startswith("#"):
                    yield v
                else:
                    yield from refs(v)
        elif isinstance(value, list):
            for v in value:
                yield from refs(v)

    dangling = {ref for r in clinic for ref in refs(r)} - set(keys)
    assert dangling == set()


def test_every_archetype_is_covered(clinic):
    types = Counter(r["resourceType"] for r in clinic)
    assert set(types) >= {"Organization", "Practitioner", "PractitionerRole", "Patient", "ServiceRequest",
                          "Condition", "CarePlan", "CareTeam", "Encounter", "Procedure", "AdverseEvent",
                          "MedicationAdministration", "Observation"}
    codes = {c["code"] for r in clinic for key in ("code", "type") for cc in
             ([r[key]] if isinstance(r.get(key), dict) else r.get(key) or []) for c in cc.get("coding", [])}
    assert {"96365", "G2082", "G2083"} <= codes  # IV, esketamine 56 mg and 84 mg sessions
    statuses = {(r["resourceType"], r.get("status")) for r in clinic}
    assert {("Procedure", "stopped"), ("Procedure", "not-done"), ("Encounter", "cancelled"),
            ("MedicationAdministration", "stopped"), ("Observation", "entered-in-error")} <= statuses


def test_mapping_is_deterministic_byte_for_byte(clinic):
    again = map_lines(clinic_lines(PATIENTS), BASE, "Synthetic Ketamine Clinic").resources
    assert json.dumps(again) == json.dumps(clinic)


def test_the_transaction_bundle_of_the_clinic_is_valid_too(clinic, tmp_path: Path):
    from mappings.bundle import transaction_bundle

    bundle = transaction_bundle(clinic)
    assert len(bundle["entry"]) == len(clinic)
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(bundle))
    import subprocess

    from tests.fhir_checks import peer_fhir

    result = subprocess.run([str(peer_fhir() / "validate.sh"), str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:]


def test_every_resource_about_a_patient_is_labelled_and_no_other(clinic):
    conf = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
    unlabelled, shared_labelled, sud = [], [], set()
    for r in clinic:
        security = r.get("meta", {}).get("security", [])
        if r["resourceType"] in ("Organization", "Practitioner", "PractitionerRole", "Medication"):
            shared_labelled += [r["id"]] if security else []
            continue
        if [c["system"] for c in security].count(conf) != 1 or {"PSY"} - {c["code"] for c in security}:
            unlabelled.append(f"{r['resourceType']}/{r['id']}")
        if "SUD" in {c["code"] for c in security}:
            sud.add(r["resourceType"])
    assert unlabelled == [] and shared_labelled == []
    assert {"Condition", "ServiceRequest"} <= sud  # the synthetic clinic's alcohol-dependence referrals


def _by_ref(clinic) -> dict[str, dict]:
    return {f"{r['resourceType']}/{r['id']}": r for r in clinic}


def _at(value: str):
    from datetime import datetime

    return datetime.fromisoformat(value.replace("Z", "+00:00")) if "T" in value else None


def _start(ma: dict) -> str:
    return ma.get("effectiveDateTime") or ma["effectivePeriod"]["start"]


def test_no_adverse_event_happened_before_a_dose_it_names_as_suspect(clinic):
    refs, checked = _by_ref(clinic), 0
    for event in (r for r in clinic if r["resourceType"] == "AdverseEvent"):
        for suspect in event.get("suspectEntity", []):
            dose = _start(refs[suspect["instance"]["reference"]])
            if _at(event["date"]) is None:  # the date alone: not before the dose's day
                assert event["date"] >= dose[:10]
            else:
                assert _at(event["date"]) >= _at(dose), event["id"]
            checked += 1
    assert checked > 0


def test_each_procedure_lies_inside_its_encounter_and_an_infusion_is_its_doses(clinic):
    refs, infusions = _by_ref(clinic), 0
    doses: dict[str, list[dict]] = {}
    for ma in (r for r in clinic if r["resourceType"] == "MedicationAdministration"):
        if ma["status"] in ("completed", "stopped", "in-progress") and "context" in ma:
            doses.setdefault(ma["context"]["reference"], []).append(ma)
    for proc in (r for r in clinic if r["resourceType"] == "Procedure" and "performedPeriod" in r):
        encounter = refs[proc["encounter"]["reference"]]
        period, visit = proc["performedPeriod"], encounter["period"]
        assert _at(period["start"]) >= _at(visit["start"])
        if "end" in period and "end" in visit:
            assert _at(period["end"]) <= _at(visit["end"]), proc["id"]
        given = doses.get(proc["encounter"]["reference"], [])
        if given and "96365" in {c["code"] for c in proc["code"].get("coding", [])}:  # the IV infusion itself
            assert _at(period["start"]) == min(_at(_start(ma)) for ma in given)
            ends = [ma.get("effectivePeriod", {}).get("end") for ma in given]
            if all(ends):
                assert _at(period["end"]) == max(_at(e) for e in ends)
            infusions += 1
    assert infusions > 0


def test_every_item_observation_is_reachable_from_its_panel(clinic):
    members = {m["reference"] for r in clinic if r["resourceType"] == "Observation" for m in r.get("hasMember", [])}
    items = [f"Observation/{r['id']}" for r in clinic if r["resourceType"] == "Observation"
             and r.get("derivedFrom") and not r.get("hasMember")]
    assert items and set(items) <= members


def _refs_at(resource: dict, path: str) -> list[str]:
    """The literal references at a dotted path (a list at any step is walked)."""
    values: list = [resource]
    for step in path.split("."):
        found = [v.get(step) for v in values if isinstance(v, dict) and v.get(step) is not None]
        values = [x for v in found for x in (v if isinstance(v, list) else [v])]
    return [v["reference"] for v in values if isinstance(v, dict) and "reference" in v]


#: the references of mapping revision 2's items 3, 10 and 13 (plus the subject of everything)
LINKS = ("subject", "requester", "careTeam", "reasonReference", "basedOn", "participant.member",
         "participant.individual", "addresses")


def test_every_subject_requester_care_team_reason_based_on_and_participant_is_in_the_output(clinic):
    """Issue 11 invariant: every resource the clinic's resources reference is itself sent."""
    present = {f"{r['resourceType']}/{r['id']}" for r in clinic}
    by_link = {link: [ref for r in clinic for ref in _refs_at(r, link)] for link in LINKS}
    assert all(by_link[link] for link in ("subject", "requester", "careTeam", "reasonReference", "basedOn",
                                          "participant.member"))  # the synthetic clinic exercises each
    missing = {link: sorted(set(refs) - present) for link, refs in by_link.items() if set(refs) - present}
    assert missing == {}


def test_reference_targets_declare_the_us_core_profiles_item_13_asks_for(clinic):
    """Encounter.reasonReference -> US Core Condition; Procedure.basedOn -> US Core CarePlan or
    ServiceRequest; a referral's requester and a CareTeam's members are US Core Practitioners."""
    by_key = {f"{r['resourceType']}/{r['id']}": r for r in clinic}
    core = "http://hl7.org/fhir/us/core/StructureDefinition/"

    def profiles(ref: str) -> set[str]:
        return set(by_key[ref].get("meta", {}).get("profile", []))

    for r in clinic:
        if r["resourceType"] == "Encounter":
            for ref in _refs_at(r, "reasonReference"):
                assert profiles(ref) & {core + "us-core-condition-encounter-diagnosis",
                                        core + "us-core-condition-problems-health-concerns"}, ref
        if r["resourceType"] == "Procedure":
            for ref in _refs_at(r, "basedOn"):
                assert profiles(ref) & {core + "us-core-careplan", core + "us-core-servicerequest"}, ref
        for ref in _refs_at(r, "requester") + _refs_at(r, "participant.member"):
            assert core + "us-core-practitioner" in profiles(ref), ref


def test_the_referrer_is_on_the_referral_and_the_care_team_never_the_general_practitioner(clinic):
    """Issue 11, "not done until": a receiving EHR files the referrer as the referrer, not the PCP."""
    assert not [r["id"] for r in clinic if r["resourceType"] == "Patient" and "generalPractitioner" in r]
    teams = {f"CareTeam/{r['id']}": r for r in clinic if r["resourceType"] == "CareTeam"}
    requesters = {r["id"]: r["requester"]["reference"] for r in clinic if r["resourceType"] == "ServiceRequest"}
    plans = [r for r in clinic if r["resourceType"] == "CarePlan"]
    assert plans and len(teams) == len(plans)
    for plan in plans:
        (team_ref,) = _refs_at(plan, "careTeam")
        referrers = [p["member"]["reference"] for p in teams[team_ref]["participant"]
                     if p["role"][0]["coding"][0]["code"] == "REF"]
        (referral_ref,) = _refs_at(plan, "supportingInfo")
        assert referrers == [requesters[referral_ref.split("/")[1]]]
