"""Every code, code system URI and display the FHIR mappings emit — and nowhere else.

Clinical codes come from shared/domain/clinical-reference.md (section numbers in comments; "U"
marks codes the reference flags as unverified, used as its section 0 decides). A ``display`` is
set only where the reference quotes one verbatim; otherwise the coding has none and the
CodeableConcept's ``text`` says what it is (a test checks both against the reference). FHIR-core code
systems that the FHIR spec itself requires (identifier type, adverse-event severity) are listed
apart. Local codes use the clinic's own CodeSystems under ``<clinic base URI>/CodeSystem/``;
never an invented LOINC, SNOMED or RxNorm code.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ADVERSE_EVENT_CODES",
    "ADVERSE_EVENT_OUTCOME",
    "ADVERSE_EVENT_SERIOUSNESS",
    "ADVERSE_EVENT_SEVERITY",
    "ENCOUNTER_CLASS_AMB",
    "ESKETAMINE",
    "ICD10CM_DISPLAY",
    "INSTRUMENT_CODES",
    "KETAMINE",
    "LOCAL_SYSTEMS",
    "OBSERVATION_CATEGORY",
    "PROCEDURE_CODES",
    "ROUTES",
    "SYSTEM",
    "VITALS",
    "Code",
    "local_system",
]


@dataclass(frozen=True)
class Code:
    system: str
    code: str
    display: str | None = None
    #: Coding.version: the CPT edition (section 12.4: system, code and version, never a display)
    version: str | None = None

    def coding(self) -> dict[str, str]:
        out = {"system": self.system}
        if self.version:
            out["version"] = self.version
        out["code"] = self.code
        if self.display:
            out["display"] = self.display
        return out


#: Code system URIs (reference section 1).
SYSTEM = {
    "rxnorm": "http://www.nlm.nih.gov/research/umls/rxnorm",
    "ndc": "http://hl7.org/fhir/sid/ndc",
    "snomed": "http://snomed.info/sct",
    "loinc": "http://loinc.org",
    "ucum": "http://unitsofmeasure.org",
    "icd10cm": "http://hl7.org/fhir/sid/icd-10-cm",
    "cpt": "http://www.ama-assn.org/go/cpt",
    "hcpcs": "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets",
    "v3-ActCode": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
    "observation-category": "http://terminology.hl7.org/CodeSystem/observation-category",
    "npi": "http://hl7.org/fhir/sid/us-npi",  # named by the mappings issue for Practitioner.identifier
    # FHIR-core code systems required by the spec's own bindings (not clinical terminology):
    "v2-0203": "http://terminology.hl7.org/CodeSystem/v2-0203",
    "adverse-event-severity": "http://terminology.hl7.org/CodeSystem/adverse-event-severity",
    # section 12.7 (mapping revision 2)
    "adverse-event-seriousness": "http://terminology.hl7.org/CodeSystem/adverse-event-seriousness",
    "adverse-event-outcome": "http://terminology.hl7.org/CodeSystem/adverse-event-outcome",
}

#: The clinic's own CodeSystems (reference section 0: instruments without LOINC), relative to the
#: clinic base URI: ``<base>/CodeSystem/<name>``.
LOCAL_SYSTEMS = ("instrument", "instrument-item", "procedure", "encounter-type", "severity-band",
                 "practitioner-role", "participant-function", "timing")


def local_system(base_uri: str, name: str) -> str:
    """The URI of one of the clinic's CodeSystems."""
    if name not in LOCAL_SYSTEMS:
        raise KeyError(name)
    return f"{base_uri.rstrip('/')}/CodeSystem/{name}"


# --- medications (section 0 and 2) -------------------------------------------------------------
KETAMINE = Code(SYSTEM["rxnorm"], "6130", "ketamine")  # U in the reference; section 0 decision
ESKETAMINE = Code(SYSTEM["rxnorm"], "2201623", "esketamine Nasal Spray")
SPRAVATO = Code(SYSTEM["rxnorm"], "2201625", "esketamine Nasal Spray [Spravato]")
#: Spravato dose kits by device count (section 2.2)
SPRAVATO_KIT_NDC = {2: Code(SYSTEM["ndc"], "50458-028-02"), 3: Code(SYSTEM["ndc"], "50458-028-03")}

