"""Each adverse event recorded on a session becomes an R4 AdverseEvent naming the session's doses
as suspects; a session entered in error yields none (R4 AdverseEvent has no status)."""

from __future__ import annotations

import pytest

from mappings import adverse_event
from mappings.datatypes import fhir_id
from tests.mappings.treatment_cases import (
    BASE_URI,
    golden_outputs,
    load_case,
    snomed_codings,
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
    assert first["date"] == record["start"] == "2026-01-12T09:00:00-05:00"
