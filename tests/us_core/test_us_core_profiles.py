"""A resource declares a US Core 6.1 profile exactly where the profile's rules are met (issue 11,
item 13): over the whole synthetic clinic and the golden outputs, every resource whose
``meta.profile`` names a US Core profile has that profile's mandatory elements, its fixed and
pattern values, codes from its required bindings, and meets its invariants; and the
must-support elements we never send are exactly the ones listed (and explained) below.

The rules come from the US Core 6.1.0 StructureDefinitions through ``rules_6_1_0.json``
(see ``build_rules.py`` for their source and how to regenerate them).

Not checked here (the peer validator in tests/mappings/test_whole_clinic.py covers the rest):
reference targets' profiles (``Reference(US Core Patient)``), extensible and preferred
bindings, cardinality maxima other than 0, the base resources' own invariants (dom-*, obs-6 ...),
and extensions on primitive values (``_element``: none of our US Core resources sends one).
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from service.mapfile import map_lines
from service.synthetic import clinic_lines

HERE = Path(__file__).parent
RULES = json.loads((HERE / "rules_6_1_0.json").read_text())
PROFILES: dict[str, dict] = RULES["profiles"]
VALUE_SETS: dict[str, list[str] | None] = RULES["valueSets"]
US_CORE = "http://hl7.org/fhir/us/core/StructureDefinition/"
FIXTURES = HERE.parent / "fixtures"
BASE = "https://clinic.example.org/fhir"
PATIENTS = 24  # as tests/mappings/test_whole_clinic.py: 24 patients cover every archetype


def _short(url: str) -> str:
    return url.rsplit("/", 1)[1]


# -- the resources --------------------------------------------------------------------------------
def _goldens() -> list[tuple[str, dict]]:
    out = []
    for path in sorted(FIXTURES.glob("*/*.expected.json")):
        data = json.loads(path.read_text())
        for resource in data if isinstance(data, list) else [data]:
            if isinstance(resource, dict) and "resourceType" in resource:
                out.append((f"{path.parent.name}/{path.name}", resource))
    return out


@pytest.fixture(scope="module")
def declared() -> dict[str, list[tuple[str, dict]]]:
    """profile URL -> [(where, resource)] for every resource that declares a US Core profile."""
    result = map_lines(clinic_lines(PATIENTS), BASE, "Synthetic Ketamine Clinic")
    assert result.errors == []
    sources = [("clinic", r) for r in result.resources] + _goldens()
    out: dict[str, list[tuple[str, dict]]] = defaultdict(list)
    for where, resource in sources:
        for profile in resource.get("meta", {}).get("profile", []):
            if profile.startswith(US_CORE):
                out[profile].append((f"{where} {resource['resourceType']}/{resource.get('id')}", resource))
    return out


# -- navigating element ids -----------------------------------------------------------------------
def _children(node: Any, name: str) -> list:
    if not isinstance(node, dict):
        return []
    if name.endswith("[x]"):
        stem = name[:-3]
        values = [v for k, v in node.items() if k.startswith(stem) and k[len(stem):][:1].isupper()]
    else:
        values = [node[name]] if name in node else []
    out: list = []
    for v in values:
        out.extend(v if isinstance(v, list) else [v])
    return out


def matches(value: Any, pattern: Any) -> bool:
    """FHIR pattern[x] semantics: every property of the pattern is in the value (lists: each
    pattern item matches some value item)."""
    if isinstance(pattern, dict):
        return isinstance(value, dict) and all(k in value and matches(value[k], v) for k, v in pattern.items())
    if isinstance(pattern, list):
        items = value if isinstance(value, list) else [value]
        return all(any(matches(v, p) for v in items) for p in pattern)
    return value == pattern


def in_value_set(value: Any, codes: list[str]) -> bool:
    """A code (compared by code alone), Coding, Quantity or CodeableConcept from the value set."""
    if isinstance(value, str):
        return value in {c.split("|", 1)[1] for c in codes}
    if not isinstance(value, dict):
        return False
    if "coding" in value:
        return any(in_value_set(c, codes) for c in value["coding"])
    return f"{value.get('system')}|{value.get('code')}" in codes


def _in_slice(item: Any, sliced: str, slice_id: str, profile: dict) -> bool:
    rules = profile["elements"]
    if sliced.endswith((".extension", ".modifierExtension")):  # extension slices: by url
        return isinstance(item, dict) and item.get("url") == rules.get(slice_id, {}).get("profile")
    discriminators = profile["slicing"].get(sliced)
    assert discriminators, f"{slice_id}: no slicing on {sliced}"
    for _kind, path in discriminators:
        target = slice_id if path == "$this" else f"{slice_id}.{path}"
        values = [item]
        if path != "$this":
            for name in path.split("."):
                values = [c for v in values for c in _children(v, name)]
        rule = rules.get(target, {})
        if "pattern" in rule:
            ok = any(matches(v, rule["pattern"]) for v in values)
        elif "fixed" in rule:
            ok = any(v == rule["fixed"] for v in values)
        elif VALUE_SETS.get(rule.get("required", "")):  # a slice defined by its value set
            ok = any(in_value_set(v, VALUE_SETS[rule["required"]]) for v in values)
        else:
            raise AssertionError(f"{slice_id}: cannot tell membership from {path}")
        if not ok:
            return False
    return True


def select(node: Any, node_id: str, rel: str, profile: dict) -> list:
    """The values at element id ``node_id + '.' + rel`` under ``node`` (the element ``node_id``)."""
    nodes, path = [node], node_id
    for segment in rel.split("."):
        name, _, slice_name = segment.partition(":")
        sliced = f"{path}.{name}"
        nodes = [c for n in nodes for c in _children(n, name)]
        if slice_name:
            nodes = [c for c in nodes if _in_slice(c, sliced, f"{sliced}:{slice_name}", profile)]
        path = f"{sliced}:{slice_name}" if slice_name else sliced
    return nodes


def values_at(resource: dict, element_id: str, profile: dict) -> list:
    root, _, rel = element_id.partition(".")
    return select(resource, root, rel, profile) if rel else [resource]


def _parents(resource: dict, element_id: str, profile: dict) -> tuple[list, str]:
    parent_id, _, last = element_id.rpartition(".")
    return values_at(resource, parent_id, profile), last


# -- the checks -----------------------------------------------------------------------------------
def mandatory_problems(resource: dict, profile: dict) -> list[str]:
    out = []
    for element_id, rule in profile["elements"].items():
        if not rule.get("min") and rule.get("max") != "0":
            continue
        parents, last = _parents(resource, element_id, profile)
        parent_id = element_id.rpartition(".")[0]
        for parent in parents:
            n = len(select(parent, parent_id, last, profile))
            if n < rule.get("min", 0):
                out.append(f"{element_id}: {n} < min {rule['min']}")
            if rule.get("max") == "0" and n:
                out.append(f"{element_id}: prohibited (max 0)")
    return out


def pattern_problems(resource: dict, profile: dict) -> list[str]:
    out = []
    for element_id, rule in profile["elements"].items():
        for value in values_at(resource, element_id, profile) if ("fixed" in rule or "pattern" in rule) else []:
            if "fixed" in rule and value != rule["fixed"]:
                out.append(f"{element_id}: {value!r} is not the fixed {rule['fixed']!r}")
            if "pattern" in rule and not matches(value, rule["pattern"]):
                out.append(f"{element_id}: {value!r} does not match the pattern {rule['pattern']!r}")
    return out


def _defines_slice(element_id: str, profile: dict) -> bool:
    """A slice whose discriminator is its own value set: a value outside it is simply not in the
    (open) slice, so its required binding cannot be broken (screening-assessment and
    ServiceRequest category slices)."""
    last = element_id.rsplit(".", 1)[1]
    if ":" not in last:
        return False
    sliced = element_id.rsplit(":", 1)[0]
    return ["pattern", "$this"] in profile["slicing"].get(sliced, [])


def binding_problems(resource: dict, profile: dict) -> list[str]:
    out = []
    for element_id, rule in profile["elements"].items():
        vs = rule.get("required")
        if not vs or _defines_slice(element_id, profile):
            continue
        codes = VALUE_SETS[vs]
        # every required value set of our profiles is enumerable from the definitions at hand
        # (test_every_required_value_set_is_enumerable); were one not, it would be skipped here
        if codes is None:
            continue
        for value in values_at(resource, element_id, profile):
            if not in_value_set(value, codes):
                out.append(f"{element_id}: {value!r} is not in the required {vs}")
    return out


_NPI = re.compile(r"[0-9]{10}")


def _npi_check_digit(npi: str) -> bool:
    """us-core-17 as its expression spells it: Luhn over the 10 digits with the 80840 prefix (+24)."""
    digits = [int(d) for d in npi]
    total = 24
    for i, d in enumerate(digits):
        total += (d * 2 if d < 5 else d * 2 - 9) if i % 2 == 0 else d
    return total % 10 == 0


def _day_precise(resource: dict, minimum: int) -> list[str]:
    value = resource.get("effectiveDateTime")
    return [] if value is None or len(value) >= minimum else [f"effectiveDateTime {value!r}"]


def _value_or_absent(resource: dict) -> list[str]:
    if _children(resource, "component") or _children(resource, "hasMember"):
        return []
    present = _children(resource, "value[x]") or "dataAbsentReason" in resource
    return [] if present else ["neither value[x] nor dataAbsentReason"]


def _components_have_values(resource: dict) -> list[str]:
    return [f"component {i}" for i, c in enumerate(resource.get("component", []))
            if not (_children(c, "value[x]") or "dataAbsentReason" in c)]


def _ucum(resource: dict) -> list[str]:
    q = resource.get("valueQuantity")
    return [] if q is None or q.get("system") in (None, "http://unitsofmeasure.org") else [f"valueQuantity {q!r}"]


def _identifiers(resource: dict, system: str) -> list[str]:
    return [i.get("value", "") for i in resource.get("identifier", []) if i.get("system") == system]


def _names(resource: dict) -> list[str]:
    dar = "http://hl7.org/fhir/StructureDefinition/data-absent-reason"
    return [f"name {n!r}" for n in resource.get("name", [])
            if bool(n.get("family") or n.get("given")) == any(e.get("url") == dar for e in n.get("extension", []))]


def _performed(resource: dict) -> list[str]:
    if resource.get("status") in ("completed", "in-progress") and not _children(resource, "performed[x]"):
        return [f"status {resource['status']} without performed[x]"]
    return []


def _on_behalf_of(resource: dict) -> list[str]:
    # resolve() is Practitioner / Device: our references are relative "Type/id"
    return [f"agent {i}" for i, a in enumerate(resource.get("agent", []))
            if a.get("who", {}).get("reference", "").split("/")[0] in ("Practitioner", "Device")
            and "onBehalfOf" not in a]


def _distinct_answered_link_ids(resource: dict) -> list[str]:
    out = []

    def walk(node: dict, where: str) -> None:
        items = node.get("item", [])
        answered = [i["linkId"] for i in items if any(_children(a, "value[x]") for a in i.get("answer", []))]
        if len(answered) != len(set(answered)):
            out.append(f"{where}: repeated linkId among answered items {answered}")
        for i, item in enumerate(items):
            walk(item, f"{where}.item[{i}]")
            for j, answer in enumerate(item.get("answer", [])):
                walk(answer, f"{where}.item[{i}].answer[{j}]")

    walk(resource, resource["resourceType"])
    return out


NPI_SYSTEM = "http://hl7.org/fhir/sid/us-npi"
#: the invariants of our profiles' chains, each evaluated by hand on the whole resource
CONSTRAINTS = {
    "vs-1": lambda r: _day_precise(r, 8),  # ($this as dateTime).toString().length() >= 8
    "us-core-1": lambda r: _day_precise(r, 10),  # $this is DateTime implies ... length() >= 10
    "vs-2": _value_or_absent,  # no component/hasMember -> value[x] or dataAbsentReason
    "us-core-2": _value_or_absent,  # the same, on screening-assessment observations
    "vs-3": _components_have_values,  # each component: value[x] or dataAbsentReason
    "us-core-3": _ucum,  # a Quantity value's system, if any, is UCUM
    "us-core-6": _names,  # Patient.name: (family or given) xor data-absent-reason
    "us-core-7": _performed,  # completed / in-progress Procedure: performed[x]
    "us-core-16": lambda r: [f"NPI {v!r}" for v in _identifiers(r, NPI_SYSTEM) if not _NPI.fullmatch(v)],
    "us-core-17": lambda r: [f"NPI {v!r} check digit" for v in _identifiers(r, NPI_SYSTEM)
                             if _NPI.fullmatch(v) and not _npi_check_digit(v)],
    "us-core-18": lambda r: [f"CLIA {v!r}" for v in _identifiers(r, "urn:oid:2.16.840.1.113883.4.7")
                             if not re.fullmatch(r"[0-9]{2}D[0-9]{7}", v)],
    "us-core-19": lambda r: [f"NAIC {v!r}" for v in _identifiers(r, "urn:oid:2.16.840.1.113883.6.300")
                             if not re.fullmatch(r"[0-9]{5}", v)],
    "provenance-1": _on_behalf_of,  # agent.who a Practitioner or Device -> onBehalfOf
    "sdcqr-1": lambda r: [] if "subject" in r else ["no subject"],  # a warning in SDC, required by US Core
    "sdcqr-2": _distinct_answered_link_ids,  # answered sibling items have distinct linkIds
}


# -- the tests ------------------------------------------------------------------------------------
def test_every_declared_us_core_profile_has_rules(declared):
    """A profile newly declared needs its rules: add it to build_rules.PROFILES and regenerate."""
    assert set(declared) <= set(PROFILES)
    assert set(PROFILES) <= set(declared), "rules for a profile nothing declares: drop it from PROFILES"


def test_the_npi_check_digit_follows_the_us_core_17_expression():
    assert _npi_check_digit("1234567893")  # CMS' worked example
    assert not _npi_check_digit("1234567890")


def test_every_required_value_set_is_enumerable():
    """So no required binding of our profiles is skipped (a skipped one would be listed here)."""
    assert [vs for vs, codes in VALUE_SETS.items() if codes is None] == []


def test_every_invariant_of_our_profiles_is_checked():
    keys = {c["key"] for p in PROFILES.values() for c in p["constraints"]}
    assert keys == set(CONSTRAINTS)


def _problems(declared, profile_url, check) -> list[str]:
    profile = PROFILES[profile_url]
    assert declared[profile_url], f"nothing declares {profile_url}"
    return [f"{where}: {p}" for where, r in declared[profile_url] for p in check(r, profile)]


@pytest.mark.parametrize("profile_url", sorted(PROFILES), ids=_short)
def test_mandatory_elements_are_present(declared, profile_url):
    assert _problems(declared, profile_url, mandatory_problems)[:20] == []


@pytest.mark.parametrize("profile_url", sorted(PROFILES), ids=_short)
def test_fixed_and_pattern_values_are_met(declared, profile_url):
    assert _problems(declared, profile_url, pattern_problems)[:20] == []


@pytest.mark.parametrize("profile_url", sorted(PROFILES), ids=_short)
def test_required_bindings_use_codes_of_their_value_set(declared, profile_url):
    assert _problems(declared, profile_url, binding_problems)[:20] == []


@pytest.mark.parametrize("profile_url", sorted(PROFILES), ids=_short)
def test_invariants_are_met(declared, profile_url):
    keys = [c["key"] for c in PROFILES[profile_url]["constraints"]]

    def check(resource, _profile):
        return [f"{key}: {p}" for key in keys for p in CONSTRAINTS[key](resource)]

    assert _problems(declared, profile_url, check)[:20] == []


_VITALS_NOT_SENT = {
    # every reading the clinic keeps has its value: no vital sign goes without one
    "Observation.dataAbsentReason",
    # single-value vital signs: US Core Vital Signs' components are for panels (blood pressure)
    "Observation.component",
}
#: must-support elements we never send, per profile, because the clinic does not record them; an
#: entry covers the element's children and slices. A new gap fails, and so does an entry we now send.
MS_NOT_SENT: dict[str, set[str]] = {
    "us-core-blood-pressure": {
        "Observation.dataAbsentReason",  # every reading has its value
        "Observation.component.dataAbsentReason",  # both pressures are always recorded
        "Observation.value[x]",  # a panel: its values are the systolic and diastolic components
    },
    "us-core-body-height": _VITALS_NOT_SENT,
    "us-core-body-temperature": _VITALS_NOT_SENT,
    "us-core-body-weight": _VITALS_NOT_SENT,
    "us-core-heart-rate": _VITALS_NOT_SENT,
    "us-core-respiratory-rate": _VITALS_NOT_SENT,
    # ... and no supplemental oxygen flow rate or concentration: the FlowRate and Concentration
    # slices are components too
    "us-core-pulse-oximetry": _VITALS_NOT_SENT,
    "us-core-condition-encounter-diagnosis": {
        "Condition.onset[x]",  # the clinic does not record onset (mappings/condition.py)
        "Condition.abatement[x]",  # ... nor abatement
        "Condition.encounter",  # the referrer's diagnosis: made at no Encounter of the clinic's
    },
    "us-core-encounter": {
        "Encounter.hospitalization",  # outpatient sessions: no admission, no discharge disposition
        "Encounter.participant.period",  # performers are recorded for the whole session
        "Encounter.reasonCode",  # the reason is the indication Condition (reasonReference)
    },
    "us-core-observation-screening-assessment": {
        # our scales (depression, anxiety, dissociation, suicidality ...) are none of US Core's
        # screening categories (sdoh, functional-, disability-, cognitive-status): only "survey"
        "Observation.category:screening-assessment",
        "Observation.dataAbsentReason",  # a score is recorded with its value, else not at all
    },
    "us-core-organization": {
        "Organization.identifier:NPI",  # the service configuration has no NPI for the clinic
        "Organization.telecom",  # ... nor a telecom
        "Organization.address",  # ... nor an address
    },
    "us-core-patient": {
        "Patient.address",  # the clinic records no patient address
        "Patient.communication.language",  # ... nor a language
        "Patient.telecom.use",  # ... nor whether a number is home, work or mobile (mappings/patient.py)
    },
    "us-core-practitioner": {
        "Practitioner.address",  # staff records have no address
    },
    "us-core-questionnaireresponse": {
        # for a form known by a plain URI only: ours is always a canonical (the clinic Questionnaire)
        "QuestionnaireResponse.questionnaire.extension:url",
    },
    "us-core-servicerequest": {
        "ServiceRequest.category",  # no code of the US Core category value set fits a referral
        "ServiceRequest.occurrence[x]",  # a referral has no planned date (mappings/service_request.py)
    },
}


def _covered(element_id: str, allowed: set[str]) -> bool:
    return any(element_id == a or element_id.startswith((a + ".", a + ":")) for a in allowed)


@pytest.mark.parametrize("profile_url", sorted(PROFILES), ids=_short)
def test_the_must_support_elements_we_do_not_send_are_the_known_ones(declared, profile_url):
    profile = PROFILES[profile_url]
    resources = [r for _, r in declared[profile_url]]
    not_sent = {element_id for element_id, rule in profile["elements"].items() if rule.get("mustSupport")
                and not any(values_at(r, element_id, profile) for r in resources)}
    allowed = MS_NOT_SENT.get(_short(profile_url), set())
    unexplained = {e for e in not_sent if not _covered(e, allowed)}
    assert unexplained == set(), "must-support elements never sent: send them or explain them in MS_NOT_SENT"
    assert allowed - not_sent == set(), "now sent: drop it from MS_NOT_SENT"


def _elements(problems: list[str]) -> set[str]:
    return {p.split(": ", 1)[0] for p in problems}


def _first(declared, name: str) -> dict:
    return json.loads(json.dumps(declared[US_CORE + name][0][1]))


def test_the_checks_catch_broken_resources(declared):
    """The checks are not vacuous: each breakage of a conforming resource is reported."""
    bp_url, careplan_url = US_CORE + "us-core-blood-pressure", US_CORE + "us-core-careplan"
    bp = _first(declared, "us-core-blood-pressure")
    assert not mandatory_problems(bp, PROFILES[bp_url])
    bp["category"] = [c for c in bp["category"] if "vital-signs" not in json.dumps(c)]
    bp["component"] = bp["component"][:1]
    bp.pop("effectiveDateTime", None)
    bp.pop("effectivePeriod", None)
    assert _elements(mandatory_problems(bp, PROFILES[bp_url])) >= {
        "Observation.category:VSCat", "Observation.component", "Observation.effective[x]"}
    bp["status"], bp["code"] = "done", {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]}
    assert binding_problems(bp, PROFILES[bp_url]) and pattern_problems(bp, PROFILES[bp_url])
    bp.pop("component")
    assert CONSTRAINTS["vs-2"](bp)

    plan = _first(declared, "us-core-careplan")
    plan["category"] = [{"coding": [{"system": "http://snomed.info/sct", "code": "736271009"}]}]
    plan["text"]["status"] = "empty"
    assert "CarePlan.category:AssessPlan" in _elements(mandatory_problems(plan, PROFILES[careplan_url]))
    assert "CarePlan.text.status" in _elements(binding_problems(plan, PROFILES[careplan_url]))

    provenance = next(json.loads(json.dumps(r)) for _, r in declared[US_CORE + "us-core-provenance"]
                      if "Practitioner/" in json.dumps(r.get("agent")))
    author = next(a for a in provenance["agent"] if a.get("who", {}).get("reference", "").startswith("Practitioner/"))
    author.pop("onBehalfOf")
    assert CONSTRAINTS["provenance-1"](provenance)

    patient = _first(declared, "us-core-patient")
    patient["name"] = [{"text": "only a text"}]
    patient.pop("gender")
    assert CONSTRAINTS["us-core-6"](patient)
    assert "Patient.gender" in _elements(mandatory_problems(patient, PROFILES[US_CORE + "us-core-patient"]))
