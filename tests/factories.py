"""Builders of realistic synthetic clinic records (invented people only)."""

from __future__ import annotations

import copy
from typing import Any

from service.synthetic import npi_with_check_digit

PSYCHIATRIST = {"id": "dr-ortiz", "name": {"family": "Ortiz", "given": ["Lena"], "prefix": ["Dr."]},
                "role": "psychiatrist", "npi": npi_with_check_digit("198765432"),
                "organization": "Riverside Psychiatry"}
NURSE = {"id": "rn-cho", "name": {"family": "Cho", "given": ["Sam"]}, "role": "nurse"}
PATIENT = {"id": "pt-1", "mrn": "MRN-0001", "name": {"family": "Rowan", "given": ["Avery"]},
           "birth_date": "1984-03-12", "sex": "female", "weight_kg": 70.0,
           "referring_practitioner_id": "dr-ortiz",
           "identifiers": [{"system": "urn:oid:2.16.840.1.113883.3.9999.1", "value": "E100200"}]}
REFERRAL = {"id": "rf-1", "patient_id": "pt-1", "referrer_id": "dr-ortiz", "referred_on": "2026-01-02",
            "diagnoses": ["F33.2"], "reason": "TRD after two adequate SSRI trials"}
COURSE = {"id": "co-1", "patient_id": "pt-1", "referral_id": "rf-1", "kind": "induction", "route": "iv",
          "planned_sessions": 6, "start_date": "2026-01-12", "indication": "F33.2", "sessions_per_week": 2}
SESSION = {"id": "se-1", "patient_id": "pt-1", "course_id": "co-1", "number": 1, "kind": "induction",
           "start": "2026-01-12T09:00:00-05:00", "end": "2026-01-12T10:30:00-05:00", "status": "completed",
           "performers": [{"practitioner_id": "rn-cho", "function": "monitoring"}], "psychotherapy": False}
ADMINISTRATION = {"id": "ad-1", "drug": "ketamine", "route": "iv", "dose_mg": 35.0, "dose_mg_per_kg": 0.5,
                  "weight_kg": 70.0, "rate_mg_per_kg_per_h": 0.75, "start": "2026-01-12T09:10:00-05:00",
                  "end": "2026-01-12T09:50:00-05:00", "status": "completed", "lot_number": "LOT123",
                  "performer_id": "rn-cho"}
VITALS = {"id": "vs-1", "effective": "2026-01-12T09:05:00-05:00", "timing": "pre-dose", "systolic_mmhg": 122,
          "diastolic_mmhg": 78, "heart_rate_bpm": 72, "respiratory_rate_bpm": 14, "spo2_pct": 98,
          "temperature_c": 36.6}
OBSERVATION = {"id": "ob-1", "patient_id": "pt-1", "instrument": "phq9", "score": 16,
               "items": [2, 2, 2, 2, 2, 2, 2, 2, 0], "effective": "2026-01-09T10:00:00-05:00",
               "timing": "baseline"}


def make(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A deep copy of ``base`` with top-level changes (``None`` removes a field)."""
    out = copy.deepcopy(base)
    for key, value in changes.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def seed_course(api) -> None:
    """Store a practitioner, nurse, patient, referral, course and one session through the API."""
    for path, body in (("/practitioners/dr-ortiz", PSYCHIATRIST), ("/practitioners/rn-cho", NURSE),
                       ("/patients/pt-1", PATIENT), ("/referrals/rf-1", REFERRAL), ("/courses/co-1", COURSE),
                       ("/sessions/se-1", SESSION)):
        response = api.put(path, body)
        assert response.status_code in (200, 201), (path, response.get_json())