# --- routes (section 3) -------------------------------------------------------------------------
ROUTES = {
    "iv": Code(SYSTEM["snomed"], "47625008", "Intravenous route (qualifier value)"),
    "im": Code(SYSTEM["snomed"], "78421000", "Intramuscular route (qualifier value)"),
    "intranasal": Code(SYSTEM["snomed"], "46713006", "Nasal route (qualifier value)"),
    "subcutaneous": Code(SYSTEM["snomed"], "34206005", "Subcutaneous route"),
    "oral": Code(SYSTEM["snomed"], "26643006", "Oral route"),
    "sublingual": Code(SYSTEM["snomed"], "37839007", "Sublingual route"),
}

# --- procedures and encounter (sections 0, 4, 5) ------------------------------------------------
#: section 12.4: the CPT edition the codes were checked against (Coding.version; no display: AMA text)
CPT_VERSION = "2026"
PROCEDURE_CODES = {
    "iv-infusion": Code(SYSTEM["cpt"], "96365", version=CPT_VERSION),
    # section 12.4 (revision 2): IM (or SC) injection; section 0's "text plus local code" predates it
    "im-injection": Code(SYSTEM["cpt"], "96372", version=CPT_VERSION),
    "esketamine-56": Code(SYSTEM["hcpcs"], "G2082"),
    "esketamine-84": Code(SYSTEM["hcpcs"], "G2083"),
}
#: CodeableConcept.text for the procedure codes (the reference's "meaning", not official displays)
PROCEDURE_TEXT = {
    "iv-infusion": "IV ketamine infusion",
    "im-injection": "IM ketamine injection",
    "esketamine-56": "Esketamine nasal spray session (up to 56 mg) with monitoring",
    "esketamine-84": "Esketamine nasal spray session (greater than 56 mg) with monitoring",
    "other": "Ketamine administration",
}
ENCOUNTER_CLASS_AMB = Code(SYSTEM["v3-ActCode"], "AMB", "ambulatory")

# --- observations (sections 7 and 8) ------------------------------------------------------------
OBSERVATION_CATEGORY = {
    "survey": Code(SYSTEM["observation-category"], "survey"),
    "vital-signs": Code(SYSTEM["observation-category"], "vital-signs"),
}

#: Instrument total-score codes (LOINC where the reference has one; else None: local code).
INSTRUMENT_CODES: dict[str, Code | None] = {
    "phq9": Code(SYSTEM["loinc"], "44261-6", "Patient Health Questionnaire 9 item (PHQ-9) total score [Reported]"),
    "phq2": Code(SYSTEM["loinc"], "55758-7", "PHQ-2 total score [Reported]"),
    "gad7": Code(SYSTEM["loinc"], "70274-6"),  # the reference elides part of its display
    "pcl5": Code(SYSTEM["loinc"], "101698-9"),  # V1 in the reference; no display given there
    "pain-nrs": Code(SYSTEM["loinc"], "72514-3", "Pain severity - 0-10 verbal numeric rating [Score] - Reported"),
    "peg": Code(SYSTEM["loinc"], "91147-9", "Mean score [PEG]"),
    "bdi2": Code(SYSTEM["loinc"], "89209-1", "Beck Depression Inventory II total score [BDI]"),
    "audit-c": Code(SYSTEM["loinc"], "75626-2", "Total score [AUDIT-C]"),
    "cssrs": None,  # the screener panel (93373-9) has no total-score code: local code
    "madrs": None,
    "hamd17": None,
    "qids-sr16": None,
    "ymbocs": None,
    "cadss": None,
    "bprs": None,
}

