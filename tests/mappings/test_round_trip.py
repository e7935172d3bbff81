"""Clinic -> FHIR -> clinic is the identity on every mapped field, for any valid practitioner,
patient and referral (records drawn at random and checked against the clinic API's schemas).

Mapped fields: everything but a patient's weight and height (Observations, not Patient) and the
bookkeeping ``meta``/``warnings``; ``status`` comes back as the schema's default when absent.
Empty name lists are never drawn: the mapping leaves them out, which the clinic API reads as
the same thing.
"""

from __future__ import annotations

import copy
import string
from datetime import date
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mappings import condition, patient, practitioner, practitioner_role, service_request
from mappings.terminology import ICD10CM_DISPLAY
from service.clinic.schemas import PatientSchema, PractitionerSchema, ReferralSchema
from service.synthetic import npi_with_check_digit
from tests.mappings.people_cases import check, context, peer_problems

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ROLES = ("psychiatrist", "anesthesiologist", "physician", "nurse", "psychotherapist")
#: diagnoses the clinical reference lists (section 6.1), with and without a display in terminology
DIAGNOSES = [*sorted(ICD10CM_DISPLAY), "G90.512", "G90.522", "G90.59"]

# Printable text of any script, with the whitespace a FHIR string may hold (also at either end).
# Other control characters are left out: the clinic schema's Text accepts them, but a FHIR string
# cannot carry them.
_CHARS = st.one_of(st.characters(codec="utf-8", categories=("L", "M", "N", "P", "S", "Zs")),
                   st.sampled_from(" \t\n"))
_ENDS = st.sampled_from(["", "", "", " ", "  ", "\t", "\n", "\r\n"])


def text(max_size: int) -> st.SearchStrategy[str]:
    core = st.text(_CHARS, min_size=1, max_size=max_size)
    return (st.builds(lambda a, s, b: a + s + b, _ENDS, core, _ENDS)
            .filter(lambda s: s.strip() != "" and len(s) <= max_size))


def note_text(max_size: int) -> st.SearchStrategy[str]:
    """Free text, sometimes starting like the notes the ServiceRequest mapping writes itself."""
    prefixes = st.sampled_from([service_request.REASON_PREFIX, service_request.NOTES_PREFIX, "Clinical check x: "])
    return st.one_of(text(max_size), st.builds(str.__add__, prefixes, text(max_size - 25)))


ids = st.from_regex(r"[A-Za-z0-9._-]{1,64}", fullmatch=True)
dates = st.dates(min_value=date(1900, 1, 1), max_value=date(2025, 12, 31)).map(date.isoformat)
phones = st.from_regex(r"\+?[0-9 ()./-]{3,32}", fullmatch=True)
emails = st.builds(lambda user, host: f"{user}@{host}.example.org",
                   st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=20),
                   st.text(string.ascii_lowercase, min_size=1, max_size=20))
systems = st.one_of(st.builds("urn:oid:2.16.840.1.113883.3.{}".format, st.integers(1, 10**6)),
                    st.builds("https://ehr{}.example.org/ids".format, st.integers(1, 99)))


@st.composite
def human_names(draw: st.DrawFn) -> dict[str, Any]:
    name: dict[str, Any] = {"family": draw(text(100))}
    for key, size, count in (("given", 100, 5), ("prefix", 20, 3), ("suffix", 20, 3)):
        values = draw(st.one_of(st.none(), st.lists(text(size), min_size=1, max_size=count)))
        if values:
            name[key] = values
    return name


def optional(draw: st.DrawFn, record: dict[str, Any], key: str, strategy: st.SearchStrategy[Any]) -> None:
    value = draw(st.one_of(st.none(), strategy))
    if value is not None:
        record[key] = value


@st.composite
def practitioners(draw: st.DrawFn) -> dict[str, Any]:
    record: dict[str, Any] = {"id": draw(ids), "name": draw(human_names()), "role": draw(st.sampled_from(ROLES))}
    optional(draw, record, "npi", st.from_regex(r"[0-9]{9}", fullmatch=True).map(npi_with_check_digit))
    optional(draw, record, "organization", st.one_of(st.just("Synthetic Ketamine Clinic"), text(200)))
    optional(draw, record, "phone", phones)
    optional(draw, record, "email", emails)
    optional(draw, record, "status", st.sampled_from(("active", "inactive", "entered-in-error")))
    assert PractitionerSchema().validate(record) == {}, record
    return record


