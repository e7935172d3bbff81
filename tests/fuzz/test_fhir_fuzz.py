"""Schemathesis over the FHIR REST API (/fhir), driven by the hand-kept document of
tests/fuzz/fhir_openapi.py, in-process, on a seeded clinic with an operator token.

Checks: no 5xx, every status documented, FHIR JSON content types, responses shaped as documented
(an OperationOutcome for every error, a Bundle for searches and histories), and no write on a
rejected request. The data checks (positive/negative data) are off: the document types resources
loosely on purpose, so it cannot say which bodies are valid FHIR. Budget: ``FUZZ_EXAMPLES``.
"""

from __future__ import annotations

import pytest
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import select

from service.models import FhirResource
from tests.factories import seed_course
from tests.fuzz.fhir_openapi import build_fhir_spec
from tests.fuzz.support import FUZZ_SETTINGS, WriteGuard

schema = schemathesis.openapi.from_dict(build_fhir_spec())
# The coverage phase's fixed boundary cases for ~90 operations take longer to build than the whole
# budget; the examples and the FUZZ_EXAMPLES random (valid and invalid) cases per operation run.
schema.config.phases.update(phases=["examples", "fuzzing"])

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]

#: 500s this fuzzer found in FHIR search/history/vread/bundles, fixed by another change of issue 10:
#: operation label -> the finding. Remove an entry once the fix is merged.
KNOWN_500S: dict[str, str] = {}


@pytest.fixture
def guard(app, api) -> WriteGuard:
    seed_course(api)
    return WriteGuard(app.extensions["db_engine"])


@pytest.fixture
def stored_ids(guard, db) -> dict[str, list[str]]:
    """The seeded clinic's resource ids by type."""
    out: dict[str, list[str]] = {}
    for rtype, rid in db.execute(select(FhirResource.resource_type, FhirResource.id)):
        out.setdefault(rtype, []).append(rid)
    return out


def _real_id(case: schemathesis.Case, stored_ids: dict[str, list[str]]) -> None:
    """Schema-valid reads, vreads and histories name a stored resource (a random id is a 404 that
    reaches nothing); invalid cases keep their generated id."""
    meta, params = case.meta, case.path_parameters
    if not params or "id" not in params or meta is None or not meta.generation.mode.is_positive:
        return
    ids = stored_ids.get(case.operation.path.split("/")[2], [])
    if ids:
        params["id"] = ids[len(str(params["id"])) % len(ids)]


@schema.parametrize()
@FUZZ_SETTINGS
def test_fhir_api(case: schemathesis.Case, app, auth, guard, stored_ids, request) -> None:
    case.operation.schema.app = app  # this test's app (a fresh database), for any follow-up request
    _real_id(case, stored_ids)
    if case.operation.label in KNOWN_500S:
        request.applymarker(pytest.mark.xfail(reason=KNOWN_500S[case.operation.label], strict=False))
    guard(lambda: case.call_and_validate(headers=auth, app=app, checks=CHECKS))