#: LOINC item codes in instrument order, where the reference lists them (section 7.1).
INSTRUMENT_ITEM_CODES: dict[str, tuple[str, ...]] = {
    "phq9": ("44250-9", "44255-8", "44259-0", "44254-1", "44251-7", "44258-2", "44252-5", "44253-3", "44260-8"),
    "gad7": ("69725-0", "68509-9", "69733-4", "69734-2", "69735-9", "69689-8", "69736-7"),
    "phq2": ("44250-9", "44255-8"),
    "audit-c": ("68518-0", "68519-8", "68520-6"),
    "peg": ("75893-8", "91145-3", "91146-1"),
}

#: Vital signs (section 8): LOINC code, display, UCUM unit code, unit text.
VITALS = {
    "bp_panel": Code(SYSTEM["loinc"], "85354-9", "Blood pressure panel with all children optional"),
    "systolic_mmhg": Code(SYSTEM["loinc"], "8480-6"),
    "diastolic_mmhg": Code(SYSTEM["loinc"], "8462-4"),
    "heart_rate_bpm": Code(SYSTEM["loinc"], "8867-4"),
    "respiratory_rate_bpm": Code(SYSTEM["loinc"], "9279-1"),
    "spo2_pct": Code(SYSTEM["loinc"], "2708-6", "Oxygen saturation in Arterial blood"),
    "spo2_pulse_ox": Code(SYSTEM["loinc"], "59408-5"),
    "temperature_c": Code(SYSTEM["loinc"], "8310-5"),
    "weight_kg": Code(SYSTEM["loinc"], "29463-7"),
}
#: Observation.code.text of each vital sign
VITALS_TEXT = {"bp_panel": "Blood pressure", "heart_rate_bpm": "Heart rate",
               "respiratory_rate_bpm": "Respiratory rate", "spo2_pct": "Oxygen saturation (pulse oximetry)",
               "temperature_c": "Body temperature", "weight_kg": "Body weight",
               "systolic_mmhg": "Systolic blood pressure", "diastolic_mmhg": "Diastolic blood pressure"}
#: UCUM code of each measurement
VITALS_UNIT = {"systolic_mmhg": "mm[Hg]", "diastolic_mmhg": "mm[Hg]", "heart_rate_bpm": "/min",
               "respiratory_rate_bpm": "/min", "spo2_pct": "%", "temperature_c": "Cel", "weight_kg": "kg"}

#: UCUM units (section 8.2): code -> human unit text
UCUM = {"mg": "mg", "mg/kg": "mg/kg", "mg/kg/h": "mg/kg/h", "mg/h": "mg/h", "min": "min", "h": "h",
        "mm[Hg]": "mmHg", "/min": "/min", "%": "%", "kg": "kg", "Cel": "Cel", "{score}": "{score}", "cm": "cm"}

# --- diagnoses (section 6.1) --------------------------------------------------------------------
ICD10CM_DISPLAY = {
    "F33.2": "Major depressive disorder, recurrent severe without psychotic features",
    "F33.1": "Major depressive disorder, recurrent, moderate",
    "F32.2": "Major depressive disorder, single episode, severe without psychotic features",
    "F43.10": "Post-traumatic stress disorder, unspecified",
    "F43.11": "Post-traumatic stress disorder, acute",
    "F43.12": "Post-traumatic stress disorder, chronic",
    "F41.1": "Generalized anxiety disorder",
    "F42.2": "Mixed obsessional thoughts and acts",
    "F42.9": "Obsessive-compulsive disorder, unspecified",
    "M79.7": "Fibromyalgia",
    "G89.29": "Other chronic pain",
    "G89.4": "Chronic pain syndrome",
    "F10.20": "Alcohol dependence, uncomplicated",
    "R45.851": "Suicidal ideations",
}

# --- FHIR-core value sets ----------------------------------------------------------------------
IDENTIFIER_TYPE_MR = Code(SYSTEM["v2-0203"], "MR", "Medical record number")
ADVERSE_EVENT_SEVERITY = {s: Code(SYSTEM["adverse-event-severity"], s, s.capitalize())
                          for s in ("mild", "moderate", "severe")}
#: section 12.7: AdverseEvent.seriousness and .outcome (displays as in the code systems)
ADVERSE_EVENT_SERIOUSNESS = {s: Code(SYSTEM["adverse-event-seriousness"], s, d)
                             for s, d in (("non-serious", "Non-serious"), ("serious", "Serious"))}
