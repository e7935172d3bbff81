"""One Provenance per clinic write: which resources the write produced, when, and who is
responsible for them (US Core Provenance), in two agents (mapping revision 2, item 14):

- the **author** (US Core ProvenanceAuthor, ``provenance-participant-type#author``): the clinician
  the record names as having done what it records (``recorded_by``), ``onBehalfOf`` the clinic
  Organization (US Core provenance-1); for a write by an EHR over FHIR, that EHR's client (issue
  10); else the clinic Organization itself;
- the **transmitter** (US Core ProvenanceTransmitter, US Core's own
  ``us-core-provenance-participant-type#transmitter``): the clinic Organization, whose service
  sends the copy. No Device stands for the service: one would have to be invented, and US Core
  lets the Organization transmit.

FHIR R4 Provenance has no ``identifier`` element, so, unlike every other resource here, it
carries no business identifier: its id alone (from ``("provenance", "<collection>/<id>/<version>")``)
makes a re-sync of the same write idempotent. See docs/mappings.md (provenance).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from mappings.context import MappingContext
from mappings.datatypes import codeable, fhir_id, reference
from mappings.organization import clinic_reference
from mappings.terminology import PROVENANCE_AGENT_AUTHOR, PROVENANCE_AGENT_TRANSMITTER

__all__ = ["PROFILE", "provenance_key", "recorded_by", "to_fhir"]

#: US Core Provenance (STU 6.1): needs target, recorded and agent.who, always present here
PROFILE = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-provenance"
# FHIR instant: seconds and a time zone are required
_INSTANT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})")
_TARGET = re.compile(r"[A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64}")
#: which of a session's performers answers for what it records: its doses are given by the
#: administering clinician, its vital signs taken by the monitoring one
_SESSION_FUNCTIONS = {
    "sessions": ("administering", "supervising", "monitoring", "prescriber", "psychotherapist"),
    "administrations": ("administering", "supervising", "prescriber"),
    "vitals": ("monitoring", "administering", "supervising"),
}


def provenance_key(collection: str, record_id: str, version: int | str) -> str:
    """The clinic key of the Provenance of one write: ``<collection>/<id>/<version>``."""
    return f"{collection}/{record_id}/{version}"


def _target(target: str | Mapping[str, Any]) -> dict[str, str]:
    ref = target if isinstance(target, str) else target.get("reference", "")
    if not _TARGET.fullmatch(ref):
        raise ValueError(f"targets: {ref!r} is not a relative reference Type/id")
    return {"reference": ref}


def recorded_by(collection: str, record: Mapping[str, Any], ctx: MappingContext) -> str | None:
    """The practitioner id of the clinician a record names for what it records: a dose's
    ``performer_id``, a score's ``rater_id``, else the session's performer of the first fitting
    function (``_SESSION_FUNCTIONS``); None for records naming no clinician of the clinic (patients,
    practitioners, courses; a referral's referrer works for another organization)."""
    own = {"administrations": "performer_id", "observations": "rater_id"}.get(collection)
    if own and record.get(own):
        return str(record[own])
    if collection not in _SESSION_FUNCTIONS:
        return None
    session = record if collection == "sessions" else (
        ctx.lookup("sessions", record["session_id"]) if record.get("session_id") else None)
    performers = (session or {}).get("performers") or ()
    for function in _SESSION_FUNCTIONS[collection]:
        found = next((p["practitioner_id"] for p in performers if p["function"] == function), None)
        if found:
            return str(found)
    return None


def _author(collection: str, record: Mapping[str, Any], agent: Mapping[str, Any] | None,
            ctx: MappingContext) -> dict[str, Any]:
    """The author agent: the EHR client that wrote over FHIR (``agent``: its identifier system,
    value and display name, under the clinic's base URI), else the clinician the record names (on
    behalf of the clinic), else the clinic itself."""
    out: dict[str, Any] = {"type": codeable([PROVENANCE_AGENT_AUTHOR], "Author")}
    if not agent or not agent.get("value"):
        clinician = recorded_by(collection, record, ctx)
        if clinician is None:
            return {**out, "who": clinic_reference(ctx)}
        return {**out, "who": reference(ctx.base_uri, "Practitioner", "practitioners", clinician),
                "onBehalfOf": clinic_reference(ctx)}
    system = str(agent["system"])
    if not system.startswith(ctx.base_uri.rstrip("/") + "/"):
        raise ValueError(f"agent.system: {system!r} is not under the clinic base URI")
    who: dict[str, Any] = {"identifier": {"system": system, "value": str(agent["value"])}}
    if agent.get("display"):
        who["display"] = str(agent["display"])
    return {**out, "who": who}


def _transmitter(ctx: MappingContext) -> dict[str, Any]:
    """The transmitter agent: the clinic, whose service sends the copy."""
    return {"type": codeable([PROVENANCE_AGENT_TRANSMITTER], "Transmitter"), "who": clinic_reference(ctx)}


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
        "agent": [_author(collection, record, agent, ctx), _transmitter(ctx)],
    }
