"""The CapabilityStatement at GET /fhir/metadata: what this server really supports, and nothing more.

Built from the same registries the handlers use (the resource types, their interactions, the
search parameters), so a test can hold it against the routes (R4 capabilitystatement.html).
"""

from __future__ import annotations

from typing import Any

from mappings.resources import MAPPED_TYPES

__all__ = ["INTERACTIONS", "SYSTEM_INTERACTIONS", "capability_statement"]

#: type-level and instance-level interactions every served type supports
INTERACTIONS = ("read", "vread", "history-instance", "history-type")


#: whole-system interactions (R4 http.html#transaction): POST /fhir with a Bundle
SYSTEM_INTERACTIONS = ("transaction", "batch")

#: types EHRs may write (service/fhir/writes.py): create, update, conditional create/update on identifier
WRITABLE_TYPES = ("Patient", "Practitioner", "ServiceRequest")


def _resource(resource_type: str, search_params: dict[str, Any]) -> dict[str, Any]:
    writable = resource_type in WRITABLE_TYPES
    interactions = list(INTERACTIONS) + (["search-type"] if search_params else []) + \
        (["create", "update"] if writable else [])
    out: dict[str, Any] = {
        "type": resource_type,
        "interaction": [{"code": code} for code in interactions],
        "versioning": "versioned",
        "readHistory": True,
        "updateCreate": False,
        "conditionalCreate": writable,
        "conditionalUpdate": writable,
        "conditionalDelete": "not-supported",
    }
    if search_params:
        out["searchParam"] = [{"name": name, "type": p.type, **({"definition": p.definition} if p.definition else {})}
                              for name, p in search_params.items()]
    return out


def _audit_resource() -> dict[str, Any]:
    """AuditEvent (service/fhir/audit_views.py): read and search only, behind system/AuditEvent.rs."""
    from service.fhir.audit_views import SEARCH_PARAMS as AUDIT_PARAMS  # late: audit_views imports the views

    return {
        "type": "AuditEvent",
        "documentation": "The audit trail of every access to patient data; append-only. Needs the scope "
                         "system/AuditEvent.rs (no wildcard scope grants it)",
        "interaction": [{"code": "read"}, {"code": "search-type"}],
        "versioning": "no-version",
        "readHistory": False,
        "updateCreate": False,
        "conditionalCreate": False,
        "conditionalUpdate": False,
        "conditionalDelete": "not-supported",
        "searchParam": [{"name": name, "type": kind} for name, kind in AUDIT_PARAMS.items()],
    }


def capability_statement(base_url: str, software_version: str, search_params: dict[str, dict[str, Any]],
                         token_url: str | None, date: str) -> dict[str, Any]:
    """The statement for a server at ``base_url``; ``search_params`` per type (may be empty)."""
    rest: dict[str, Any] = {
        "mode": "server",
        "resource": [*(_resource(t, search_params.get(t, {})) for t in MAPPED_TYPES), _audit_resource()],
        # system interactions: POST [base] with a transaction or batch Bundle (service/fhir/bundles.py)
        "interaction": [{"code": code} for code in SYSTEM_INTERACTIONS],
    }
    if token_url:
        from service.fhir.smart import security_component

        rest["security"] = security_component(token_url)
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": date,
        "kind": "instance",
        "software": {"name": "ketamine-fhir", "version": software_version},
        "implementation": {"description": "ketamine-fhir FHIR R4 API", "url": base_url},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "rest": [rest],
    }