ADVERSE_EVENT_OUTCOME = {s: Code(SYSTEM["adverse-event-outcome"], s, d) for s, d in (
    ("resolved", "Resolved"), ("recovering", "Recovering"), ("ongoing", "Ongoing"),
    ("resolvedWithSequelae", "Resolved with Sequelae"), ("fatal", "Fatal"), ("unknown", "Unknown"))}
#: section 12.7: SNOMED CT for the events a ketamine session reports, by key. Dissociation has no
#: verified finding code (44376007 is the disorder): text only.
ADVERSE_EVENT_CODES = {
    "increased-blood-pressure": Code(SYSTEM["snomed"], "24184005", "Finding of increased blood pressure"),
    "nausea": Code(SYSTEM["snomed"], "422587007", "Nausea (finding)"),
    "vomiting": Code(SYSTEM["snomed"], "422400008", "Vomiting (disorder)"),
    "drowsy": Code(SYSTEM["snomed"], "271782001", "Drowsy (finding)"),
}

# --- care_plan, encounter, procedure, medication_administration, adverse_event -----------------
#: Local `procedure` codes (the clinic's CodeSystem) where the reference has no verified standard
#: code: intranasal sessions whose drug and dose are not yet known, other routes, and
#: ketamine-assisted psychotherapy (section 4: "No dedicated code found"; its CPT psychotherapy
#: code, by minutes, is PSYCHOTHERAPY_CPT). IM sessions have CPT 96372 since revision 2 (section
#: 12.4). code -> CodeableConcept.text
LOCAL_PROCEDURES = {
    "intranasal-dosing": "Intranasal ketamine or esketamine session",
    "ketamine-administration": "Ketamine administration",
    "ketamine-assisted-psychotherapy": "Ketamine-assisted psychotherapy",
}
#: Short route labels for texts ("IV ketamine induction session")
ROUTE_LABEL = {"iv": "IV", "im": "IM", "intranasal": "Intranasal", "subcutaneous": "Subcutaneous",
               "oral": "Oral", "sublingual": "Sublingual"}
#: CodeableConcept.text of the route codes (section 3)
ROUTE_TEXT = {"iv": "Intravenous", "im": "Intramuscular", "intranasal": "Nasal", "subcutaneous": "Subcutaneous",
              "oral": "Oral", "sublingual": "Sublingual"}
#: Local `encounter-type` codes (section 5: "plus a local code (e.g. ketamine-iv-induction,
#: ketamine-iv-booster, esketamine-session)"). code -> CodeableConcept.text
ENCOUNTER_TYPES = {
    **{f"ketamine-{route}-{kind}": f"{label} ketamine {kind} session".replace("session session", "session")
       for route, label in ROUTE_LABEL.items()
       for kind in ("induction", "booster", "maintenance", "session")},
    "ketamine-session": "Ketamine session",
    "intranasal-session": "Intranasal ketamine or esketamine session",
    "esketamine-session": "Esketamine nasal spray session",
    "ketamine-assisted-psychotherapy": "Ketamine-assisted psychotherapy",
}
#: Local `participant-function` codes: the session performer functions of the clinic API
PARTICIPANT_FUNCTIONS = {
    "prescriber": "Prescriber",
    "administering": "Administering clinician",
    "monitoring": "Monitoring clinician",
    "psychotherapist": "Psychotherapist",
    "supervising": "Supervising clinician",
}

# --- organization, practitioner, practitioner_role, patient, service_request, condition, provenance
#: The clinic's ``record-status`` CodeSystem, used as a ``meta.tag``: Patient, Practitioner and
#: PractitionerRole have no status element, and ``active = false`` alone cannot tell a record made
#: in error from an inactive one (the contract syncs entered-in-error as such to every destination).
LOCAL_SYSTEMS = (*LOCAL_SYSTEMS, "record-status")
RECORD_STATUS_ENTERED_IN_ERROR = "entered-in-error"
#: Local ``practitioner-role`` codes (the clinic API's roles; no NUCC/SNOMED code in the reference)
#: -> CodeableConcept.text
PRACTITIONER_ROLE_TEXT = {"psychiatrist": "Psychiatrist", "anesthesiologist": "Anesthesiologist",
                          "physician": "Physician", "nurse": "Nurse", "psychotherapist": "Psychotherapist"}
