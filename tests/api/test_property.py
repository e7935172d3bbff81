"""Property tests: whatever a client sends to a write endpoint, the answer is one the contract lists.

Random JSON (any shape), bodies built from the real field names of each schema with random and
plausible values, random NDJSON for /import and random list queries: never a 5xx, only
200/201/400/404/409/413/422. A clinic is seeded first so that references can resolve, which
lets random bodies reach the reference, uniqueness and clinical-check code, not only validation.

With the app in TESTING mode an unhandled exception propagates into the test, so Hypothesis
reports (and shrinks) the traceback of any would-be 500.
"""

from __future__ import annotations

import base64
import copy
import json
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from marshmallow import fields as mm_fields
from marshmallow import validate

from mappings.clinical import INSTRUMENTS
from service.clinic.collections import COLLECTIONS
from service.clinic.fields import ID_PATTERN, StrictBool, StrictFloat, StrictInt
from service.synthetic import EHR_MRN_SYSTEM, npi_with_check_digit
from tests.factories import (
    ADMINISTRATION,
    COURSE,
    NURSE,
    OBSERVATION,
    PATIENT,
    REFERRAL,
    SESSION,
    VITALS,
    make,
    seed_course,
)

#: every status a write or a list may answer
ALLOWED = {200, 201, 400, 404, 409, 413, 422}

def examples(n: int) -> settings:
    """``n`` examples, no deadline (a request takes milliseconds, a slow CI runner longer); the seeded
    clinic is a function-scoped fixture shared by the examples of one test, on purpose."""
    return settings(max_examples=n, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# --------------------------------------------------------------------------------------------
# The clinic the random requests run against
# --------------------------------------------------------------------------------------------

VALID: dict[str, dict[str, Any]] = {
    "practitioners": NURSE, "patients": PATIENT, "referrals": REFERRAL, "courses": COURSE,
    "sessions": make(SESSION, number=None),
    "administrations": ADMINISTRATION, "observations": OBSERVATION, "vitals": VITALS,
}
KNOWN_IDS = {
    "practitioners": ["dr-ortiz", "rn-cho"], "patients": ["pt-1", "pt-2"], "referrals": ["rf-1", "rf-2"],
    "courses": ["co-1", "co-2"], "sessions": ["se-1", "se-2", "se-k"], "administrations": ["ad-1", "ad-k"],
    "observations": ["ob-1"], "vitals": ["vs-1"],
}


def seed(api) -> None:
    """seed_course's clinic, a second patient with a course and session, and an esketamine session."""
    seed_course(api)
    for path, body in (
        ("/patients/pt-2", {"id": "pt-2", "mrn": "MRN-0002", "name": {"family": "Birch"}, "birth_date": "1990-05-01",
                            "sex": "male", "identifiers": [{"system": EHR_MRN_SYSTEM, "value": "E100300"}]}),
        ("/referrals/rf-2", make(REFERRAL, id="rf-2", patient_id="pt-2")),
        ("/courses/co-2", make(COURSE, id="co-2", patient_id="pt-2", referral_id="rf-2")),
        ("/sessions/se-2", make(SESSION, id="se-2", patient_id="pt-2", course_id="co-2")),
        ("/sessions/se-k", make(SESSION, id="se-k", course_id=None, number=None)),
        ("/sessions/se-1/administrations/ad-1", ADMINISTRATION),
        ("/sessions/se-k/administrations/ad-k", make(ADMINISTRATION, id="ad-k", drug="esketamine", route="intranasal",
                                                     dose_mg=56.0, device_count=2, dose_mg_per_kg=None,
                                                     weight_kg=None, rate_mg_per_kg_per_h=None)),
        ("/sessions/se-1/vitals/vs-1", VITALS),
        ("/observations/ob-1", OBSERVATION),
    ):
        response = api.put(path, body)
        assert response.status_code == 201, (path, response.get_json())


def send(api, method: str, path: str, data: bytes | str, content_type: str = "application/json"):
    response = api.client.open(f"/api/v1{path}", method=method.upper(), data=data, content_type=content_type,
                               headers=api.headers)
    assert response.status_code in ALLOWED, (method, path, response.status_code, response.get_data()[:500])
    event(f"status {response.status_code}")  # shown by pytest --hypothesis-show-statistics
    body = response.get_json()
    assert isinstance(body, dict), body
    if response.status_code >= 400:
        assert isinstance(body.get("errors"), dict) and body["errors"], body
        assert all(isinstance(k, str) and isinstance(v, list) and v for k, v in body["errors"].items()), body
    return response


# --------------------------------------------------------------------------------------------
# Strategies
# --------------------------------------------------------------------------------------------

#: strings that have broken things: NUL, unpaired surrogates (sent as \\u escapes), a trailing newline, blanks
nasty_text = st.sampled_from(["\x00", "a\x00b", "\ud800", "x\udfff", "pt-1\n", "\n", " ", "", "\u202e", "\ufeff"])
#: any text, including NUL, control characters and unpaired surrogates
any_text = st.text(st.characters(exclude_categories=()), max_size=12) | nasty_text
#: numbers past every range, including integers no float can hold
huge_numbers = st.sampled_from([10 ** 400, -(10 ** 400), 2 ** 64, -(2 ** 63), 1e308, -1e308, 5e-324])
json_leaves = (st.none() | st.booleans() | st.integers() | huge_numbers
               | st.floats(allow_nan=False, allow_infinity=False) | any_text)
json_values = st.recursive(
    json_leaves,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(any_text, children, max_size=4),
    max_leaves=12,
)

OFFSETS = st.integers(-23 * 60 - 59, 23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m)))
aware_times = st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59),
                           timezones=OFFSETS).map(datetime.isoformat)
