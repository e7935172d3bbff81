"""Security labels as served and searched (mapping revision 2, item 7): stored resources and their
Provenance carry the clinic's labels, ``_security`` finds the substance-use data, and the policy
comes from the environment."""

from __future__ import annotations

import pytest

from mappings.security_labels import SecurityPolicy
from service.config import Settings
from tests.factories import PATIENT, PSYCHIATRIST, REFERRAL, make

pytestmark = pytest.mark.postgres

ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"


@pytest.fixture
def referrals(api) -> None:
    assert api.put("/practitioners/dr-ortiz", make(PSYCHIATRIST, id=None)).status_code in (200, 201)
    assert api.put("/patients/pt-1", make(PATIENT, id=None)).status_code in (200, 201)
    assert api.put("/patients/pt-2", make(PATIENT, id=None, mrn="MRN-0002", identifiers=[])).status_code in (200, 201)
    assert api.put("/referrals/rf-1", make(REFERRAL, id=None)).status_code in (200, 201)
    sud = make(REFERRAL, id=None, patient_id="pt-2", diagnoses=["F33.2", "F10.20"])
    assert api.put("/referrals/rf-2", sud).status_code in (200, 201)


def _codes(resource: dict) -> set[str]:
    return {c["code"] for c in resource["meta"].get("security", [])}


def test_served_resources_and_their_provenance_carry_the_labels(client, auth, referrals):
    patients = client.get("/fhir/Patient", headers=auth).get_json()
    assert [_codes(e["resource"]) for e in patients["entry"]] == [{"R", "PSY"}, {"R", "PSY"}]
    provenances = [e["resource"] for e in client.get("/fhir/Provenance", headers=auth).get_json()["entry"]]
    labelled = {p["target"][0]["reference"].split("/")[0]: _codes(p) for p in provenances}
    # a patient's record's Provenance is as sensitive as the record; a practitioner's is not
    assert labelled["Practitioner"] == set() and labelled["Patient"] >= {"R", "PSY"}
    practitioners = client.get("/fhir/Practitioner", headers=auth).get_json()["entry"]
    assert all("security" not in e["resource"]["meta"] for e in practitioners)


def test_security_search_finds_only_the_substance_use_data(client, auth, referrals):
    found = client.get(f"/fhir/Condition?_security={ACT}|SUD", headers=auth).get_json()
    assert found["total"] == 1
    [condition] = [e["resource"] for e in found["entry"]]
    assert condition["code"]["coding"][0]["code"] == "F10.20"
    assert _codes(condition) == {"R", "PSY", "SUD", "42CFRPart2"}
    requests = client.get(f"/fhir/ServiceRequest?_security={ACT}|SUD", headers=auth).get_json()
    assert requests["total"] == 1


def test_the_policy_is_read_from_the_environment():
    assert Settings.from_env({}).security == SecurityPolicy("R", "PSY", True)
    chosen = Settings.from_env({"KETAMINE_FHIR_CONFIDENTIALITY": "v", "KETAMINE_FHIR_SENSITIVITY": "bh",
                                "KETAMINE_FHIR_PART2": "false"})
    assert chosen.security == SecurityPolicy("V", "BH", False)
    assert Settings.from_env({"KETAMINE_FHIR_SENSITIVITY": "none"}).security.sensitivity == "none"


@pytest.mark.parametrize("name,value", [("KETAMINE_FHIR_CONFIDENTIALITY", "X"),
                                        ("KETAMINE_FHIR_SENSITIVITY", "ETH"),
                                        ("KETAMINE_FHIR_PART2", "maybe")])
def test_a_wrong_policy_value_stops_the_service_with_its_name(name, value):
    with pytest.raises(ValueError, match=name):
        Settings.from_env({name: value})