#: ServiceRequest.code of a referral: text only (section 10.2 allows "local or CPT"; no code fits a
#: referral for a treatment course, so none is invented)
REFERRAL_TEXT = "Ketamine treatment referral"
# FHIR-core code systems required by the spec's own bindings (not clinical terminology):
#: Condition.verificationStatus (required binding ConditionVerificationStatus, FHIR R4 Condition)
SYSTEM["condition-ver-status"] = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
#: Provenance.agent.type (extensible binding ParticipationRoleType; US Core Provenance author slice)
SYSTEM["provenance-participant-type"] = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
CONDITION_VER_ENTERED_IN_ERROR = Code(SYSTEM["condition-ver-status"], "entered-in-error", "Entered in Error")
PROVENANCE_AGENT_AUTHOR = Code(SYSTEM["provenance-participant-type"], "author", "Author")

# --- audit_event ---------------------------------------------------------------------------------
# FHIR-core code systems required by the spec's own bindings (not clinical terminology), R4 AuditEvent:
#: AuditEvent.type (extensible binding AuditEventID): "rest" for every RESTful interaction
SYSTEM["audit-event-type"] = "http://terminology.hl7.org/CodeSystem/audit-event-type"
#: AuditEvent.subtype of a RESTful interaction (R4 audit-event-sub-type includes FHIR restful-interaction)
SYSTEM["restful-interaction"] = "http://hl7.org/fhir/restful-interaction"
#: AuditEvent.type/subtype of a login (the AuditEventID and AuditEventSubType value sets include these DICOM codes)
SYSTEM["dicom-dcm"] = "http://dicom.nema.org/resources/ontology/DCM"
#: AuditEvent.entity.type (extensible binding AuditEventEntityType)
SYSTEM["audit-entity-type"] = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
#: AuditEvent.entity.role (extensible binding AuditEventEntityRole)
SYSTEM["object-role"] = "http://terminology.hl7.org/CodeSystem/object-role"
AUDIT_TYPE_REST = Code(SYSTEM["audit-event-type"], "rest", "RESTful Operation")
AUDIT_TYPE_LOGIN = Code(SYSTEM["dicom-dcm"], "110114", "User Authentication")
AUDIT_SUBTYPE_LOGIN = Code(SYSTEM["dicom-dcm"], "110122", "Login")
#: restful-interaction codes used as AuditEvent.subtype (R4 restful-interaction CodeSystem)
RESTFUL_INTERACTIONS = ("read", "vread", "update", "patch", "delete", "history-instance", "history-type",
                        "create", "search-type", "transaction", "batch")
AUDIT_ENTITY_PERSON = Code(SYSTEM["audit-entity-type"], "1", "Person")
AUDIT_ENTITY_SYSTEM_OBJECT = Code(SYSTEM["audit-entity-type"], "2", "System Object")
AUDIT_ROLE_PATIENT = Code(SYSTEM["object-role"], "1", "Patient")
AUDIT_ROLE_DOMAIN_RESOURCE = Code(SYSTEM["object-role"], "4", "Domain Resource")
AUDIT_ROLE_QUERY = Code(SYSTEM["object-role"], "24", "Query")

# --- security labels (section 12.2, mapping revision 2 item 7) ---------------------------------
SYSTEM["v3-Confidentiality"] = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
CONFIDENTIALITY = {c: Code(SYSTEM["v3-Confidentiality"], c, d)
                   for c, d in (("N", "normal"), ("R", "restricted"), ("V", "very restricted"))}
