"""The drug of a clinic administration -> FHIR R4 Medication (US Core Medication): one per product and lot.

A MedicationAdministration names its drug by reference to this resource (mapping revision 2, item 9),
not through a contained Medication: a contained resource cannot be searched or referenced from
outside, so ``MedicationAdministration?code=`` could not find every dose, and the same lot given to
many patients was a separate copy in each dose.

One Medication stands for one product in one lot (``batch.lotNumber``, lot tracing for recalls and
the Spravato REMS form, reference 9.3); a dose without a lot names the product alone. Its id and
business identifier come from everything its content is made of (drug, product text, kit NDC, lot),
so the content of one id never changes: doses of many patients share it without ever making a new
version. It belongs to no patient (Medication is not in the R4 Patient compartment) and carries no
patient data, so the service stores it once and never retires it (service/fhir_store.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from mappings.context import MappingContext
from mappings.datatypes import business_identifier, codeable, fhir_id, reference
from mappings.terminology import (
    ATC_ESKETAMINE,
    ATC_KETAMINE,
    ESKETAMINE,
    KETAMINE,
    SPRAVATO,
    SPRAVATO_KIT_NDC,
    Code,
)

__all__ = ["COLLECTION", "PROFILE", "medication_concept", "medication_key", "medication_reference", "to_fhir"]

#: US Core Medication (STU 6.1): its one mandatory element, ``code``, is always present
PROFILE = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-medication"
#: the business-identifier collection of Medications (``<base>/medications``)
COLLECTION = "medications"

Record = Mapping[str, Any]


def _kit(record: Record) -> Code | None:
    """The Spravato kit NDC of a 2- or 3-device esketamine dose (reference 2.2)."""
    if record["drug"] != "esketamine":
        return None
    return SPRAVATO_KIT_NDC.get(record.get("device_count") or 0)


def medication_concept(record: Record) -> dict[str, Any]:
    """RxNorm ketamine (6130), or esketamine nasal spray (2201623) plus Spravato (2201625) and the
    Spravato kit NDC for a 2- or 3-device dose (reference sections 0 and 2.2), then the WHO ATC
    classification (N01AX03 ketamine, N06AX27 esketamine: section 12.8); text names the product."""
    product = record.get("product")
    if record["drug"] == "ketamine":
        codes: list[Code | None] = [KETAMINE, ATC_KETAMINE]
        text = "Ketamine"
    else:
        spravato = "spravato" in (product or "").lower()
        codes = [ESKETAMINE, SPRAVATO if spravato else None, _kit(record), ATC_ESKETAMINE]
        text = "Esketamine nasal spray"
    return codeable(codes, f"{text} ({product})" if product else text)


def medication_key(record: Record) -> str:
    """``<drug>/<kit NDC>/<product>/<lot>`` (empty parts stay empty; each part percent-encoded, so
    a ``/`` in a product name cannot make two products one key): every input of the content."""
    kit = _kit(record)
    parts = (record["drug"], kit.code if kit else "", record.get("product") or "", record.get("lot_number") or "")
    return "/".join(quote(part, safe=" ") for part in parts)


def to_fhir(record: Record, ctx: MappingContext) -> dict[str, Any]:
    """The Medication an administration's dose was drawn from."""
    key = medication_key(record)
    out: dict[str, Any] = {
        "resourceType": "Medication",
        "id": fhir_id(ctx.base_uri, "Medication", COLLECTION, key),
        "meta": {"profile": [PROFILE]},
        "identifier": [business_identifier(ctx.base_uri, COLLECTION, key)],
        "code": medication_concept(record),
    }
    if record.get("lot_number"):
        out["batch"] = {"lotNumber": record["lot_number"]}
    return out


def medication_reference(record: Record, ctx: MappingContext) -> dict[str, Any]:
    """``MedicationAdministration.medicationReference``: the Medication, its identifier, and the
    product and lot as display (what a receiver that does not take Medication resources still reads)."""
    display = medication_concept(record)["text"]
    if record.get("lot_number"):
        display += f", lot {record['lot_number']}"
    return reference(ctx.base_uri, "Medication", COLLECTION, medication_key(record), display)
