"""FHIR errors, raised anywhere under /fhir and turned into an OperationOutcome in one place.

Each error carries the HTTP status and the R4 issue type (``IssueType`` value set,
hl7.org/fhir/R4/valueset-issue-type.html); the blueprint's handler answers
``{"resourceType": "OperationOutcome", "issue": [...]}`` with that status.
"""

from __future__ import annotations

from typing import Any

__all__ = ["FhirError", "operation_outcome"]


def operation_outcome(severity: str, code: str, diagnostics: str,
                      expression: list[str] | None = None) -> dict[str, Any]:
    """An OperationOutcome with one issue."""
    issue: dict[str, Any] = {"severity": severity, "code": code, "diagnostics": diagnostics}
    if expression:
        issue["expression"] = expression
    return {"resourceType": "OperationOutcome", "issue": [issue]}


class FhirError(Exception):
    """An error answered as an OperationOutcome.

    :param status: HTTP status (400, 401, 403, 404, 405, 406, 409, 410, 412, 413, 415, 422)
    :param code: R4 issue type, e.g. ``invalid``, ``not-found``, ``deleted``, ``conflict``,
        ``not-supported``, ``security``, ``forbidden``, ``login``, ``too-costly``, ``processing``
    :param expression: FHIRPath-like locations of the problem (e.g. ``["Patient.birthDate"]``)
    """

    def __init__(self, status: int, code: str, diagnostics: str, expression: list[str] | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(diagnostics)
        self.status, self.code, self.diagnostics = status, code, diagnostics
        self.expression = expression
        self.headers = headers or {}

    def outcome(self) -> dict[str, Any]:
        return operation_outcome("error" if self.status < 500 else "fatal", self.code, self.diagnostics,
                                 self.expression)
