"""FHIR transaction Bundles of mapped resources: idempotent conditional updates on identifiers."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

__all__ = ["business_identifier_of", "conditional_url", "transaction_bundle"]


def business_identifier_of(resource: dict[str, Any]) -> dict[str, str] | None:
    """The resource's business identifier (``use: usual``): what conditional writes match on."""
    found = resource.get("identifier", [])
    for ident in [found] if isinstance(found, dict) else found:  # AdverseEvent.identifier is 0..1
        if ident.get("use") == "usual" and ident.get("system") and ident.get("value"):
            return ident
    return None  # R4 Provenance has no identifier element


def _request(resource: dict[str, Any]) -> tuple[str, bool]:
    """The entry's PUT url, and whether the server assigns the id (a conditional update)."""
    url = conditional_url(resource)
    if url is None:  # sent by its own (deterministic) id: a re-send updates it
        return f"{resource['resourceType']}/{resource['id']}", False
    return url, True


#: R4 defines no ``identifier`` search parameter for these: a server ignores the criterion and a
#: "conditional" update creates a copy every time (seen on the peer server), so they go by id
NOT_SEARCHABLE_BY_IDENTIFIER = frozenset({"AdverseEvent", "Provenance"})


def conditional_url(resource: dict[str, Any]) -> str | None:
    """``Type?identifier=system|value`` on the business identifier; None for the types R4 cannot
    search by identifier (sent as ``PUT Type/<our id>``, which is idempotent too)."""
    ident = business_identifier_of(resource)
    if ident is None or resource["resourceType"] in NOT_SEARCHABLE_BY_IDENTIFIER:
        return None
    query = f"{quote(ident['system'], safe=':/')}|{quote(ident['value'], safe='')}"
    return f"{resource['resourceType']}?identifier={query}"


def _rewrite(value: Any, ids: set[str]) -> Any:
    """References to resources inside the bundle become their ``urn:uuid:`` fullUrls."""
    if isinstance(value, dict):
        out = {}
        for key, child in value.items():
            if key == "reference" and isinstance(child, str) and "/" in child:
                target = child.split("/", 1)[1]
                out[key] = f"urn:uuid:{target}" if target in ids else child
            else:
                out[key] = _rewrite(child, ids)
        return out
    if isinstance(value, list):
        return [_rewrite(v, ids) for v in value]
    return value


def transaction_bundle(resources: Iterable[dict[str, Any]], bundle_type: str = "transaction") -> dict[str, Any]:
    """A transaction (or batch) Bundle: each resource as ``PUT Type?identifier=system|value``
    (resources without a business identifier, i.e. Provenance, as ``PUT Type/id``).

    Conditional updates on the business identifier create the resource once and update it on a
    re-run, so sending the same Bundle twice never duplicates. Inside the Bundle, references
    between its resources are ``urn:uuid:`` fullUrls (our resource ids are UUIDs), which the
    receiving server resolves to the ids it assigns.
    """
    resources = list(resources)
    ids = {r["id"] for r in resources}
    entries = []
    for resource in resources:
        url, conditional = _request(resource)
        body = _rewrite(copy.deepcopy(resource), ids)
        if conditional:
            body.pop("id")  # the receiving server keeps its own ids
        meta = {k: v for k, v in body.pop("meta", {}).items() if k not in ("versionId", "lastUpdated")}
        if meta:
            body["meta"] = meta
        entries.append({"fullUrl": f"urn:uuid:{resource['id']}", "resource": body,
                        "request": {"method": "PUT", "url": url}})
    return {"resourceType": "Bundle", "type": bundle_type, "entry": entries}