#: sensitivity labels (v3-ActCode, under SPI): one per clinic policy, plus SUD for substance use
SENSITIVITY = {c: Code(SYSTEM["v3-ActCode"], c, d) for c, d in (
    ("PSY", "psychiatry disorder information sensitivity"),
    ("BH", "behavioral health information sensitivity"),
    ("MH", "mental health information sensitivity"),
    ("SUD", "substance use disorder information sensitivity"),
)}
#: the policy label, in ActCode (the v3-ActUSPrivacyLaw copy is deprecated: accepted, never emitted)
PART2_POLICY = Code(SYSTEM["v3-ActCode"], "42CFRPart2", "42 CFR Part2")

# --- vital-sign interpretation, clinical-check flags, body measurements (revision 2, items 6 and 8)
#: section 12.1: Observation.interpretation of a vital sign against the clinic's thresholds
SYSTEM["v3-ObservationInterpretation"] = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
VITALS_INTERPRETATION = {c: Code(SYSTEM["v3-ObservationInterpretation"], c, d) for c, d in (
    ("H", "High"), ("HH", "Critical high"), ("L", "Low"), ("LL", "Critical low"), ("N", "Normal"))}
#: the clinic's ``clinical-check`` CodeSystem: the codes of mappings.checks warnings, as Flag.code
LOCAL_SYSTEMS = (*LOCAL_SYSTEMS, "clinical-check")
#: section 8: body height (US Core Body Height; UCUM cm)
VITALS["height_cm"] = Code(SYSTEM["loinc"], "8302-2")
VITALS_TEXT["height_cm"] = "Body height"
VITALS_UNIT["height_cm"] = "cm"

# --- care_team, condition, care_plan, encounter participants (sections 12.1 and 12.3; mapping ---
# --- revision 2 items 3, 10, 12, 13) --------------------------------------------------------------
SYSTEM["v3-ParticipationType"] = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
SYSTEM["condition-clinical"] = "http://terminology.hl7.org/CodeSystem/condition-clinical"
SYSTEM["condition-category"] = "http://terminology.hl7.org/CodeSystem/condition-category"
SYSTEM["us-core-careplan-category"] = "http://hl7.org/fhir/us/core/CodeSystem/careplan-category"
#: section 12.1: Encounter.participant.type and CareTeam.participant.role (displays as in THO)
PARTICIPATION_TYPE = {c: Code(SYSTEM["v3-ParticipationType"], c, d) for c, d in (
    ("ATND", "attender"), ("PPRF", "primary performer"), ("SPRF", "secondary performer"),
    ("PART", "Participation"), ("CON", "consultant"), ("REF", "referrer"))}
#: a session performer's clinic function -> its v3 ParticipationType (section 12.1: ATND the clinician
#: responsible for the session, PPRF who gives the dose, SPRF the monitoring nurse, PART any other)
PARTICIPANT_FUNCTION_TYPE = {"prescriber": "ATND", "supervising": "ATND", "administering": "PPRF",
                             "monitoring": "SPRF", "psychotherapist": "PART"}
#: CareTeam.participant.role text of the referrer (no clinic function: the referral names them)
REFERRER_TEXT = "Referring psychiatrist"
#: section 12.3: Condition.clinicalStatus / verificationStatus / category (US Core Condition profiles)
CONDITION_CLINICAL_ACTIVE = Code(SYSTEM["condition-clinical"], "active", "Active")
CONDITION_VER_CONFIRMED = Code(SYSTEM["condition-ver-status"], "confirmed", "Confirmed")
CONDITION_CATEGORY = {
    "encounter-diagnosis": Code(SYSTEM["condition-category"], "encounter-diagnosis", "Encounter Diagnosis"),
    "problem-list-item": Code(SYSTEM["condition-category"], "problem-list-item", "Problem List Item"),
}
#: section 12.3: CarePlan.category, the US Core CarePlan's required slice
CAREPLAN_ASSESS_PLAN = Code(SYSTEM["us-core-careplan-category"], "assess-plan", "Assessment and Plan of Treatment")