near_times = st.datetimes(min_value=datetime(2026, 1, 12, 8), max_value=datetime(2026, 1, 12, 13),
                          timezones=st.just(timezone(timedelta(hours=-5)))).map(datetime.isoformat)
#: naive, malformed, and aware times with no UTC equivalent (year 1 east of UTC, year 9999 west of it)
odd_times = st.sampled_from(["2026-01-12T09:00:00", "2026-01-12", "2026-02-30T09:00:00Z", "T", ""]) | st.builds(
    lambda year, hours: f"{year}T23:30:00{hours:+03d}:00",
    st.sampled_from(["0001-01-01", "9999-12-31"]), st.sampled_from([-12, -5, 5, 14]))
times = st.one_of(near_times, aware_times, odd_times)
IN_3_DAYS = (datetime.now(UTC).date() + timedelta(days=3)).isoformat()
dates = st.dates().map(lambda d: d.isoformat()) | st.sampled_from(
    ["2026-01-12", "1900-01-01", "1899-12-31", IN_3_DAYS, "2026-13-01"])
icd_codes = st.sampled_from(["F33.2", "F32.A", "G89.4", "R45.851", "F3", "f33.2", "U07.1", "F33.2\n"]) | st.from_regex(
    r"\A[A-Z][0-9][0-9AB](\.[0-9A-Z]{1,4})?\Z")
ids = st.sampled_from([i for known in KNOWN_IDS.values() for i in known] + ["ghost", "", "a b", "x" * 65]) | \
    st.from_regex(r"\A[A-Za-z0-9._-]{1,64}\Z") | any_text

#: plausible values by field name, where the type alone says too little
BY_NAME: dict[str, st.SearchStrategy] = {
    "npi": st.sampled_from([npi_with_check_digit("198765432"), npi_with_check_digit("123456789"), "1234567890"])
    | st.from_regex(r"\A[0-9]{10}\Z"),
    "mrn": st.sampled_from(["MRN-0001", "MRN-0002", "MRN-0003"]) | any_text,
    "system": st.sampled_from([EHR_MRN_SYSTEM, "urn:oid:1.2.3", "https://ehr.example.org/mrn", "EHR"]) | any_text,
    "value": st.sampled_from(["E100200", "E100300", "E1"]) | any_text,
    "indication": icd_codes,
    "diagnoses": st.lists(icd_codes, max_size=13),
    "instrument": st.sampled_from(sorted(INSTRUMENTS)),
    "items": st.lists(st.integers(-1, 8), max_size=22),
    "score": st.integers(-1, 130) | st.floats(-1, 130) | huge_numbers,
    "code": st.sampled_from(["422587007", "0123", "422587007\n"]) | any_text,
    "device_count": st.integers(0, 11),
    "dose_mg": st.sampled_from([28, 56, 84, 35.0, 52.5, 70.0, 105.0]) | st.floats(-1, 1001) | huge_numbers,
    "email": st.sampled_from(["a@example.org", "not-an-email"]) | any_text,
    "phone": st.sampled_from(["+1 555 0100", "12"]) | any_text,
}


