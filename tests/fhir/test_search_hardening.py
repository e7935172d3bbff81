"""Security review (issue 10): inputs that used to be 500s are 400/404 naming the parameter (finding
10), unsupported chains, modifiers and filter parameters are 400 even when lenient (finding 13),
and page tokens of search and history are signed and strictly checked (finding 8)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest

from service.auth import create_token
from service.fhir.search import query
from service.fhir.search.request import MAX_PARAMS, MAX_VALUES
from tests.factories import PATIENT, make, seed_course

pytestmark = pytest.mark.postgres


@pytest.fixture
def patient_url(api) -> str:
    seed_course(api)
    return "/fhir/" + api.get("/patients/pt-1").get_json()["fhir"]["Patient"]


def _outcome(response, status: int, expression: str | None = None) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json(force=True)
    assert body["resourceType"] == "OperationOutcome"
    if expression is not None:
        assert expression in body["issue"][0].get("expression", []), body
    return body


# --- finding 10: no 500s ---------------------------------------------------------------------------------------------

def test_too_many_or_values_is_400_naming_the_parameter(client, auth, patient_url):
    many = ",".join(f"x{i}" for i in range(1500))
    _outcome(client.get(f"/fhir/Patient?identifier={many}", headers=auth), 400, "identifier")
    fine = ",".join(f"x{i}" for i in range(MAX_VALUES))
    assert client.get(f"/fhir/Patient?identifier={fine}", headers=auth).status_code == 200


def test_too_many_parameters_is_400(client, auth, patient_url):
    query_string = "&".join(["gender=female"] * (MAX_PARAMS + 1))
    _outcome(client.get(f"/fhir/Patient?{query_string}", headers=auth), 400)


@pytest.mark.parametrize("url, param", [
    ("/fhir/Patient?birthdate=ap0001-01-01", "birthdate"),
    ("/fhir/Patient?birthdate=ap9999-12-31", "birthdate"),
    ("/fhir/Patient?birthdate=ap9999", "birthdate"),
    ("/fhir/Patient?birthdate=ne0001", "birthdate"),
    ("/fhir/Observation?value-quantity=1E-999999999", "value-quantity"),
    ("/fhir/Observation?value-quantity=1E+999999999", "value-quantity"),
    ("/fhir/Observation?value-quantity=ap1E400", "value-quantity"),
    ("/fhir/Observation?value-quantity=" + "9" * 400, "value-quantity"),
])
def test_extreme_dates_and_numbers_never_500(client, auth, patient_url, url, param):
    response = client.get(url, headers=auth)
    assert response.status_code in (200, 400), response.get_data(as_text=True)
    if response.status_code == 400:
        _outcome(response, 400, param)


def test_a_version_id_that_does_not_fit_is_404(client, auth, patient_url):
    for vid in ("1" + "0" * 22, "2147483648", "9223372036854775808"):
        _outcome(client.get(f"{patient_url}/_history/{vid}", headers=auth), 404)
    rid = patient_url.rsplit("/", 1)[1]
    sent = {"resourceType": "Bundle", "type": "batch",
            "entry": [{"request": {"method": "GET", "url": f"Patient/{rid}/_history/{'1' + '0' * 22}"}},
                      {"request": {"method": "GET", "url": f"Patient/{rid}"}}]}
    fhir_json = {"Content-Type": "application/fhir+json"}
    body = client.post("/fhir", json=sent, headers=auth | fhir_json).get_json(force=True)
    assert [e["response"]["status"] for e in body["entry"]] == ["404 Not Found", "200 OK"]


@pytest.mark.parametrize("token", [
    base64.urlsafe_b64encode(json.dumps(["2026-01-01T00:00:00+00:00", "x", 10 ** 30]).encode()).decode(),
    base64.urlsafe_b64encode(json.dumps(["not a date", "x", 1]).encode()).decode(),
    base64.urlsafe_b64encode(b"\xff\xfe").decode(),
    "!!!", "a.b", "e30.AAAA",
])
def test_an_unsigned_history_page_token_is_400(client, auth, patient_url, token):
    _outcome(client.get(f"/fhir/Patient/_history?_page={token}", headers=auth), 400, "_page")


def test_history_page_tokens_are_signed_and_bound_to_their_history(client, auth, api, patient_url):
    for phone in ("+1 555 0101", "+1 555 0102"):
        api.put("/patients/pt-1", make(PATIENT, phone=phone))
    page = client.get(f"{patient_url}/_history?_count=1", headers=auth).get_json(force=True)
    nxt = next(link["url"] for link in page["link"] if link["relation"] == "next").removeprefix("http://localhost")
    second = client.get(nxt, headers=auth).get_json(force=True)
    assert [e["response"]["etag"] for e in second["entry"]] == ['W/"2"']
    token = nxt.split("_page=")[1].split("&")[0]
    _outcome(client.get(f"/fhir/Patient/_history?_page={token}", headers=auth), 400, "_page")  # another history
    body, _, sig = token.partition(".")
    _outcome(client.get(f"{patient_url}/_history?_page={body}.{sig[:-2]}AA", headers=auth), 400, "_page")


# --- finding 13: chains, modifiers and filters we do not support are never dropped -----------------------------------

@pytest.mark.parametrize("query_string", [
    "patient.name=x", "subject:Patient.name=x", "patient:identifier=x", "code:text=x", "code:not=x",
    "_has:Observation:patient:code=x", "_filter=code eq x", "_query=mine", "_text=x", "_content=x", "_list=42",
    "_tag=x", "_profile=x", "_source=x",
])
def test_unsupported_filters_are_400_even_when_lenient(client, auth, patient_url, query_string):
    _outcome(client.get(f"/fhir/Observation?{query_string}", headers=auth), 400)


def test_plain_unknown_parameters_stay_lenient_and_leave_self(client, auth, patient_url):
    body = client.get("/fhir/Observation?whatever=1&_count=1", headers=auth).get_json(force=True)
    assert body["type"] == "searchset"
    assert "whatever" not in body["link"][0]["url"]


# --- finding 8: search page tokens ---------------------------------------------------------------------------------

SORTED = "/fhir/Patient?_count=1&_sort=birthdate"


def _first_page(client, api, headers) -> dict:
    assert api.put("/patients/pt-2", make(PATIENT, id="pt-2", mrn="MRN-0002", identifiers=None)).status_code == 201
    body = client.get(SORTED, headers=headers).get_json(force=True)
    assert body["total"] == 2
    return body


def _signed(db, state: dict) -> str:
    return query._encode(db, state)


def _state(db, client, api, auth) -> dict:
    page = _first_page(client, api, auth)
    token = next(link["url"] for link in page["link"] if link["relation"] == "next").split("_page_token=")[1]
    return json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))


@pytest.mark.parametrize("change", [
    {"t": "2026-01-01T00:00:00"},  # naive
    {"t": "tomorrow"}, {"t": 5}, {"t": None},
    {"t": (datetime.now(UTC) + timedelta(hours=1)).isoformat()},  # in the future: never issued
    {"d": "x"}, {"d": None},
    {"k": None}, {"k": []}, {"k": [1, 2]}, {"k": ["2026-01-01T00:00:00+00:00"]}, {"k": ["x", "y"]},
    {"k": ["2026-01-01T00:00:00+00:00", 5]}, {"k": ["2026-01-01T00:00:00+00:00", "bad id!"]},
    {"k": ["2026-01-01T00:00:00+00:00", "a", "b"]}, {"k": [["nested"], "a"]},
    {"n": -1}, {"n": True}, {"n": "3"}, {"n": 1.5},
    {"f": 5}, {"extra": 1},
])
def test_a_signed_token_of_the_wrong_shape_is_400(client, auth, db, api, patient_url, change):
    state = _state(db, client, api, auth)
    assert client.get(f"{SORTED}&_page_token={_signed(db, state)}", headers=auth).status_code == 200
    token = _signed(db, state | change)
    _outcome(client.get(f"{SORTED}&_page_token={token}", headers=auth), 400, "_page_token")


def test_a_token_signed_with_another_key_is_400(client, auth, db, api, patient_url):
    state = _state(db, client, api, auth)
    body = base64.urlsafe_b64encode(json.dumps(state).encode()).rstrip(b"=").decode()
    _outcome(client.get(f"{SORTED}&_page_token={body}.AAAAAAAAAAAAAAAAAAAAAAAA", headers=auth), 400, "_page_token")


def test_a_search_only_token_sees_no_version_older_than_a_search_it_could_have_made(client, auth, db, api,
                                                                                   patient_url):
    """A signed snapshot older than SNAPSHOT_RETENTION is 410; a snapshot the server never issued
    (forged, future) 400; so a search-only token sees only what a search at an issued time served."""
    search_only = {"Authorization": f"Bearer {create_token(db, 'ehr', ['system/Patient.s'])}"}
    db.commit()
    rid = patient_url.rsplit("/", 1)[1]
    _outcome(client.get(f"{patient_url}/_history/1", headers=search_only), 403)
    api.put("/patients/pt-1", make(PATIENT, phone="+1 555 0199"))
    old = (datetime.now(UTC) - query.SNAPSHOT_RETENTION - timedelta(seconds=5)).isoformat()
    token = _signed(db, {"t": old, "d": "n", "k": ["a"], "n": 1,
                         "f": query._fingerprint(_parsed("Patient", [("_id", rid)]))})
    _outcome(client.get(f"/fhir/Patient?_id={rid}&_page_token={token}", headers=search_only), 410)


def _parsed(rtype: str, params: list[tuple[str, str]]):
    from service.fhir.search import parse_search

    return parse_search(rtype, params, False)