# --- questionnaire items, panels and safety items (sections 7.1 and 12.1; mapping revision 2 ---
# --- items 5 and 6, observation.py and questionnaire_response.py) ---------------------------------
#: Panel codes (section 7.1) of the panel Observation that groups an instrument's item Observations
#: (hasMember); an instrument not listed gets a local ``instrument-panel`` code. Displays only where
#: the reference quotes them.
INSTRUMENT_PANEL_CODES: dict[str, Code] = {
    "phq9": Code(SYSTEM["loinc"], "44249-1", "PHQ-9 quick depression assessment panel [Reported.PHQ]"),
    "gad7": Code(SYSTEM["loinc"], "69737-5", "Generalized anxiety disorder 7 item (GAD-7)"),
    "phq2": Code(SYSTEM["loinc"], "55757-9", "Patient Health Questionnaire 2 item (PHQ-2) [Reported]"),
    "cssrs": Code(SYSTEM["loinc"], "93373-9", "Columbia - suicide severity rating scale screener - recent [C-SSRS]"),
    "peg": Code(SYSTEM["loinc"], "91148-7"),
    "pcl5": Code(SYSTEM["loinc"], "101697-1"),  # V1 in the reference
    "audit-c": Code(SYSTEM["loinc"], "72109-2"),
}
LOCAL_SYSTEMS = (*LOCAL_SYSTEMS, "instrument-panel")
#: The PHQ/GAD answer list (section 7.1), indexed by the item score 0-3: the answers of PHQ-9,
#: GAD-7 and PHQ-2 items (QuestionnaireResponse valueCoding, item Observation valueCodeableConcept)
PHQ_GAD_ANSWERS: tuple[Code, ...] = (
    Code(SYSTEM["loinc"], "LA6568-5", "Not at all"),
    Code(SYSTEM["loinc"], "LA6569-3", "Several days"),
    Code(SYSTEM["loinc"], "LA6570-1", "More than half the days"),
    Code(SYSTEM["loinc"], "LA6571-9", "Nearly every day"),
)
PHQ_GAD_INSTRUMENTS = frozenset({"phq9", "gad7", "phq2"})
#: section 12.1: a safety item positive (PHQ-9 item 9 > 0, C-SSRS "yes") / negative
SYSTEM.setdefault("v3-ObservationInterpretation", "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation")
SCREENING_INTERPRETATION = {c: Code(SYSTEM["v3-ObservationInterpretation"], c, d)
                            for c, d in (("POS", "Positive"), ("NEG", "Negative"))}

# --- Medication, CPT injection and psychotherapy, Provenance agents (revision 2, items 9, 12, 14) --
#: section 1 / 12.8: WHO ATC, sent as a classification coding of Medication.code next to RxNorm
SYSTEM["atc"] = "http://www.whocc.no/atc"
ATC_KETAMINE = Code(SYSTEM["atc"], "N01AX03", "ketamine")  # V1 in section 12.8
ATC_ESKETAMINE = Code(SYSTEM["atc"], "N06AX27", "esketamine")  # not N01AX14 (anesthetic use): section 2.2
#: section 12.4: psychotherapy with the patient by its minutes: (lowest minute, CPT code, paraphrase).
#: Under 16 minutes no psychotherapy code applies (90832 starts at 16): text only.
PSYCHOTHERAPY_CPT = (
    (53, Code(SYSTEM["cpt"], "90837", version=CPT_VERSION), "Psychotherapy with the patient, about 60 minutes"),
    (38, Code(SYSTEM["cpt"], "90834", version=CPT_VERSION), "Psychotherapy with the patient, about 45 minutes"),
    (16, Code(SYSTEM["cpt"], "90832", version=CPT_VERSION), "Psychotherapy with the patient, about 30 minutes"),
)
#: Provenance.agent.type of the service that sends the copy: US Core 6.1's own code (its
#: ProvenanceTransmitter slice fixes this pattern; R4 provenance-participant-type has no transmitter)
SYSTEM["us-core-provenance-participant-type"] = "http://hl7.org/fhir/us/core/CodeSystem/us-core-provenance-participant-type"
PROVENANCE_AGENT_TRANSMITTER = Code(SYSTEM["us-core-provenance-participant-type"], "transmitter", "Transmitter")