def _range(field: mm_fields.Field) -> tuple[float | None, float | None]:
    for v in field.validators:
        if isinstance(v, validate.Range):
            return v.min, v.max
    return None, None


def _choices(field: mm_fields.Field) -> list[str] | None:
    for v in field.validators:
        if isinstance(v, validate.OneOf):
            return list(v.choices)
    return None


def values_for(name: str, field: mm_fields.Field) -> st.SearchStrategy:
    """Values for one field: mostly of its type and near its limits, sometimes anything at all."""
    if name in BY_NAME:
        typed = BY_NAME[name]
    elif name == "id" or name.endswith("_id"):
        typed = ids
    elif isinstance(field, mm_fields.Nested):
        typed = shaped(field.schema)
    elif isinstance(field, mm_fields.List):
        typed = st.lists(values_for(name, field.inner), max_size=4)
    elif isinstance(field, StrictBool):
        typed = st.booleans()
    elif isinstance(field, StrictInt | StrictFloat):
        lo, hi = _range(field)
        lo, hi = int((lo if lo is not None else 0) - 2), int((hi if hi is not None else 100) + 2)
        typed = (st.integers(lo, hi) if isinstance(field, StrictInt) else
                 st.integers(lo, hi) | st.floats(lo, hi, allow_nan=False)) | huge_numbers
    elif isinstance(field, mm_fields.AwareDateTime):
        typed = times
    elif isinstance(field, mm_fields.Date):
        typed = dates
    elif _choices(field):
        typed = st.sampled_from(_choices(field)) | any_text
    elif isinstance(field, mm_fields.String):
        typed = any_text | st.text(max_size=300)
    else:
        typed = json_values
    return st.one_of(typed, typed, typed, json_values)


def shaped(schema) -> st.SearchStrategy[dict[str, Any]]:
    """Objects with a random subset of the schema's real field names, each with a random value."""
    loadable = {n: f for n, f in schema.fields.items() if not f.dump_only}
    return st.fixed_dictionaries({}, optional={n: st.deferred(lambda n=n, f=f: values_for(n, f))
                                               for n, f in loadable.items()})


@st.composite
def record_bodies(draw, collection: str) -> dict[str, Any]:
    """A valid record with a few fields (most often one) replaced, dropped or added, so that the rest
    of the record gets past validation; or a schema-shaped object from scratch."""
    schema = COLLECTIONS[collection].schema()
    if draw(st.integers(0, 3)) == 0:
        return draw(shaped(schema))
    body = copy.deepcopy(VALID[collection])
    body.pop("id", None)
    if collection == "patients":  # a new patient needs an MRN and EHR number of its own
        body["mrn"] = draw(st.from_regex(r"\AMRN-[0-9]{4}\Z"))
        body["identifiers"] = [{"system": EHR_MRN_SYSTEM, "value": draw(st.from_regex(r"\AE[0-9]{6}\Z"))}]
    loadable = [n for n, f in schema.fields.items() if not f.dump_only]
    changes = draw(st.sampled_from([1, 1, 1, 2, 3, 4]))
    for name in draw(st.lists(st.sampled_from(loadable), unique=True, min_size=changes, max_size=changes)):
        if draw(st.integers(0, 4)) == 0:
            body.pop(name, None)
        else:
            body[name] = draw(values_for(name, schema.fields[name]))
    if draw(st.integers(0, 9)) == 0:
        body[draw(any_text)] = draw(json_values)
    return body


@st.composite
def write_targets(draw, collection: str) -> tuple[str, str]:
    """(method, path) of a write to ``collection``: PUT or POST, nested or top level, known or new ids."""
    record_id = draw(st.sampled_from([*KNOWN_IDS[collection], "new-1", "new-2"]))
    method = draw(st.sampled_from(["put", "post"]))
    if COLLECTIONS[collection].parent and draw(st.integers(0, 3)):
        base = f"/sessions/{draw(st.sampled_from(['se-1', 'se-2', 'se-k', 'ghost']))}/{collection}"
    else:
        base = f"/{collection}"
    return method, base if method == "post" else f"{base}/{record_id}"


EHR_REFERRAL_SYSTEM = "urn:oid:2.16.840.1.113883.3.9999.2"  # an example OID arc, as service.synthetic's

