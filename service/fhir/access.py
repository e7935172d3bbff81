"""Per-request access control for /fhir: bearer token -> granted scopes -> allow, 401 or 403.

Two kinds of bearer token are accepted (issue 4, item 6):

* access tokens from the SMART token endpoint (:mod:`service.fhir.smart`), valid until they expire
  (<= 300 s) or their client is revoked;
* static tokens made with ``ketamine-fhir token create`` (:mod:`service.auth`), with SMART system
  scopes (``system/*.rs``) or the operator scope ``*``. A static token with only clinic API scopes
  (``clinic:read``) is a valid token without /fhir access: 403.

Errors follow RFC 6750 §3.1 as FHIR OperationOutcomes (R4 http.html: security errors are 401/403):
no, unknown, revoked or expired token -> 401 ``login`` with ``WWW-Authenticate: Bearer``; a valid
token whose scopes do not allow the interaction -> 403 ``forbidden``.
"""

from __future__ import annotations

from datetime import datetime

from flask import Request, g
from flask import request as current_request
from sqlalchemy import select
from sqlalchemy.orm import Session

from mappings.audit_event import Agent, agent_system
from service.audit import set_agent
from service.auth import token_name, token_scopes
from service.db import get_session
from service.fhir.outcomes import FhirError
from service.fhir.scopes import EXPLICIT_ONLY, INTERACTIONS, allows
from service.fhir.smart import hash_token, now
from service.models import SmartAccessToken, SmartClient

__all__ = ["WWW_AUTHENTICATE", "fhir_scopes", "require", "scopes_of_token"]

WWW_AUTHENTICATE = 'Bearer realm="ketamine-fhir"'


def _unauthorized(diagnostics: str) -> FhirError:
    return FhirError(401, "login", diagnostics, headers={"WWW-Authenticate": WWW_AUTHENTICATE})


def scopes_of_token(session: Session, secret: str, at: datetime) -> frozenset[str] | None:
    """The scopes of a bearer token (SMART access token or static token), or None if it is not valid at ``at``."""
    found = _identify(session, secret, at)
    return found[0] if found is not None else None


def _identify(session: Session, secret: str, at: datetime) -> tuple[frozenset[str], Agent] | None:
    """The scopes of a valid bearer token and who holds it (the audit trail's agent, service/audit.py)."""
    row = session.execute(
        select(SmartAccessToken.scopes, SmartAccessToken.expires_at, SmartClient.client_id, SmartClient.name)
        .join(SmartClient, SmartClient.client_id == SmartAccessToken.client_id)
        .where(SmartAccessToken.token_hash == hash_token(secret), SmartClient.revoked_at.is_(None))
    ).first()
    if row is not None:
        valid = row.expires_at > at
        return (frozenset(row.scopes.split()), Agent("smart-clients", row.client_id, row.name)) if valid else None
    static = token_scopes(session, secret, at)  # at: a static token's expiry is judged by the same clock
    if static is None:
        return None
    # by name, not by hash: a previous secret still in its rotation grace period names the same token
    name = token_name(session, secret, at)
    return frozenset(static), Agent("api-tokens", name, name)


def fhir_scopes(request: Request | None = None) -> frozenset[str]:
    """The scopes granted to this request's bearer token (remembered for the request).

    :raise FhirError: 401 ``login`` when the token is missing, unknown, revoked or expired
    """
    if "fhir_scopes" in g:
        return g.fhir_scopes
    req = request if request is not None else current_request
    scheme, _, secret = req.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise _unauthorized("this request needs Authorization: Bearer <token> (see /.well-known/smart-configuration)")
    found = _identify(get_session(), secret.strip(), now())
    if found is None:
        raise _unauthorized("the bearer token is unknown, revoked or expired")
    scopes, agent = found
    set_agent(agent)
    # the Provenance of this request's writes names the client (service/fhir_store.py, mappings/provenance.py)
    get_session().info["agent"] = {"system": agent_system(get_session().info["base_uri"], agent.kind),
                                   "value": agent.value, "display": agent.name}
    g.fhir_scopes = scopes
    return scopes


def require(resource_type: str, interaction: str) -> frozenset[str]:
    """Allow ``interaction`` on ``resource_type`` for this request, or raise; returns the scopes.

    ``interaction`` is one of ``read``, ``vread``, ``history``, ``search``, ``create``, ``update``,
    ``delete`` (see :data:`service.fhir.scopes.INTERACTIONS`).

    :raise FhirError: 401 (see :func:`fhir_scopes`); 403 ``forbidden`` when the scopes do not allow it
    """
    scopes = fhir_scopes()
    if not allows(scopes, resource_type, interaction):
        needed = f"system/{resource_type}.{INTERACTIONS[interaction]}"
        alternative = ("no wildcard grants it" if resource_type in EXPLICIT_ONLY
                       else f"or system/*.{INTERACTIONS[interaction]}")
        raise FhirError(403, "forbidden", f"{interaction} on {resource_type} needs the scope {needed} "
                                          f"({alternative}); granted: "
                                          f"{' '.join(sorted(scopes)) or 'none'}")
    return scopes
