"""One Provenance per clinic write: which resources the write produced, when, and who is
responsible for them (US Core Provenance): the clinic (its Organization) as author, or, for a
write by an EHR over FHIR, that EHR's client (issue 10).

FHIR R4 Provenance has no ``identifier`` element, so, unlike every other resource here, it
carries no business identifier: its id alone (from ``("provenance", "<collection>/<id>/<version>")``)
makes a re-sync of the same write idempotent. See docs/mappings.md (provenance).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from mappings.context import MappingContext
from mappings.datatypes import codeable, fhir_id
from mappings.organization import clinic_reference
from mappings.terminology import PROVENANCE_AGENT_AUTHOR

__all__ = ["PROFILE", "provenance_key", "to_fhir"]

#: US Core Provenance (STU 6.1): needs target, recorded and agent.who, always present here
PROFILE = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-provenance"
# FHIR instant: seconds and a time zone are required
_INSTANT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})")
_TARGET = re.compile(r"[A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64}")


def provenance_key(collection: str, record_id: str, version: int | str) -> str:
    """The clinic key of the Provenance of one write: ``<collection>/<id>/<version>``."""
    return f"{collection}/{record_id}/{version}"


def _target(target: str | Mapping[str, Any]) -> dict[str, str]:
    ref = target if isinstance(target, str) else target.get("reference", "")
    if not _TARGET.fullmatch(ref):
        raise ValueError(f"targets: {ref!r} is not a relative reference Type/id")
    return {"reference": ref}


def _author(agent: Mapping[str, Any] | None, ctx: MappingContext) -> dict[str, Any]:
    """The author: the EHR client that wrote over FHIR (``agent``: its identifier system, value and
    display name, under the clinic's base URI), else the clinic itself."""
    if not agent or not agent.get("value"):
        return clinic_reference(ctx)
    system = str(agent["system"])
    if not system.startswith(ctx.base_uri.rstrip("/") + "/"):
        raise ValueError(f"agent.system: {system!r} is not under the clinic base URI")
    who: dict[str, Any] = {"identifier": {"system": system, "value": str(agent["value"])}}
    if agent.get("display"):
        who["display"] = str(agent["display"])
    return who


def to_fhir(collection: str, record: Mapping[str, Any], meta: Mapping[str, Any],
            targets: Iterable[str | Mapping[str, Any]], ctx: MappingContext,
            agent: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The Provenance of one write of a clinic record.

    :param meta: the record's bookkeeping after the write: ``version`` and ``updated_at`` (an
        instant with its offset), which becomes ``recorded``.
    :param targets: the resources the write produced or changed, as ``"Type/id"`` or
        ``{"reference": "Type/id"}``.
    :param agent: who wrote, when not the clinic: ``{"system", "value", "display"}`` of an EHR's
        SMART client or token (``<base>/smart-clients``, ``<base>/api-tokens``) or a pulling
        destination (``<base>/sync-destinations``); it becomes the author.
    :raises ValueError: no target, or ``updated_at`` is not a FHIR instant.
    """
    refs = [_target(t) for t in targets]
    if not refs:
        raise ValueError("targets: a Provenance needs at least one target")
    recorded = str(meta["updated_at"])
    if not _INSTANT.fullmatch(recorded):
        raise ValueError(f"meta.updated_at: {recorded!r} is not an instant with seconds and a UTC offset")
    key = provenance_key(collection, record["id"], meta["version"])
    return {
        "resourceType": "Provenance",
        "id": fhir_id(ctx.base_uri, "Provenance", "provenance", key),
        "meta": {"profile": [PROFILE]},
        "target": refs,
        "recorded": recorded,
        "agent": [{"type": codeable([PROVENANCE_AGENT_AUTHOR], "Author"), "who": _author(agent, ctx)}],
    }
