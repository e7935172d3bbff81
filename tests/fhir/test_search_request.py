"""parse_search: every supported feature becomes a typed SearchRequest; bad values are 400s naming
the parameter; unknown parameters are 400 under strict handling and listed in ``ignored`` otherwise."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from mappings.resources import MAPPED_TYPES
from service.fhir.outcomes import FhirError
from service.fhir.search import MAX_COUNT, SEARCH_PARAMS, parse_search
from service.fhir.search.request import (
    DEFAULT_COUNT,
    DateValue,
    Include,
    NumberValue,
    ReferenceValue,
    SortKey,
    StringValue,
    TokenValue,
)


def parse(rtype: str, *params: tuple[str, str], strict: bool = True):
    return parse_search(rtype, list(params), strict)


def only_values(rtype: str, key: str, value: str):
    (crit,) = parse(rtype, (key, value)).criteria
    return crit.values


def test_every_emitted_type_has_id_and_last_updated_with_definitions():
    assert set(SEARCH_PARAMS) == set(MAPPED_TYPES)
    for rtype, params in SEARCH_PARAMS.items():
        assert {"_id", "_lastUpdated"} <= set(params), rtype
        for name, param in params.items():
            assert param.name == name and param.type in ("token", "string", "date", "reference", "quantity")
            assert param.definition.startswith("http://hl7.org/fhir/SearchParameter/")


@pytest.mark.parametrize(("raw", "expected"), [
    ("http://loinc.org|44261-6", TokenValue("http://loinc.org", "44261-6", False)),
    ("44261-6", TokenValue(None, "44261-6", True)),
    ("http://loinc.org|", TokenValue("http://loinc.org", None, False)),
    ("|final", TokenValue(None, "final", False)),
    (r"a\|b|c\,d", TokenValue("a|b", "c,d", False)),
])
def test_token_forms(raw, expected):
    assert only_values("Observation", "code", raw) == (expected,)


@pytest.mark.parametrize("prefix", ["eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"])
def test_date_prefixes(prefix):
    (value,) = only_values("Observation", "date", f"{prefix}2026-01-12")
    assert value == DateValue(prefix, datetime(2026, 1, 12, tzinfo=UTC), datetime(2026, 1, 13, tzinfo=UTC))


@pytest.mark.parametrize(("raw", "start", "end"), [
    ("2026", datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)),
    ("2026-02", datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC)),
    ("2026-12", datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)),
    ("2026-01-12T09:00-05:00", datetime(2026, 1, 12, 14, 0, tzinfo=UTC), datetime(2026, 1, 12, 14, 1, tzinfo=UTC)),
    ("2026-01-12T09:00:00 05:00", datetime(2026, 1, 12, 4, 0, tzinfo=UTC), datetime(2026, 1, 12, 4, 0, 1, tzinfo=UTC)),
    ("2026-01-12T09:00:00.5Z", datetime(2026, 1, 12, 9, 0, 0, 500000, tzinfo=UTC),
     datetime(2026, 1, 12, 9, 0, 0, 600000, tzinfo=UTC)),
])
def test_a_date_covers_its_precision_in_utc(raw, start, end):
    assert only_values("Observation", "date", raw) == (DateValue("eq", start, end),)


@pytest.mark.parametrize("raw", ["2026-13-01", "yesterday", "2026-01-12T25:00Z", "gt", "2026-1-1"])
def test_a_malformed_date_is_400_naming_the_parameter_even_when_lenient(raw):
    with pytest.raises(FhirError) as err:
        parse("Observation", ("date", raw), strict=False)
    assert (err.value.status, err.value.code, err.value.expression) == (400, "invalid", ["date"])


def test_quantity_values_carry_precision_range_and_unit():
    (value,) = only_values("Observation", "value-quantity", "gt72|http://unitsofmeasure.org|/min")
    assert value == NumberValue("gt", Decimal(72), Decimal("71.5"), Decimal("72.5"), "http://unitsofmeasure.org",
                                "/min")
    (value,) = only_values("Observation", "value-quantity", "16")
    assert (value.prefix, value.system, value.code) == ("eq", None, None)
    with pytest.raises(FhirError) as err:
        parse("Observation", ("value-quantity", "lots"))
    assert err.value.expression == ["value-quantity"]


@pytest.mark.parametrize(("raw", "expected"), [
    ("Patient/abc-1", ReferenceValue("Patient", "abc-1")),
    ("abc-1", ReferenceValue(None, "abc-1")),
    ("https://ehr.example.org/fhir/Patient/abc-1", ReferenceValue("Patient", "abc-1")),
    ("Patient/abc-1/_history/3", ReferenceValue("Patient", "abc-1")),
])
def test_reference_forms(raw, expected):
    assert only_values("Observation", "subject", raw) == (expected,)


def test_a_type_modifier_on_a_reference_types_a_bare_id():
    (crit,) = parse("Observation", ("subject:Patient", "abc")).criteria
    assert crit.values == (ReferenceValue("Patient", "abc"),)


def test_a_malformed_reference_is_400():
    with pytest.raises(FhirError) as err:
        parse("Observation", ("patient", "not an id!"), strict=False)
    assert err.value.expression == ["patient"]


def test_comma_is_or_and_repetition_is_and():
    request = parse("Observation", ("code", "a,b"), ("code", "c"))
    assert [len(c.values) for c in request.criteria] == [2, 1]


def test_string_modifiers_and_missing():
    exact, contains, plain, missing = parse("Patient", ("name:exact", "Rowan"), ("name:contains", "ÓW"),
                                            ("family", "Row"), ("birthdate:missing", "true")).criteria
    assert (exact.modifier, exact.values) == ("exact", (StringValue("Rowan", "rowan"),))
    assert (contains.modifier, contains.values) == ("contains", (StringValue("ÓW", "ow"),))
    assert plain.modifier is None
    assert (missing.modifier, missing.missing, missing.values) == ("missing", True, ())
    with pytest.raises(FhirError) as err:
        parse("Patient", ("gender:missing", "maybe"), strict=False)
    assert err.value.expression == ["gender"]


def test_control_parameters():
    request = parse("Observation", ("_count", "5"), ("_sort", "-date,_lastUpdated"),
                    ("_include", "Observation:patient"), ("_include", "Observation:encounter:Encounter"),
                    ("_revinclude", "Provenance:target"), ("_elements", "code,valueInteger"),
                    ("_total", "none"), ("_summary", "count"), ("_page_token", "tok"), ("_format", "json"))
    assert request.count == 5
    assert request.sort == (SortKey("date", True), SortKey("_lastUpdated", False))
    assert request.includes == (Include("Observation", "patient", None), Include("Observation", "encounter",
                                                                                  "Encounter"))
    assert request.revincludes == (Include("Provenance", "target", None),)
    assert request.elements == ("code", "valueInteger")
    assert (request.total, request.summary_count, request.page_token) == ("none", True, "tok")
    assert ("_page_token", "tok") not in request.applied and ("_format", "json") not in request.applied


def test_count_defaults_and_is_capped():
    assert parse("Patient").count == DEFAULT_COUNT == 20
    assert parse("Patient", ("_count", "5000")).count == MAX_COUNT == 1000


@pytest.mark.parametrize("raw", ["abc", "-1", "2.5"])
def test_a_bad_count_is_400(raw):
    with pytest.raises(FhirError) as err:
        parse("Patient", ("_count", raw), strict=False)
    assert (err.value.status, err.value.expression) == (400, ["_count"])


@pytest.mark.parametrize(("key", "value"), [
    ("colour", "blue"),                      # unknown parameter
    ("name:text", "x"),                      # a modifier of an unknown parameter
    ("_sort", "status"),                     # sort on a non-date parameter
    ("_include", "Observation:code"),        # not a reference
    ("_include", "Encounter:patient"),       # not the searched type
    ("_revinclude", "Nope:target"),
    ("_summary", "text"),
    ("_total", "exact"),
])
def test_unknown_or_unsupported_is_400_when_strict_and_ignored_when_lenient(key, value):
    with pytest.raises(FhirError) as err:
        parse("Observation", (key, value), strict=True)
    assert (err.value.status, err.value.code) == (400, "not-supported")
    request = parse("Observation", ("code", "x"), (key, value), strict=False)
    assert request.ignored == ((key, value),)
    assert request.applied == (("code", "x"),)


@pytest.mark.parametrize(("key", "value"), [
    ("subject.name", "x"),                   # chaining
    ("code:text", "x"),                      # unsupported modifier of a known parameter
    ("subject:identifier", "x"),
    ("_has", "Observation:patient:code=1"),
    ("_has:Observation:patient:code", "1"),
    ("_filter", "code eq x"),
])
def test_unsupported_filters_are_400_even_when_lenient(key, value):
    """Dropping a filter would widen the answer (security review, finding 13)."""
    for strict in (True, False):
        with pytest.raises(FhirError) as err:
            parse("Observation", ("code", "x"), (key, value), strict=strict)
        assert (err.value.status, err.value.code) == (400, "not-supported")


def test_an_empty_value_is_ignored():
    assert parse("Patient", ("name", "")).criteria == ()


def test_an_unknown_type_is_404():
    with pytest.raises(FhirError) as err:
        parse("Basic")
    assert err.value.status == 404


def test_a_bad_element_name_is_400():
    with pytest.raises(FhirError) as err:
        parse("Patient", ("_elements", "name.family"))
    assert err.value.expression == ["_elements"]


def test_the_fingerprint_depends_on_the_applied_parameters_only():
    a = parse("Patient", ("name", "x"), ("_page_token", "1"), ("foo", "bar"), strict=False)
    b = parse("Patient", ("name", "x"), ("_page_token", "2"))
    assert a.fingerprint == b.fingerprint != parse("Patient", ("name", "y")).fingerprint