@st.composite
def patients(draw: st.DrawFn) -> dict[str, Any]:
    record: dict[str, Any] = {"id": draw(ids), "mrn": draw(text(64)), "name": draw(human_names()),
                              "birth_date": draw(dates), "sex": draw(st.sampled_from(("female", "male", "other",
                                                                                      "unknown")))}
    optional(draw, record, "phone", phones)
    optional(draw, record, "email", emails)
    optional(draw, record, "weight_kg", st.floats(1, 400))
    optional(draw, record, "height_cm", st.floats(30, 250))
    optional(draw, record, "referring_practitioner_id", ids)
    optional(draw, record, "identifiers", st.lists(st.fixed_dictionaries({"system": systems, "value": text(255)}),
                                                   min_size=1, max_size=4,
                                                   unique_by=lambda i: (i["system"], i["value"])))
    optional(draw, record, "status", st.sampled_from(("active", "inactive", "entered-in-error")))
    assert PatientSchema().validate(record) == {}, record
    return record


@st.composite
def referrals(draw: st.DrawFn) -> dict[str, Any]:
    record: dict[str, Any] = {"id": draw(ids), "patient_id": draw(ids), "referrer_id": draw(ids),
                              "referred_on": draw(dates),
                              "diagnoses": draw(st.lists(st.sampled_from(DIAGNOSES), min_size=1, max_size=12,
                                                         unique=True))}
    optional(draw, record, "reason", note_text(1000))
    optional(draw, record, "notes", note_text(10000))
    optional(draw, record, "status", st.sampled_from(service_request.STATUSES))
    assert ReferralSchema().validate(record) == {}, record
    return record


def mapped(record: dict[str, Any], unmapped: tuple[str, ...] = ()) -> dict[str, Any]:
    out = {k: v for k, v in record.items() if k not in unmapped}
    out.setdefault("status", "active")
    return out


def practitioner_round_trip(record: dict[str, Any], ctx) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    person, role = practitioner.to_fhir(record, ctx), practitioner_role.to_fhir(record, ctx)
    from_role = practitioner_role.from_fhir(role, ctx)
    back = practitioner.from_fhir(person, ctx, role=from_role["role"])
    if "organization" in from_role:
        back["organization"] = from_role["organization"]
    assert from_role["status"] == back["status"]
    return back, [person, role]


@SETTINGS
@given(practitioners())
def test_practitioner_and_role_map_back_to_the_same_record(record: dict[str, Any]):
    back, _ = practitioner_round_trip(record, context())
    assert back == mapped(record)
    assert PractitionerSchema().validate(back) == {}


@SETTINGS
@given(patients())
def test_patient_maps_back_to_the_same_record(record: dict[str, Any]):
    ctx = context()
    back = patient.from_fhir(patient.to_fhir(record, ctx), ctx)
    # the referrer is not the general practitioner (mapping revision 2): the ServiceRequest carries it
    assert back == mapped(record, ("weight_kg", "height_cm", "referring_practitioner_id"))
    assert PatientSchema().validate(back) == {}


@SETTINGS
@given(referrals())
def test_referral_maps_back_to_the_same_record(record: dict[str, Any]):
    ctx = context()
    back = service_request.from_fhir(service_request.to_fhir(record, ctx), ctx)
    assert back == mapped(record)
    assert ReferralSchema().validate(back) == {}


@SETTINGS
@given(referrals())
def test_referral_maps_back_through_the_context_when_references_carry_no_identifier(record: dict[str, Any]):
    related = [("patients", {"id": record["patient_id"]}), ("practitioners", {"id": record["referrer_id"]})]
    sr = copy.deepcopy(service_request.to_fhir(record, context()))
    for key in ("subject", "requester"):
        sr[key].pop("identifier")
    assert service_request.from_fhir(sr, context(related)) == mapped(record)


@SETTINGS
@given(referrals())
def test_referral_without_requester_maps_back_with_the_patients_referrer(record: dict[str, Any]):
    """The requester first, Patient.generalPractitioner (stored as the patient's referrer) only as
    the fallback (mapping revision 2, item 3)."""
    sr = service_request.to_fhir(record, context())
    assert service_request.from_fhir(sr, context([("patients", {"id": record["patient_id"],
                                                                "referring_practitioner_id": "someone-else"})])
                                     )["referrer_id"] == record["referrer_id"]
    del sr["requester"]
    patient_record = {"id": record["patient_id"], "referring_practitioner_id": record["referrer_id"]}
    assert service_request.from_fhir(sr, context([("patients", patient_record)])) == mapped(record)


def test_random_records_map_to_resources_that_pass_every_fhir_check(tmp_path: Path):
    produced: list[dict[str, Any]] = []
    ctx = context()

    @settings(max_examples=40, deadline=None, database=None)
    @given(practitioners(), patients(), referrals())
    def collect(pract: dict[str, Any], pat: dict[str, Any], referral: dict[str, Any]) -> None:
        produced.extend([*practitioner_round_trip(pract, ctx)[1], patient.to_fhir(pat, ctx),
                         service_request.to_fhir(referral, ctx), *condition.to_fhir(referral, ctx)])

    collect()
    for resource in produced:
        check(resource)
    assert peer_problems(produced, tmp_path) == []
