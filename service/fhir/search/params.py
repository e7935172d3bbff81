"""The search parameters each emitted resource type supports: the one registry that the index,
the parser and the CapabilityStatement read (R4 search.html, searchparameter-registry.html).

A parameter's ``paths`` are simple dotted paths into our own JSON (we know the shapes the
mappings emit); a path step over a list visits every item. ``ref>path`` follows the reference at
``ref`` and reads ``path`` in the resource it points at (a dose's code is its Medication's).
``targets`` restricts a reference parameter to those resource types (``patient`` is ``subject``
where it points at a Patient).
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
    """``_id``, ``_lastUpdated`` and ``_security`` (every type), ``identifier`` where the type has one."""
    out = [_p("_id", "token", "id", "Resource-id"),
           _p("_lastUpdated", "date", "meta.lastUpdated", "Resource-lastUpdated"),
           _p("_security", "token", "meta.security", "Resource-security")]
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
            # the medication's code: inline, or on the Medication that medicationReference names (R4's
            # expression reads the inline code only; every dose names a Medication since revision 2)
            _p("code", "token", "medicationCodeableConcept medicationReference>code", "medications-code"),
            _p("medication", "reference", "medicationReference", "medications-medication", "Medication")],
        # US Core Medication: not patient data, one per product and lot (mappings/medication.py)
        "Medication": [*_common("Medication-identifier"),
                       _p("code", "token", "code", "medications-code"),
                       _p("lot-number", "token", "batch.lotNumber", "Medication-lot-number")],
        "Observation": [*_common("clinical-identifier"),
                        _p("patient", "reference", "subject", "clinical-patient", _PATIENT),
                        _p("subject", "reference", "subject", "Observation-subject", "Patient Group Device Location"),
                        _p("code", "token", "code", "clinical-code"),
                        _p("category", "token", "category", "Observation-category"),
                        _p("date", "date", "effectiveDateTime effectivePeriod effectiveInstant", "clinical-date"),
                        _p("encounter", "reference", "encounter", "clinical-encounter", "Encounter"),
                        # scores are valueInteger: searched as numbers without a unit
                        _p("value-quantity", "quantity", "valueQuantity valueInteger",
                           "Observation-value-quantity"),
                        # PHQ/GAD item answers are LOINC answer codes: code=44260-8&value-concept=LA6569-3
                        _p("value-concept", "token", "valueCodeableConcept", "Observation-value-concept"),
                        _p("has-member", "reference", "hasMember", "Observation-has-member",
                           "Observation MolecularSequence QuestionnaireResponse"),
                        _p("derived-from", "reference", "derivedFrom", "Observation-derived-from",
                           "DocumentReference ImagingStudy Media QuestionnaireResponse Observation MolecularSequence"),
                        _p("performer", "reference", "performer", "Observation-performer",
                           "Practitioner PractitionerRole Organization CareTeam Patient RelatedPerson")],
        "QuestionnaireResponse": [
            *_common("QuestionnaireResponse-identifier"),
            _p("patient", "reference", "subject", "QuestionnaireResponse-patient", _PATIENT),
            _p("subject", "reference", "subject", "QuestionnaireResponse-subject", "Resource"),
            _p("authored", "date", "authored", "QuestionnaireResponse-authored"),
            _p("status", "token", "status", "QuestionnaireResponse-status"),
            # a canonical (``<base>/Questionnaire/<instrument>``), indexed as the Questionnaire it names
            _p("questionnaire", "reference", "questionnaire", "QuestionnaireResponse-questionnaire", "Questionnaire"),
            _p("encounter", "reference", "encounter", "QuestionnaireResponse-encounter", "Encounter"),
            _p("author", "reference", "author", "QuestionnaireResponse-author",
               "Device Practitioner PractitionerRole Patient RelatedPerson Organization"),
            _p("source", "reference", "source", "QuestionnaireResponse-source",
               "Patient Practitioner PractitionerRole RelatedPerson")],
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
        # mapping revision 2: the course's care team (R4 CareTeam search parameters)
        "CareTeam": [*_common("clinical-identifier"),
                     _p("patient", "reference", "subject", "clinical-patient", _PATIENT),
                     _p("subject", "reference", "subject", "CareTeam-subject", _SUBJECT),
                     _p("status", "token", "status", "CareTeam-status"),
                     _p("date", "date", "period", "clinical-date"),
                     _p("category", "token", "category", "CareTeam-category"),
                     _p("participant", "reference", "participant.member", "CareTeam-participant",
                        "Practitioner Organization CareTeam Patient PractitionerRole RelatedPerson")],
        "Condition": [*_common("clinical-identifier"),
                      _p("patient", "reference", "subject", "clinical-patient", _PATIENT),
                      _p("subject", "reference", "subject", "Condition-subject", _SUBJECT),
                      _p("code", "token", "code", "clinical-code"),
                      _p("recorded-date", "date", "recordedDate", "Condition-recorded-date"),
                      # US Core Condition searches (patient + category, patient + clinical-status)
                      _p("category", "token", "category", "Condition-category"),
                      _p("clinical-status", "token", "clinicalStatus", "Condition-clinical-status")],
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
        # R4 Flag has no code parameter: a receiver reads a patient's flags and looks at Flag.code
        "Flag": [*_common("Flag-identifier"),
                 _p("patient", "reference", "subject", "clinical-patient", _PATIENT),
                 _p("subject", "reference", "subject", "Flag-subject",
                    "Patient Location Group Organization Practitioner PlanDefinition Medication Procedure"),
                 _p("date", "date", "period", "clinical-date"),
                 _p("encounter", "reference", "encounter", "clinical-encounter", "Encounter"),
                 _p("author", "reference", "author", "Flag-author",
                    "Device Organization Patient Practitioner PractitionerRole")],
    }
    return {rtype: {p.name: p for p in params} for rtype, params in by_type.items()}


#: resource type -> parameter name -> parameter (every type in mappings.resources.MAPPED_TYPES)
SEARCH_PARAMS: dict[str, dict[str, SearchParam]] = _registry()
