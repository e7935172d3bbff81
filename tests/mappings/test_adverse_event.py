"""Each adverse event recorded on a session becomes an R4 AdverseEvent naming the session's doses
as suspects; a session entered in error yields none (R4 AdverseEvent has no status)."""

from __future__ import annotations

from datetime import datetime

import pytest

from mappings import adverse_event
from mappings.datatypes import fhir_id
from mappings.session_codes import GIVEN_STATUSES
from tests.mappings.treatment_cases import (
    BASE_URI,
    golden_outputs,
    load_case,
    snomed_codings,
    synthetic_clinic,
    synthetic_outputs,
    synthetic_records,
)

FOLDER = "adverseevent"


@pytest.fixture(scope="module")
def golden() -> list[tuple[str, dict, dict]]:
    return list(golden_outputs(FOLDER, adverse_event.to_fhir))


@pytest.fixture(scope="module")
def synthetic() -> list[tuple[dict, dict]]:
    return synthetic_outputs("sessions", adverse_event.to_fhir)


def test_every_synthetic_adverse_event_maps(synthetic):
    expected = sum(len(s.get("adverse_events") or []) for s in synthetic_records("sessions")
                   if s["status"] != "entered-in-error")
    assert len(synthetic) == expected > 0
    assert {r["severity"]["coding"][0]["code"] for _, r in synthetic} == {"mild", "moderate"}


def test_a_session_entered_in_error_yields_no_adverse_event():
    record, ctx, expected = load_case(FOLDER, "entered-in-error")
    assert record["adverse_events"] and expected == []
    assert adverse_event.to_fhir(record, ctx) == []


def test_each_event_has_its_own_id_and_a_single_business_identifier(golden):
    for _, record, resource in golden:
        n = resource["identifier"]["value"].rsplit(":", 1)[1]
        key = f"{record['id']}:{n}"
        assert resource["identifier"] == {"use": "usual", "system": f"{BASE_URI}/adverse-events", "value": key}
        assert resource["id"] == fhir_id(BASE_URI, "AdverseEvent", "adverse-events", key)
    assert len({r["id"] for _, _, r in golden}) == len(golden)


def test_only_doses_actually_given_are_suspects():
    record, ctx, _ = load_case(FOLDER, "cancelled-dose-not-suspect")
    events = adverse_event.to_fhir(record, ctx)
    assert len(events) == 1 and "suspectEntity" not in events[0]  # the dose was not given
    record, ctx, _ = load_case(FOLDER, "stopped-early")
    suspects = adverse_event.to_fhir(record, ctx)[0]["suspectEntity"]
    assert [s["instance"]["reference"].split("/")[0] for s in suspects] == ["MedicationAdministration"]


def test_the_event_keeps_the_clinic_snomed_code_and_its_text():
    record, ctx, _ = load_case(FOLDER, "reference-with-snomed-code")
    first, second = adverse_event.to_fhir(record, ctx)
    assert snomed_codings(first["event"]) == {"422587007"} and first["event"]["text"] == "Nausea"
    assert second["event"] == {"text": "Dissociation, resolved before discharge"}
    # no onset recorded and not a blood-pressure event: the date alone, never the session start
    # (which lies before the dose: a negative time to onset)
    assert first["date"] == "2026-01-12" and record["start"] == "2026-01-12T09:00:00-05:00"


def test_an_event_happened_when_the_clinic_says_and_keeps_its_seriousness_and_outcome():
    record, ctx, _ = load_case(FOLDER, "reference-with-snomed-code")
    events = [{**record["adverse_events"][0], "onset": "2026-01-12T09:35:00-05:00", "serious": False,
               "outcome": "resolved", "recorded": "2026-01-12T09:50:00-05:00"}]
    (out,) = adverse_event.to_fhir({**record, "adverse_events": events}, ctx)
    assert out["date"] == "2026-01-12T09:35:00-05:00"
    assert out["recordedDate"] == "2026-01-12T09:50:00-05:00"  # when the clinic wrote it down
    assert out["seriousness"]["coding"][0]["code"] == "non-serious"
    assert out["outcome"]["coding"] == [{"system": "http://terminology.hl7.org/CodeSystem/adverse-event-outcome",
                                         "code": "resolved", "display": "Resolved"}]


def test_a_hypertensive_event_happened_at_the_vital_sign_that_crossed_the_hold_threshold():
    """The stopped-early golden session: BP 186/104 during the infusion, the event recorded
    without a time. Its date is that reading, after the dose started; coded from its text."""
    record, ctx, _ = load_case(FOLDER, "stopped-early")
    (out,) = adverse_event.to_fhir(record, ctx)
    assert snomed_codings(out["event"]) == {"24184005"} and out["event"]["text"] == record["adverse_events"][0]["text"]
    crossing = [v for v in ctx.children(record["id"], "vitals") if (v.get("systolic_mmhg") or 0) > 180]
    assert crossing and out["date"] == crossing[0]["effective"]
    dose = ctx.children(record["id"], "administrations")[0]
    assert datetime.fromisoformat(out["date"]) >= datetime.fromisoformat(dose["start"])


def test_no_event_lies_before_the_dose_that_is_its_suspect(golden, synthetic):
    """Invariant of mapping revision 2 over every fixture and the synthetic clinic."""
    checked = 0
    for resource in [r for _, _, r in golden] + [r for _, r in synthetic]:
        if "suspectEntity" in resource and len(resource["date"]) > 10:
            checked += 1
            assert "T" in resource["date"]
    records, ctx = synthetic_clinic()
    for collection, record in records:
        if collection != "sessions":
            continue
        given = [a for a in ctx.children(record["id"], "administrations") if a["status"] in GIVEN_STATUSES]
        for out in adverse_event.to_fhir(record, ctx):
            if len(out["date"]) == 10:
                assert out["date"] >= record["start"][:10]
            elif given:
                first = min(datetime.fromisoformat(a["start"]) for a in given)
                assert datetime.fromisoformat(out["date"]) >= first
                checked += 1
    assert checked
