"""A synthetic clinic: realistic, entirely invented patients and treatment courses.

Used by the test suite, the benchmarks and ``ketamine-fhir synth`` (demo data for integration
engineers). Deterministic for a given seed. Archetypes, by patient number:
IV ketamine induction (most), IM ketamine, Spravato (esketamine) with REMS monitoring, and a
chronic-pain IV course; some sessions stopped early or cancelled.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

__all__ = ["clinic_lines", "clinic_records", "npi_with_check_digit"]

FAMILY = [
    "Alder",
    "Birch",
    "Cedar",
    "Dogwood",
    "Elm",
    "Fir",
    "Hazel",
    "Juniper",
    "Larch",
    "Maple",
    "Oak",
    "Pine",
    "Rowan",
    "Spruce",
    "Willow",
    "Yew",
]
GIVEN = [
    "Avery",
    "Blake",
    "Casey",
    "Drew",
    "Emery",
    "Finley",
    "Harper",
    "Jordan",
    "Kai",
    "Logan",
    "Morgan",
    "Parker",
    "Quinn",
    "Riley",
    "Sage",
    "Taylor",
]
TZ = timezone(timedelta(hours=-5))
EHR_MRN_SYSTEM = "urn:oid:2.16.840.1.113883.3.9999.1"  # an example OID arc for the EHR's MRNs


def npi_with_check_digit(nine: str) -> str:
    """A Luhn-valid NPI from 9 digits (the check digit covers the 80840 prefix)."""
    digits = [int(c) for c in "80840" + nine]
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 0:
            d *= 2
            d = d - 9 if d > 9 else d
        total += d
    return nine + str((10 - total % 10) % 10)


def _staff() -> list[dict[str, Any]]:
    roles = ["psychiatrist"] * 6 + ["anesthesiologist", "physician", "nurse", "nurse", "psychotherapist"]
    out = []
    for i, role in enumerate(roles):
        out.append(
            {
                "id": f"pr-{i + 1:03d}",
                "name": {
                    "family": FAMILY[i % len(FAMILY)],
                    "given": [GIVEN[i]],
                    "prefix": ["Dr."] if role not in ("nurse",) else [],
                },
                "role": role,
                "npi": npi_with_check_digit(f"{123450000 + i:09d}"),
                "organization": "Referring Psychiatry Group" if role == "psychiatrist" else "Synthetic Ketamine Clinic",
                "email": f"staff{i + 1}@clinic.example.org",
            }
        )
    for p in out:
        if not p["name"]["prefix"]:
            del p["name"]["prefix"]
    return out


def _iso(t: datetime) -> str:
    return t.isoformat()


def _phq9(rng: random.Random, level: int) -> tuple[int, list[int]]:
    """PHQ-9 items summing near ``level``; item 9 stays 0 unless the caller sets it."""
    items = [0] * 9
    for _ in range(max(0, min(level, 24))):
        i = rng.randrange(8)
        if items[i] < 3:
            items[i] += 1
    return sum(items), items


def _patient_records(n: int, rng: random.Random, staff: list[dict[str, Any]]) -> Iterator[tuple[str, dict]]:
    archetype = ["iv", "iv", "iv", "im", "esketamine", "iv", "pain", "iv"][n % 8]
    pid = f"pt-{n + 1:04d}"
    referrer = staff[n % 6]
    nurse, physician = staff[8 + n % 2], staff[7]
    weight = round(rng.uniform(52, 110), 1)
    patient = {
        "id": pid,
        "mrn": f"MRN{100000 + n}",
        "name": {"family": rng.choice(FAMILY), "given": [rng.choice(GIVEN)]},
        "birth_date": f"{rng.randint(1950, 2004)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
        "sex": rng.choice(["female", "male", "female", "male", "other"]),
        "weight_kg": weight,
        "height_cm": round(rng.uniform(150, 195)),
        # measured at intake, the day of the referral (no rng draw: the other records stay as they were)
        "body_measured_on": (datetime(2026, 1, 5, tzinfo=TZ) + timedelta(days=n % 60 - 14)).date().isoformat(),
        "referring_practitioner_id": referrer["id"],
        "phone": f"+1 555 01{n % 100:02d}",
        "identifiers": [{"system": EHR_MRN_SYSTEM, "value": f"E{900000 + n}"}],
    }
    if n % 10 == 9:
        del patient["weight_kg"]  # a patient with no recorded weight
    yield "patients", patient
    dx = {"pain": ["G89.4"], "esketamine": ["F33.2"], "im": ["F43.12", "F33.1"]}.get(archetype, ["F33.2"])
    if n % 12 == 11:
        dx = [*dx, "F10.20"]  # comorbid alcohol dependence: substance-use data, labelled as such
    start = datetime(2026, 1, 5, 9, 0, tzinfo=TZ) + timedelta(days=n % 60, hours=n % 4)
    referral = {
        "id": f"rf-{n + 1:04d}",
        "patient_id": pid,
        "referrer_id": referrer["id"],
        "referred_on": (start - timedelta(days=14)).date().isoformat(),
        "diagnoses": dx,
        "reason": "Treatment-resistant symptoms after two adequate antidepressant trials",
    }
    yield "referrals", referral
    route = {"esketamine": "intranasal", "im": "im"}.get(archetype, "iv")
    course = {
        "id": f"co-{n + 1:04d}",
        "patient_id": pid,
        "referral_id": referral["id"],
        "kind": "induction",
        "route": route,
        "planned_sessions": 6,
        "start_date": start.date().isoformat(),
        "indication": dx[0],
        "sessions_per_week": 2,
        "target_dose_mg_per_kg": 0.5 if route != "intranasal" else None,
    }
    course = {k: v for k, v in course.items() if v is not None}
    yield "courses", course
    baseline = rng.randint(15, 24)
    yield "observations", _score(pid, f"{pid}-phq9-0", "phq9", rng, baseline, start - timedelta(days=3), "baseline")
    yield "observations", _gad7(pid, f"{pid}-gad7-0", rng, rng.randint(10, 18), start - timedelta(days=3), "baseline")
    if archetype == "pain":
        yield (
            "observations",
            {
                "id": f"{pid}-nrs-0",
                "patient_id": pid,
                "instrument": "pain-nrs",
                "score": 7,
                "effective": _iso(start - timedelta(days=3)),
                "timing": "baseline",
            },
        )
    for k in range(6):
        yield from _session(
            n, k, pid, course, start + timedelta(days=3.5 * k), archetype, weight, rng, (nurse, physician), baseline
        )
    if n % 12 == 5:  # a score recorded by mistake, then marked entered-in-error
        yield (
            "observations",
            {
                "id": f"{pid}-phq9-x",
                "patient_id": pid,
                "instrument": "phq9",
                "score": 3,
                "effective": _iso(start + timedelta(days=1)),
                "status": "entered-in-error",
            },
        )


def _score(
    pid: str,
    oid: str,
    instrument: str,
    rng: random.Random,
    level: int,
    when: datetime,
    timing: str,
    session_id: str | None = None,
) -> dict[str, Any]:
    score, items = _phq9(rng, level)
    obs = {
        "id": oid,
        "patient_id": pid,
        "instrument": instrument,
        "score": score,
        "items": items,
        "effective": _iso(when),
        "timing": timing,
    }
    if session_id:
        obs["session_id"] = session_id
    return obs


def _gad7(pid: str, oid: str, rng: random.Random, level: int, when: datetime, timing: str) -> dict[str, Any]:
    items = [0] * 7
    for _ in range(min(level, 21)):
        i = rng.randrange(7)
        if items[i] < 3:
            items[i] += 1
    return {
        "id": oid,
        "patient_id": pid,
        "instrument": "gad7",
        "score": sum(items),
        "items": items,
        "effective": _iso(when),
        "timing": timing,
    }


def _session(
    n: int,
    k: int,
    pid: str,
    course: dict,
    start: datetime,
    archetype: str,
    weight: float,
    rng: random.Random,
    team: tuple[dict, dict],
    baseline: int,
) -> Iterator[tuple[str, dict]]:
    sid = f"se-{n + 1:04d}-{k + 1}"
    nurse, physician = team
    status = "completed"
    if n % 9 == 4 and k == 3:
        status = "cancelled"
    elif n % 11 == 3 and k == 2:
        status = "stopped-early"
    esk = archetype == "esketamine"
    length = timedelta(minutes=130 if esk else 90)
    session = {
        "id": sid,
        "patient_id": pid,
        "course_id": course["id"],
        "number": k + 1,
        "kind": "induction",
        "start": _iso(start),
        "status": status,
        "location": "Infusion room 2",
        "performers": [
            {"practitioner_id": physician["id"], "function": "supervising"},
            {"practitioner_id": nurse["id"], "function": "monitoring"},
        ],
        "psychotherapy": n % 5 == 0,
    }
    if status != "cancelled":
        session["end"] = _iso(start + (timedelta(minutes=25) if status == "stopped-early" else length))
    if session["psychotherapy"] and status == "completed":
        # every CPT psychotherapy band (reference 12.4), one under 16 minutes (no code), one not recorded
        minutes = (45, 12, 30, 60, None)[k % 5]
        if minutes:
            session["psychotherapy_minutes"] = minutes
    if status == "stopped-early":
        session["stop_reason"] = "Blood pressure above hold threshold"
        session["adverse_events"] = [{"text": "Transient hypertension", "severity": "moderate"}]
    elif status == "completed" and k == 0:
        session["adverse_events"] = [{"text": "Nausea", "severity": "mild"}]
    if status == "cancelled":
        session["stop_reason"] = "Patient unwell; rescheduled"
    yield "sessions", session
    if status == "cancelled":
        return
    dose_start = start + timedelta(minutes=10)
    yield (
        "vitals",
        {
            "id": f"{sid}-v0",
            "session_id": sid,
            "effective": _iso(start + timedelta(minutes=5)),
            "timing": "pre-dose",
            "systolic_mmhg": rng.randint(112, 138),
            "diastolic_mmhg": rng.randint(68, 86),
            "heart_rate_bpm": rng.randint(60, 90),
            "respiratory_rate_bpm": 14,
            "spo2_pct": rng.randint(95, 99),
            "temperature_c": 36.7,
        },
    )
    yield "administrations", _administration(sid, archetype, k, dose_start, weight, status, rng, nurse)
    if status == "stopped-early":
        yield (
            "vitals",
            {
                "id": f"{sid}-v1",
                "session_id": sid,
                "effective": _iso(dose_start + timedelta(minutes=12)),
                "timing": "during",
                "systolic_mmhg": 186,
                "diastolic_mmhg": 104,
                "heart_rate_bpm": 98,
                "spo2_pct": 97,
            },
        )
        return
    yield (
        "vitals",
        {
            "id": f"{sid}-v1",
            "session_id": sid,
            "effective": _iso(dose_start + timedelta(minutes=20)),
            "timing": "during",
            "systolic_mmhg": rng.randint(118, 150),
            "diastolic_mmhg": rng.randint(70, 92),
            "heart_rate_bpm": rng.randint(62, 96),
            "spo2_pct": rng.randint(94, 99),
        },
    )
    yield (
        "vitals",
        {
            "id": f"{sid}-v2",
            "session_id": sid,
            "effective": _iso(dose_start + timedelta(minutes=40)),
            "timing": "post-dose",
            "systolic_mmhg": rng.randint(116, 146),
            "diastolic_mmhg": rng.randint(70, 90),
            "heart_rate_bpm": rng.randint(60, 92),
            "spo2_pct": rng.randint(95, 99),
        },
    )
    yield (
        "vitals",
        {
            "id": f"{sid}-v3",
            "session_id": sid,
            "effective": _iso(start + timedelta(minutes=125 if archetype == "esketamine" else 85)),
            "timing": "discharge",
            "systolic_mmhg": rng.randint(110, 135),
            "diastolic_mmhg": rng.randint(68, 85),
            "heart_rate_bpm": rng.randint(60, 85),
            "spo2_pct": rng.randint(96, 99),
        },
    )
    level = max(2, int(baseline * (1 - 0.13 * (k + 1))) + rng.randint(-2, 2))
    obs = _score(pid, f"{sid}-phq9", "phq9", rng, level, start - timedelta(minutes=15), "pre", sid)
    if n % 13 == 7 and k == 1:  # a safety signal: PHQ-9 item 9 above 0
        obs["items"][8] = 1
        obs["score"] = sum(obs["items"])
    yield "observations", obs
    if archetype == "esketamine" or n % 5 == 0:
        yield (
            "observations",
            {
                "id": f"{sid}-cadss",
                "patient_id": pid,
                "instrument": "cadss",
                "score": rng.randint(0, 12),
                "effective": _iso(dose_start + timedelta(minutes=40)),
                "timing": "post",
                "session_id": sid,
                "rater_id": nurse["id"],  # clinician-administered: the monitoring nurse rates it
            },
        )


def _administration(
    sid: str, archetype: str, k: int, when: datetime, weight: float, status: str, rng: random.Random, nurse: dict
) -> dict[str, Any]:
    stopped = status == "stopped-early"
    base = {
        "id": f"{sid}-a1",
        "session_id": sid,
        "start": _iso(when),
        "performer_id": nurse["id"],
        "status": "stopped" if stopped else "completed",
        "lot_number": f"LOT{rng.randint(10000, 99999)}",
    }
    if archetype == "esketamine":
        devices = 2 if k < 2 else 3
        return base | {
            "drug": "esketamine",
            "route": "intranasal",
            "dose_mg": 28.0 * devices,
            "device_count": devices,
            "product": "spravato-28mg-device",
            "end": _iso(when + timedelta(minutes=5 * (devices - 1) + 1)),
        }
    per_kg = 0.5
    dose = round(per_kg * weight, 1)
    if archetype == "im":
        return base | {
            "drug": "ketamine",
            "route": "im",
            "dose_mg": dose,
            "dose_mg_per_kg": per_kg,
            "weight_kg": weight,
            "end": _iso(when + timedelta(minutes=1)),
        }
    minutes = 12 if stopped else 40
    return base | {
        "drug": "ketamine",
        "route": "iv",
        "dose_mg": round(dose * minutes / 40, 1) if stopped else dose,
        "dose_mg_per_kg": round(per_kg * minutes / 40, 3) if stopped else per_kg,
        "weight_kg": weight,
        "rate_mg_per_kg_per_h": 0.75,
        "end": _iso(when + timedelta(minutes=minutes)),
    }


def clinic_records(patients: int, seed: int = 1) -> Iterator[tuple[str, dict[str, Any]]]:
    """(collection, record) pairs in dependency order: staff first, then each patient's course."""
    rng = random.Random(seed)
    staff = _staff()
    for p in staff:
        yield "practitioners", p
    for n in range(patients):
        yield from _patient_records(n, rng, staff)


def clinic_lines(patients: int, seed: int = 1) -> Iterator[str]:
    """The synthetic clinic as /import NDJSON lines."""
    for kind, record in clinic_records(patients, seed):
        yield json.dumps({"type": kind, "record": record}, separators=(",", ":"))



