"""Schemathesis over the clinic API v1: its own OpenAPI document, in-process (WSGI), a seeded clinic,
an operator token, every check on; and no rejected request may write anything.

Budget: ``FUZZ_EXAMPLES`` (tests/fuzz/support.py) examples per operation and phase.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import schemathesis
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from service.clinic.openapi import build_spec
from tests.factories import seed_course
from tests.fuzz.support import FUZZ_SETTINGS, WriteGuard

schema = schemathesis.openapi.from_dict(build_spec())


@schemathesis.serializer("application/x-ndjson")
def _ndjson(ctx: schemathesis.SerializationContext, value: Any) -> bytes:
    """/import bodies: the document's array of lines, one JSON value a line."""
    if isinstance(value, bytes):
        return value
    lines = value if isinstance(value, list) else [value]
    return "\n".join(json.dumps(line) for line in lines).encode()


#: 422 messages of rules a JSON Schema cannot state: between fields of one record (ends not before
#: starts, dose x weight, items summing to the score of the instrument named), against other records
#: (references, the id in the URL), against the clock (birth dates), and the NPI check digit. A
#: schema-valid body refused for one of these is the contract; refused for anything else (a bound,
#: a pattern, a type) it is a mismatch between the document and the API, and the test fails.
BEYOND_SCHEMA = re.compile("|".join((
    r"Must not be before (start|start_date)\.",
    r"Esketamine \(Spravato\) is given by the intranasal route only\.",
    r"Only for esketamine nasal-spray devices\.",
    r"\d+ device\(s\) of \d+ mg make \d+ mg, not \S+ mg\.",
    r"\S+ mg does not match dose_mg_per_kg x weight_kg = \S+ mg\.",
    r".+ scores run from .+ to .+\.", r".+ scores are whole numbers\.", r".+ has \d+ items; \d+ given\.",
    r".+ items score .+ out of range\.", r"The items give .+, not .+\.",
    r"At least one of .+ is required\.", r"Blood pressure needs both systolic_mmhg and diastolic_mmhg\.",
    r"Must be below systolic_mmhg\.",
    r"Not a valid NPI: 10 digits with a Luhn check digit\.",
    r"Must not be in the future\.",
    r"Outside the range of representable times\.",  # an edge-of-range time whose offset leaves the range
    r"Each system\|value may appear once\.", r"Each identifier needs its system \(an absolute URI\)\.",
    r"Each diagnosis may appear once\.", r"Each practitioner_id and function pair may appear once\.",
    r"No [a-z -]+ with id .+\.", r"Does not match the (id|session_id) in the URL \(.+\)\.",
    r"Only with psychotherapy: true\.", r"Must not be longer than the session \(start to end\)\.",
    r".+ is a self-report instrument: the patient answers it, so it has no rater\.",
)))


def _beyond_schema(body: Any) -> bool:
    errors = body.get("errors") if isinstance(body, dict) else None
    return bool(errors) and all(BEYOND_SCHEMA.fullmatch(m) for msgs in errors.values() for m in msgs)


def positive_data_beyond_schema(ctx: Any, response: Any, case: schemathesis.Case) -> bool | None:
    """``positive_data_acceptance``, except that a 422 naming only rules beyond JSON Schema passes."""
    if response.status_code == 422 and _beyond_schema(response.json()):
        return None
    return positive_data_acceptance(ctx, response, case)


@pytest.fixture
def guard(app) -> WriteGuard:
    return WriteGuard(app.extensions["db_engine"])


@pytest.fixture
def cursor(api) -> str:
    """Seed the clinic; a real ``next_cursor`` (two practitioners, one a page)."""
    seed_course(api)
    return api.get("/practitioners?limit=1").get_json()["next_cursor"]


def _real_cursor(case: schemathesis.Case, cursor: str) -> None:
    """``cursor`` is opaque (only what the API issued is valid), which a schema cannot generate:
    schema-valid cases send a cursor the API issued; invalid ones keep theirs, which must be 422."""
    meta = case.meta
    if case.query and "cursor" in case.query and meta is not None and meta.generation.mode.is_positive:
        case.query["cursor"] = cursor


@schema.parametrize()
@FUZZ_SETTINGS
def test_clinic_api(case: schemathesis.Case, app, auth, cursor, guard) -> None:
    # the app under test is this test's (a fresh database); checks that send requests of their own
    # (ignored_auth, use_after_free, ...) find it on the schema
    case.operation.schema.app = app
    _real_cursor(case, cursor)
    excluded = [positive_data_acceptance]
    if case.operation.path == "/import":
        # /import takes any NDJSON and judges each line on its own: bad lines are reported in the
        # 200 answer (README, the clinic API), so a schema-violating body is not a rejected request
        excluded.append(negative_data_rejection)
    guard(lambda: case.call_and_validate(headers=auth, app=app, excluded_checks=excluded,
                                         additional_checks=[positive_data_beyond_schema]))


# What the fuzzer found, kept as plain regressions (they run whatever FUZZ_EXAMPLES is).

def test_an_import_line_whose_type_is_not_a_string_is_reported_not_a_500(api):
    response = api.import_ndjson('{"record": {}, "type": {}}\n{"record": {}, "type": ["vitals"]}\n')
    assert response.status_code == 200
    report = response.get_json()
    assert report["rejected"] == 2 and all("type" in e["errors"] for e in report["errors"])


@pytest.mark.parametrize("system", ["http://b\u0085x", "urn:x:a\u0085", "http://a\u2028b", "urn:x:\ufeff"])
def test_a_uri_with_unicode_white_space_is_refused_as_the_document_says(api, system):
    """U+0085 is white space to Python's ``\\s`` only, U+FEFF to ECMA's only: the API and its
    JSON Schema pattern now agree on both."""
    pattern = build_spec()["components"]["schemas"]["Identifier"]["properties"]["system"]["pattern"]
    assert re.fullmatch(pattern, system) is None
    seed_course(api)
    body = {"id": "pt-2", "mrn": "MRN-2", "name": {"family": "Vale"}, "birth_date": "1990-01-01", "sex": "male",
            "identifiers": [{"system": system, "value": "1"}]}
    response = api.put("/patients/pt-2", body)
    assert response.status_code == 422 and "identifiers.0.system" in response.get_json()["errors"]


def test_a_text_of_white_space_alone_is_blank_in_the_api_and_the_document(api):
    pattern = build_spec()["components"]["schemas"]["HumanName"]["properties"]["family"]["pattern"]
    for text, valid in (("\ufeff", False), ("\u0085 ", False), ("Vale", True), (" Vale\t", True)):
        assert (re.fullmatch(pattern, text) is not None) is valid, repr(text)
        body = {"id": "pt-3", "mrn": "MRN-3", "name": {"family": text}, "birth_date": "1990-01-01", "sex": "male"}
        assert (api.put("/patients/pt-3", body).status_code in (200, 201)) is valid, repr(text)