ENDPOINTS = st.sampled_from(list(COLLECTIONS)).flatmap(write_targets)

#: for one-field changes: a valid new record of each collection (every nested list has an element)
ONE_FIELD_BASES: dict[str, tuple[str, dict[str, Any]]] = {
    "practitioners": ("/practitioners/md-new", make(NURSE, id=None, prefix=None, organization="Riverside",
                                                    name={"family": "Hale", "given": ["Jo"], "prefix": ["Dr."],
                                                          "suffix": ["MD"]})),
    "patients": ("/patients/pt-new", make(PATIENT, id=None, mrn="MRN-0099",
                                          identifiers=[{"system": EHR_MRN_SYSTEM, "value": "E999999"}])),
    "referrals": ("/referrals/rf-new", make(REFERRAL, id=None,
                                            identifiers=[{"system": EHR_REFERRAL_SYSTEM, "value": "R-0042"}])),
    "courses": ("/courses/co-new", make(COURSE, id=None)),
    "sessions": ("/sessions/se-new", make(SESSION, id=None, number=5, adverse_events=[
        {"text": "nausea", "severity": "mild", "code": "422587007"}])),
    "administrations": ("/sessions/se-1/administrations/ad-new", make(ADMINISTRATION, id=None)),
    "observations": ("/observations/ob-new", make(OBSERVATION, id=None, session_id="se-1")),
    "vitals": ("/sessions/se-1/vitals/vs-new", make(VITALS, id=None)),
}


def field_paths(schema, prefix: str = "") -> list[tuple[str, str, mm_fields.Field]]:
    """(dotted path, name, field) of every loadable field, into nested objects and first list items."""
    out = []
    for name, field in schema.fields.items():
        if field.dump_only:
            continue
        out.append((f"{prefix}{name}", name, field))
        if isinstance(field, mm_fields.Nested):
            out += field_paths(field.schema, f"{prefix}{name}.")
        elif isinstance(field, mm_fields.List) and isinstance(field.inner, mm_fields.Nested):
            out += field_paths(field.inner.schema, f"{prefix}{name}.0.")
    return out


FIELD_PATHS = {(c, path): (name, field) for c in COLLECTIONS for path, name, field in
               field_paths(COLLECTIONS[c].schema())}
DROP = object()


