"""Guard against the example base URI (mapping revision 2, item 15).

Every FHIR id is a uuid5 of the clinic's base URI and the record id, so two clinics left on the
example default mint the same ids for their own ``pt-0001``: an EHR receiving from both would merge
two patients. ``serve`` warns at every start while the base is the default, and refuses to start
when the database already holds resources minted under another base (the operator forgot to set
``KETAMINE_FHIR_BASE_URI`` on this start): serving them under the default would mint new ids for
the same records.
"""

from __future__ import annotations

import json

from sqlalchemy import select
from sqlalchemy.orm import Session

from service import models
from service.config import DEFAULT_BASE_URI, Settings

__all__ = ["DEFAULT_BASE_URI", "start_problem", "stored_base_uri"]

WARNING = (f"WARNING: KETAMINE_FHIR_BASE_URI is the example default ({DEFAULT_BASE_URI}). FHIR ids are "
           "derived from it: two clinics on the default mint colliding ids. Set it to this clinic's own "
           "base before any data leaves the service.")


def stored_base_uri(db: Session) -> str | None:
    """The base URI the stored resources were minted under: from a stored patient's (else
    practitioner's) own business identifier, ``<base>/<collection>``; None for an empty store."""
    for collection in ("patients", "practitioners"):
        content = db.scalar(select(models.FhirResource.content)
                            .where(models.FhirResource.source_collection == collection).limit(1))
        if content is None:
            continue
        for ident in json.loads(content).get("identifier") or ():
            system = ident.get("system") or ""
            if ident.get("use") == "usual" and system.endswith(f"/{collection}"):
                return system.removesuffix(f"/{collection}")
    return None


def start_problem(settings: Settings, db: Session) -> str | None:
    """Why ``serve`` must not start (a message for the operator), or None."""
    if settings.base_uri != DEFAULT_BASE_URI:
        return None
    stored = stored_base_uri(db)
    if stored is None or stored == DEFAULT_BASE_URI:
        return None
    return (f"The database holds resources made with KETAMINE_FHIR_BASE_URI={stored}, but this start uses the "
            f"example default ({DEFAULT_BASE_URI}), which would give the same records new FHIR ids. Set "
            f"KETAMINE_FHIR_BASE_URI={stored} and start again.")
