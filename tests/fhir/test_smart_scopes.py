"""SMART v2 system scopes (scopes-and-launch-context.html): parsing, the interaction mapping, grants."""

from __future__ import annotations

import pytest

from service.fhir.scopes import ScopeError, SystemScope, allows, grant, is_smart_scope, parse_scope


@pytest.mark.parametrize(("text", "resource_type", "letters"), [
    ("system/Observation.rs", "Observation", "rs"),
    ("system/*.rs", "*", "rs"),
    ("system/Patient.cruds", "Patient", "cruds"),
    ("system/Patient.c", "Patient", "c"),
    ("system/Encounter.read", "Encounter", "rs"),    # SMART v1
    ("system/Encounter.write", "Encounter", "cud"),  # SMART v1
    ("system/*.*", "*", "cruds"),                    # SMART v1
])
def test_system_scopes_parse_to_a_type_and_permission_letters(text, resource_type, letters):
    assert parse_scope(text) == SystemScope(resource_type, frozenset(letters))


@pytest.mark.parametrize("text", [
    "*", "clinic:read", "system/Observation", "system/Observation.", "system/Observation.sr",
    "system/Observation.rr", "system/Observation.x", "patient/Observation.rs", "user/*.rs",
    "system/observation.rs", "system/Observation.rs?category=vital-signs", " system/*.rs", "system/*.RS",
])
def test_anything_else_is_not_a_system_scope(text):
    with pytest.raises(ScopeError):
        parse_scope(text)
    assert not is_smart_scope(text)


def test_scopes_print_in_v2_form():
    assert str(parse_scope("system/Patient.read")) == "system/Patient.rs"
    assert str(parse_scope("system/*.*")) == "system/*.cruds"


@pytest.mark.parametrize(("interaction", "letter"), [
    ("read", "r"), ("vread", "r"), ("history", "r"), ("search", "s"),
    ("create", "c"), ("update", "u"), ("delete", "d"),
])
def test_each_interaction_needs_its_letter(interaction, letter):
    assert allows([f"system/Patient.{letter}"], "Patient", interaction)
    others = "".join(x for x in "cruds" if x != letter)
    assert not allows([f"system/Patient.{others}"], "Patient", interaction)


def test_a_type_scope_allows_that_type_only_and_the_wildcard_every_type():
    assert allows(["system/Observation.rs"], "Observation", "search")
    assert not allows(["system/Observation.rs"], "Patient", "search")
    assert allows(["system/*.rs"], "Patient", "read") and allows(["system/*.rs"], "Provenance", "history")
    assert not allows(["system/*.rs"], "Patient", "create")


def test_scopes_add_up():
    scopes = ["system/*.rs", "system/Patient.cu"]
    assert allows(scopes, "Patient", "update") and allows(scopes, "Encounter", "read")
    assert not allows(scopes, "Encounter", "update")


def test_the_operator_scope_allows_everything_and_clinic_scopes_nothing():
    assert allows(["*"], "Patient", "delete")
    assert not allows(["clinic:read", "clinic:write", "admin"], "Patient", "read")
    assert not allows([], "Patient", "read")


def test_an_unknown_interaction_is_a_programming_error():
    with pytest.raises(ValueError, match="patch"):
        allows(["*"], "Patient", "patch")


@pytest.mark.parametrize(("requested", "allowed", "granted"), [
    (["system/Observation.rs"], ["system/*.rs"], ["system/Observation.rs"]),
    (["system/Observation.cruds"], ["system/*.rs"], ["system/Observation.rs"]),
    (["system/*.rs"], ["system/Observation.rs"], []),  # a per-type grant cannot stand in for a wildcard
    (["system/*.rs", "system/Patient.cu"], ["system/*.rs", "system/Patient.cruds"],
     ["system/*.rs", "system/Patient.cu"]),
    (["system/Patient.read"], ["system/Patient.cruds"], ["system/Patient.rs"]),
    (["system/Patient.rs", "system/Patient.rs"], ["system/Patient.r"], ["system/Patient.r"]),
    (["system/Encounter.rs"], ["system/Patient.cruds"], []),
    (["system/Patient.rs"], ["*"], []),  # clients are not operators
])
def test_grant_cuts_each_requested_scope_down_to_the_allowed_permissions(requested, allowed, granted):
    assert grant(requested, allowed) == granted


def test_grant_refuses_unparseable_requests():
    with pytest.raises(ScopeError):
        grant(["launch/patient"], ["system/*.rs"])