def with_value(body: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(body)
    *parents, last = dotted.split(".")
    node: Any = out
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if value is DROP:
        node.pop(last, None)
    else:
        node[last] = value
    return out


# --------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------


@pytest.fixture
def seeded(api):
    seed(api)
    return api


@examples(300)
@given(target=ENDPOINTS, body=json_values)
def test_any_json_body_to_any_write_endpoint_gets_a_contract_status(seeded, target, body):
    method, path = target
    response = send(seeded, method, path, json.dumps(body))
    if not isinstance(body, dict):
        assert response.status_code in (404, 413, 422)


#: JSON nested deeper than any parser recurses, and truncated nesting
deep_json = st.builds(lambda depth, ends: ends[0] * depth + ends[1] * depth,
                      st.sampled_from([50, 900, 5000, 200_000]),
                      st.sampled_from([(b"[", b"]"), (b"[", b""), (b'{"a":', b"}"), (b'{"a":', b"")]))
raw_bodies = st.binary(max_size=64) | any_text.map(lambda t: t.encode("utf-8", "surrogatepass")) | deep_json | \
    st.sampled_from([b"NaN", b'{"dose_mg": Infinity}', b"1e400", b'"\\ud800"', b"\xef\xbb\xbf{}"])


@examples(100)
@given(target=ENDPOINTS, data=raw_bodies,
       content_type=st.sampled_from(["application/json", "application/json", "text/plain", "application/x-ndjson", ""]))
def test_any_bytes_to_any_write_endpoint_get_a_contract_status(seeded, target, data, content_type):
    method, path = target
    response = send(seeded, method, path, data, content_type)
    if content_type != "application/json":
        assert response.status_code in (400, 404)


def test_the_one_field_bases_are_valid_records(seeded):
    for url, body in ONE_FIELD_BASES.values():
        assert seeded.put(url, body).status_code == 201, (url, seeded.put(url, body).get_json())


@pytest.mark.parametrize("collection,path", list(FIELD_PATHS), ids=[f"{c}.{p}" for c, p in FIELD_PATHS])
@examples(16)
@given(data=st.data())
def test_any_value_in_any_one_field_of_a_valid_record_gets_a_contract_status(seeded, collection, path, data):
    name, field = FIELD_PATHS[collection, path]
    value = data.draw(values_for(name, field) | st.just(DROP), label=path)
    url, base = ONE_FIELD_BASES[collection]
    send(seeded, "put", url, json.dumps(with_value(base, path, value)))


@pytest.mark.parametrize("collection", list(COLLECTIONS))
@examples(100)
@given(data=st.data())
def test_bodies_of_real_field_names_get_a_contract_status(seeded, collection, data):
    method, path = data.draw(write_targets(collection), label="target")
    body = data.draw(record_bodies(collection), label="body")
    response = send(seeded, method, path, json.dumps(body))
    if response.status_code == 201:  # what was created can be read, and its id is one the contract allows
        stored = seeded.get(response.headers["Location"].split("/api/v1", 1)[1])
        assert stored.status_code == 200
        assert re.fullmatch(ID_PATTERN, stored.get_json()["id"]), stored.get_json()["id"]


@pytest.mark.postgres
@examples(40)
@given(data=st.data())
def test_bodies_of_real_field_names_get_a_contract_status_on_every_backend(seeded, data):
    collection = data.draw(st.sampled_from(list(COLLECTIONS)), label="collection")
    method, path = data.draw(write_targets(collection), label="target")
    send(seeded, method, path, json.dumps(data.draw(record_bodies(collection), label="body")))


def _import_lines(collection: str) -> st.SearchStrategy[str]:
    def envelope(record: dict[str, Any]) -> str:
        if COLLECTIONS[collection].parent:
            record = {"session_id": "se-1", **record}
        return json.dumps({"type": collection, "record": record})

    return record_bodies(collection).map(envelope)


import_lines = st.one_of(
    st.sampled_from(list(COLLECTIONS)).flatmap(_import_lines),
    st.sampled_from(list(COLLECTIONS)).flatmap(_import_lines),
    json_values.map(json.dumps),
    st.fixed_dictionaries({"type": any_text | st.sampled_from(list(COLLECTIONS)), "record": json_values}).map(
        json.dumps),
    any_text,
)


@examples(100)
@given(lines=st.lists(import_lines, max_size=6), binary=st.binary(max_size=32), add_binary=st.booleans())
def test_any_ndjson_to_import_gets_a_report(seeded, lines, binary, add_binary):
    data = "\n".join(lines).encode("utf-8", "surrogatepass") + (b"\n" + binary if add_binary else b"")
    response = send(seeded, "post", "/import", data, "application/x-ndjson")
    assert response.status_code == 200
    report = response.get_json()
    assert report["accepted"] == len(report["lines"]) == report["created"] + report["updated"] + report["unchanged"]
    assert report["rejected"] == len(report["errors"])
    for error in report["errors"]:
        assert error["status"] in (400, 404, 409, 422) and error["errors"], error


LIST_PATHS = ["/patients", "/sessions", "/observations", "/practitioners", "/sessions/se-1/vitals",
              "/sessions/se-1/administrations", "/sessions/ghost/vitals"]


#: cursors: base64 of any JSON, and of [time, id] pairs with naive, far-off or malformed times
cursors = st.one_of(
    json_values.map(json.dumps),
    st.tuples(times, ids).map(lambda pair: json.dumps(list(pair))),
).map(lambda text: base64.urlsafe_b64encode(text.encode("utf-8", "surrogatepass")).decode().rstrip("="))


@examples(120)
@given(path=st.sampled_from(LIST_PATHS), query=st.dictionaries(
    st.sampled_from(["patient_id", "since", "status", "limit", "cursor"]) | any_text,
    any_text | st.integers().map(str) | times | cursors | st.sampled_from(["pt-1", "completed", "0", "-1"]),
    max_size=4))
def test_any_list_query_gets_a_contract_status(seeded, path, query):
    query_string = urlencode({k.encode("utf-8", "surrogatepass"): v.encode("utf-8", "surrogatepass")
                              for k, v in query.items()})
    response = seeded.get(f"{path}?{query_string}")
    assert response.status_code in (200, 404, 422), (response.status_code, response.get_data()[:500])
    if response.status_code == 200:
        assert isinstance(response.get_json()["items"], list)
