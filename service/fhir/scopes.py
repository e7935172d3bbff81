"""SMART v2 system scopes: parse them and decide whether they allow a FHIR interaction. Pure, no IO.

Scope syntax (SMART App Launch v2, scopes-and-launch-context.html, "SMART's scopes are used to grant
access"): ``system/<ResourceType or *>.<permissions>`` where the permissions are letters of ``cruds``
in that order, each at most once:

==========  =======================  =============================================
letter      SMART v2 meaning         FHIR R4 interactions (http.html) it allows
==========  =======================  =============================================
``c``       create                   create (also conditional create)
``r``       read                     read, vread, history (instance and type)
``u``       update                   update (also conditional update)
``d``       delete                   delete
``s``       search                   search (GET and POST ``_search``)
==========  =======================  =============================================

SMART v1 scopes are accepted for older clients: ``.read`` = ``rs``, ``.write`` = ``cud``, ``.*`` =
``cruds`` (the v2 page's "Scopes for requesting FHIR resources", backwards compatibility). The bare
scope ``*`` is this service's operator scope (``ketamine-fhir token create --scope '*'``): it allows
everything, everywhere, except the audit trail (:data:`EXPLICIT_ONLY`: only ``system/AuditEvent.*``
scopes allow AuditEvent). Scope query parameters (``system/Observation.rs?category=...``) are not
supported and do not parse. Only ``system/`` scopes are used here: the service has no user or patient
launch context, so ``user/`` and ``patient/`` scopes do not parse either. Hence nothing is implied
between types either: a Medication (no patient's data, named by every dose of its product and lot)
needs ``system/Medication.rs`` or a wildcard like any type, not ``system/MedicationAdministration.rs``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "EXPLICIT_ONLY",
    "INTERACTIONS",
    "OPERATOR",
    "ScopeError",
    "SystemScope",
    "allows",
    "grant",
    "is_smart_scope",
    "parse_scope",
]

#: The operator scope: every interaction on every type (and every clinic API endpoint).
OPERATOR = "*"

#: Types that no wildcard grants, neither ``system/*.rs`` nor the operator ``*``: the audit trail
#: (issue 10) needs a scope naming it (``system/AuditEvent.rs``), so that a token made for an EHR's
#: clinical reads, or an operator token, cannot read who accessed what.
EXPLICIT_ONLY = frozenset({"AuditEvent"})

#: FHIR interaction -> the SMART v2 permission letter that allows it.
INTERACTIONS = {
    "read": "r",
    "vread": "r",
    "history": "r",
    "search": "s",
    "create": "c",
    "update": "u",
    "delete": "d",
}

_ORDER = "cruds"
_V1 = {"read": "rs", "write": "cud", "*": "cruds"}
_SCOPE = re.compile(r"^system/(?P<type>\*|[A-Z][A-Za-z]{1,63})\.(?P<perms>[a-z*]+)$")
_V2_PERMS = re.compile(r"^c?r?u?d?s?$")


class ScopeError(ValueError):
    """A scope string is not a SMART system scope this service understands."""


@dataclass(frozen=True)
class SystemScope:
    """One parsed ``system/`` scope: a resource type (``*`` for all) and its permission letters."""

    resource_type: str
    permissions: frozenset[str]

    def covers(self, resource_type: str) -> bool:
        return self.resource_type in ("*", resource_type)

    def __str__(self) -> str:
        return f"system/{self.resource_type}.{''.join(p for p in _ORDER if p in self.permissions)}"


def parse_scope(text: str) -> SystemScope:
    """Parse ``system/<Type|*>.<cruds subset>`` (or a v1 ``.read``/``.write``/``.*``).

    :raise ScopeError: for anything else, ``*`` included (check :data:`OPERATOR` first)
    """
    match = _SCOPE.match(text)
    if match is None:
        raise ScopeError(f"{text!r} is not a SMART system scope (system/<ResourceType or *>.<cruds>)")
    perms = match["perms"]
    if perms in _V1:
        perms = _V1[perms]
    elif not _V2_PERMS.match(perms):
        raise ScopeError(f"{text!r}: permissions are letters of 'cruds' in that order, each once")
    return SystemScope(match["type"], frozenset(perms))


def is_smart_scope(text: str) -> bool:
    """True for a SMART system scope this service understands (not for ``*``)."""
    try:
        parse_scope(text)
    except ScopeError:
        return False
    return True


def _parsed(scopes: Iterable[str]) -> list[SystemScope]:
    return [parse_scope(s) for s in scopes if is_smart_scope(s)]


def allows(scopes: Iterable[str], resource_type: str, interaction: str) -> bool:
    """Whether ``scopes`` allow ``interaction`` on ``resource_type``.

    Scopes that are not SMART system scopes (clinic API scopes such as ``clinic:read``) allow nothing
    here; ``*`` allows everything.

    :raise ValueError: for an interaction not in :data:`INTERACTIONS` (a programming error)
    """
    if interaction not in INTERACTIONS:
        raise ValueError(f"unknown FHIR interaction {interaction!r}; known: {', '.join(INTERACTIONS)}")
    scopes = list(scopes)
    letter = INTERACTIONS[interaction]
    if resource_type in EXPLICIT_ONLY:
        return any(s.resource_type == resource_type and letter in s.permissions for s in _parsed(scopes))
    if OPERATOR in scopes:
        return True
    return any(s.covers(resource_type) and letter in s.permissions for s in _parsed(scopes))


def grant(requested: Iterable[str], allowed: Iterable[str]) -> list[str]:
    """The scopes to grant: each requested scope cut down to what the allowed scopes permit.

    A requested ``system/Observation.cruds`` against an allowed ``system/*.rs`` is granted as
    ``system/Observation.rs``; a requested ``system/*.rs`` needs an allowed ``system/*`` scope (a
    per-type grant cannot stand in for a wildcard). Requested scopes come back in v2 form, in the
    order asked; ones that keep no permission are dropped (SMART: the server may grant fewer scopes
    than requested and says which in the token response's ``scope``).

    :raise ScopeError: when a requested scope does not parse
    """
    allowed_scopes = _parsed(allowed)
    granted: list[str] = []
    for text in requested:
        wanted = parse_scope(text)
        perms: set[str] = set()
        for have in allowed_scopes:
            wildcard = have.resource_type == "*" and wanted.resource_type not in EXPLICIT_ONLY
            if wildcard or have.resource_type == wanted.resource_type:
                perms |= have.permissions
        kept = SystemScope(wanted.resource_type, frozenset(wanted.permissions & perms))
        if kept.permissions and str(kept) not in granted:
            granted.append(str(kept))
    return granted
