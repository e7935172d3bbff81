"""The search parameters each emitted resource type supports: the one registry that the index,
the parser and the CapabilityStatement read (R4 search.html, searchparameter-registry.html).

A parameter's ``paths`` are simple dotted paths into our own JSON (we know the shapes the
mappings emit); a path step over a list visits every item. ``targets`` restricts a reference
parameter to those resource types (``patient`` is ``subject`` where it points at a Patient).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PARAM_TYPES", "SEARCH_PARAMS", "SearchParam"]

#: the R4 search parameter types we index
PARAM_TYPES = ("token", "string", "date", "reference", "quantity", "uri")

_SP = "http://hl7.org/fhir/SearchParameter/"


@dataclass(frozen=True)
class SearchParam:
    """One search parameter of one resource type.

    :param name: the R4 name (``birthdate``, ``effective-time``)
    :param type: one of ``PARAM_TYPES``
    :param paths: dotted paths into the resource whose values the index holds
    :param targets: reference parameters: the resource types they may point at
    :param definition: canonical URL of the R4 SearchParameter, for the CapabilityStatement
    """

    name: str
    type: str
    paths: tuple[str, ...]
    targets: tuple[str, ...] = ()
    definition: str | None = None


def _p(name: str, type_: str, paths: str, definition: str, targets: str = "") -> SearchParam:
    return SearchParam(name, type_, tuple(paths.split()), tuple(targets.split()), _SP + definition)


def _common(has_identifier: str | None) -> list[SearchParam]:
    """``_id`` and ``_lastUpdated`` (every type), ``identifier`` where the type has one."""
    out = [_p("_id", "token", "id", "Resource-id"),
           _p("_lastUpdated", "date", "meta.lastUpdated", "Resource-lastUpdated")]
    if has_identifier:
        out.append(_p("identifier", "token", "identifier", has_identifier))
    return out


_PATIENT = "Patient"
_SUBJECT = "Patient Group"


def _registry() -> dict[str, dict[str, SearchParam]]:
    by_type: dict[str, list[SearchParam]] = {
        "Patient": [*_common("Patient-identifier"),
                    _p("name", "string", "name", "Patient-name"),
                    _p("family", "string", "name.family", "individual-family"),
                    _p("given", "string", "name.given", "individual-given"),
                    _p("birthdate", "date", "birthDate", "individual-birthdate"),
                    _p("gender", "token", "gender", "individual-gender")],
        "Encounter": [*_common("clinical-identifier"),
                      _p("patient", "reference", "subject", "clinical-patient", _PATIENT),
                      _p("subject", "reference", "subject", "Encounter-subject", _SUBJECT),
                      _p("date", "date", "period", "clinical-date"),
                      _p("status", "token", "status", "Encounter-status"),
                      _p("class", "token", "class", "Encounter-class")],
        "Procedure": [*_common("clinical-identifier"),
                      _p("patient", "reference", "subject", "clinical-patient", _PATIENT),
                      _p("date", "date", "performedDateTime performedPeriod", "clinical-date"),
                      _p("code", "token", "code", "clinical-code"),
                      _p("status", "token", "status", "Procedure-status"),
                      _p("encounter", "reference", "encounter", "clinical-encounter", "Encounter")],
        "MedicationAdministration": [
            *_common("medications-identifier"),
            _p("patient", "reference", "subject", "clinical-patient", _PATIENT),
            _p("effective-time", "date", "effectiveDateTime effectivePeriod",
               "MedicationAdministration-effective-time"),
            _p("status", "token", "status", "medications-status"),
            _p("context", "reference", "context", "MedicationAdministration-context", "Encounter EpisodeOfCare"),
            # the medication's code: inline, or on the contained Medication that medicationReference names
            _p("code", "token", "medicationCodeableConcept contained.code", "medications-code")],
        "Observation": [*_common("clinical-identifier"),
                        _p("patient", "reference", "subject", "clinical-patient", _PATIENT),
                        _p("subject", "reference", "subject", "Observation-subject", "Patient Group Device Location"),
                        _p("code", "token", "code", "clinical-code"),
                        _p("category", "token", "category", "Observation-category"),
                        _p("date", "date", "effectiveDateTime effectivePeriod effectiveInstant", "clinical-date"),
                        _p("encounter", "reference", "encounter", "clinical-encounter", "Encounter"),
                        # scores are valueInteger: searched as numbers without a unit
                        _p("value-quantity", "quantity", "valueQuantity valueInteger",
                           "Observation-value-quantity")],
        "ServiceRequest": [*_common("clinical-identifier"),
                           _p("patient", "reference", "subject", "clinical-patient", _PATIENT),
                           _p("subject", "reference", "subject", "ServiceRequest-subject",
                              "Patient Group Device Location"),
                           _p("status", "token", "status", "ServiceRequest-status"),
                           _p("code", "token", "code", "clinical-code"),
                           _p("authored", "date", "authoredOn", "ServiceRequest-authored"),
                           _p("requester", "reference", "requester", "ServiceRequest-requester",
                              "Practitioner PractitionerRole Organization Patient RelatedPerson Device")],
        "CarePlan": [*_common("clinical-identifier"),
                     _p("patient", "reference", "subject", "clinical-patient", _PATIENT),
                     _p("subject", "reference", "subject", "CarePlan-subject", _SUBJECT),
                     _p("status", "token", "status", "CarePlan-status"),
                     _p("date", "date", "period", "clinical-date"),
                     _p("category", "token", "category", "CarePlan-category")],
        "Condition": [*_common("clinical-identifier"),
                      _p("patient", "reference", "subject", "clinical-patient", _PATIENT),
                      _p("subject", "reference", "subject", "Condition-subject", _SUBJECT),
                      _p("code", "token", "code", "clinical-code"),
                      _p("recorded-date", "date", "recordedDate", "Condition-recorded-date")],
        "Practitioner": [*_common("Practitioner-identifier"),
                         _p("name", "string", "name", "Practitioner-name"),
                         _p("family", "string", "name.family", "individual-family"),
                         _p("given", "string", "name.given", "individual-given")],
        "PractitionerRole": [*_common("PractitionerRole-identifier"),
                             _p("practitioner", "reference", "practitioner", "PractitionerRole-practitioner",
                                "Practitioner"),
                             _p("role", "token", "code", "PractitionerRole-role")],
        "AdverseEvent": [*_common(None),
                         _p("subject", "reference", "subject", "AdverseEvent-subject",
                            "Patient Group Practitioner RelatedPerson"),
                         _p("date", "date", "date", "AdverseEvent-date"),
                         _p("event", "token", "event", "AdverseEvent-event"),
                         _p("seriousness", "token", "seriousness", "AdverseEvent-seriousness")],
        "Provenance": [*_common(None),
                       _p("target", "reference", "target", "Provenance-target", "Resource"),
                       _p("recorded", "date", "recorded", "Provenance-recorded"),
                       _p("patient", "reference", "target", "Provenance-patient", _PATIENT)],
        "Organization": [*_common("Organization-identifier"),
                         _p("name", "string", "name", "Organization-name")],
    }
    return {rtype: {p.name: p for p in params} for rtype, params in by_type.items()}


#: resource type -> parameter name -> parameter (every type in mappings.resources.MAPPED_TYPES)
SEARCH_PARAMS: dict[str, dict[str, SearchParam]] = _registry()
