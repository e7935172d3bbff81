"""A clinic patient as a US Core Patient, and back.

Identifiers: our business identifier (``use: usual``), the clinic MRN (``use: official``, type MR,
system ``<base URI>/mrn``) and each EHR identifier of the record as given. See
docs/mappings.md (patient).

No ``generalPractitioner`` (mapping revision 2, item 3): in R4 it is the patient's primary care
provider, and the clinic records none. ``referring_practitioner_id`` is the referring psychiatrist,
who is the ServiceRequest's ``requester`` and a CareTeam participant (role REF) instead.
Inbound, a ``generalPractitioner`` that is one of our Practitioners is still read as the referrer:
the fallback for referrals whose ServiceRequest names no requester.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from mappings._identity import (
    first_telecom,
    other_identifiers,
    own_id,
    person_meta,
    person_status,
    resolve_reference,
)
from mappings.context import MappingContext
from mappings.datatypes import business_identifier, fhir_id, human_name, name_from_fhir
from mappings.terminology import IDENTIFIER_TYPE_MR

__all__ = ["PROFILE", "from_fhir", "mrn_system", "to_fhir"]

#: US Core Patient (STU 6.1): needs identifier (system + value), name and gender, always present here
PROFILE = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient"
COLLECTION = "patients"
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def mrn_system(ctx: MappingContext) -> str:
    """The identifier system of the clinic's MRNs."""
    return f"{ctx.base_uri.rstrip('/')}/mrn"


def _identifiers(record: Mapping[str, Any], ctx: MappingContext) -> list[dict[str, Any]]:
    mrn = {"use": "official", "type": {"coding": [IDENTIFIER_TYPE_MR.coding()], "text": "MRN"},
           "system": mrn_system(ctx), "value": record["mrn"]}
    ehr = [{"system": i["system"], "value": i["value"]} for i in record.get("identifiers") or ()]
    return [business_identifier(ctx.base_uri, COLLECTION, record["id"]), mrn, *ehr]


def _telecom(record: Mapping[str, Any]) -> list[dict[str, str]]:
    # no ``use``: the clinic does not record whether a number is home, work or mobile
    return [{"system": system, "value": record[key]} for system, key in (("phone", "phone"), ("email", "email"))
            if record.get(key)]


def to_fhir(record: Mapping[str, Any], ctx: MappingContext) -> dict[str, Any]:
    """The Patient of a clinic patient record (weight and height are Observations, not here)."""
    status = record.get("status", "active")
    out: dict[str, Any] = {
        "resourceType": "Patient",
        "id": fhir_id(ctx.base_uri, "Patient", COLLECTION, record["id"]),
        "meta": person_meta(ctx, status, PROFILE),
        "identifier": _identifiers(record, ctx),
        "active": status == "active",
        "name": [human_name(record["name"])],
    }
    contact = _telecom(record)
    if contact:
        out["telecom"] = contact
    out["gender"] = record["sex"]  # the clinic's sex values are exactly AdministrativeGender's codes
    out["birthDate"] = record["birth_date"]
    return out


def _is_mr(identifier: Mapping[str, Any]) -> bool:
    codings = (identifier.get("type") or {}).get("coding") or ()
    return any(c.get("system") == IDENTIFIER_TYPE_MR.system and c.get("code") == IDENTIFIER_TYPE_MR.code
               for c in codings)


def _mrn(identifiers: list[Mapping[str, Any]], ctx: MappingContext) -> str:
    """Ours (MR type, our mrn system) first, else the first MR-typed identifier (an EHR's MRN)."""
    mr = [i for i in identifiers if _is_mr(i) and i.get("value")]
    ours = [i for i in mr if i.get("system") == mrn_system(ctx)]
    if not mr:
        raise ValueError("mrn: the Patient has no identifier of type MR (medical record number)")
    return str((ours or mr)[0]["value"])


def _other_identifiers(identifiers: list[Mapping[str, Any]], ctx: MappingContext) -> list[dict[str, str]]:
    return other_identifiers(identifiers, {business_identifier(ctx.base_uri, COLLECTION, "")["system"],
                                           mrn_system(ctx)})


def _birth_date(resource: Mapping[str, Any]) -> str:
    value = resource.get("birthDate")
    if not value or not _DATE.fullmatch(value):
        raise ValueError(f"birth_date: the Patient has no full birthDate (YYYY-MM-DD), got {value!r}")
    return str(value)


def from_fhir(resource: Mapping[str, Any], ctx: MappingContext) -> dict[str, Any]:
    """A clinic patient record from a Patient.

    ``referring_practitioner_id`` is set only when a ``generalPractitioner`` references one of our
    Practitioners (see ``mappings._identity``); other general practitioners are not clinic records.
    It is only the fallback referrer (``service_request.from_fhir`` reads ``requester`` first), and
    our own Patients carry none: an update keeps the stored one (service/fhir/writes.py).

    :raises ValueError: naming the clinic field that cannot be filled (``mrn``, ``name``,
        ``birth_date``, ``sex``).
    """
    if resource.get("resourceType") != "Patient":
        raise ValueError(f"resourceType: expected Patient, not {resource.get('resourceType')!r}")
    identifiers = list(resource.get("identifier") or ())
    out: dict[str, Any] = {}
    clinic_id = own_id(identifiers, ctx, COLLECTION)
    if clinic_id:
        out["id"] = clinic_id
    out["mrn"] = _mrn(identifiers, ctx)
    name = name_from_fhir(resource.get("name"))
    if name is None:
        raise ValueError("name: the Patient has no name with a family name")
    out["name"], out["birth_date"] = name, _birth_date(resource)
    if not resource.get("gender"):
        raise ValueError("sex: the Patient has no gender")
    out["sex"] = resource["gender"]
    for key in ("phone", "email"):
        value = first_telecom(resource, key)
        if value:
            out[key] = value
    referrer = next(filter(None, (resolve_reference(r, ctx, "Practitioner", "practitioners")
                                  for r in resource.get("generalPractitioner") or ())), None)
    if referrer:
        out["referring_practitioner_id"] = referrer
    others = _other_identifiers(identifiers, ctx)
    if others:
        out["identifiers"] = others
    out["status"] = person_status(resource, ctx)
    return out
