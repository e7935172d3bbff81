"""Clinical checks of the contract, answered as ``warnings[]`` on writes (never rejections).

Pure functions over clinic records (the JSON the clinic API stores); the caller passes in the
context a check needs (patient weight, course indication, the session's doses and vitals).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from mappings.clinical import (
    ESKETAMINE_SESSION_DOSES_MG,
    INSTRUMENTS,
    Thresholds,
    is_psychiatric,
)
from mappings.context import MappingContext

__all__ = [
    "Warning",
    "administration_warnings",
    "course_indication",
    "observation_warnings",
    "rems_warnings",
    "session_rems",
    "session_warnings",
    "vitals_warnings",
    "warnings_for",
]

Warning = dict[str, str]
Record = Mapping[str, Any]
DEFAULT = Thresholds()


def _warn(code: str, field: str, message: str) -> Warning:
    return {"code": code, "field": field, "message": message}


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def dose_mg_per_kg(adm: Record, patient_weight_kg: float | None) -> float | None:
    """The dose in mg/kg: as recorded, else from dose_mg and the best known weight."""
    if adm.get("dose_mg_per_kg") is not None:
        return float(adm["dose_mg_per_kg"])
    weight = adm.get("weight_kg") or patient_weight_kg
    return float(adm["dose_mg"]) / float(weight) if weight else None


def administration_warnings(
    adm: Record,
    *,
    patient_weight_kg: float | None = None,
    indication: str | None = None,
    t: Thresholds = DEFAULT,
) -> list[Warning]:
    """Dose-range warnings for one ketamine or esketamine administration."""
    if adm.get("status") in ("not-done", "entered-in-error"):
        return []
    if adm["drug"] == "esketamine":
        if adm["dose_mg"] not in ESKETAMINE_SESSION_DOSES_MG:
            return [_warn("esketamine-dose-unusual", "dose_mg",
                          f"esketamine {adm['dose_mg']:g} mg: labelled session doses are 56 or 84 mg")]
        return []
    if adm["route"] not in ("iv", "im") or not is_psychiatric(indication):
        return []  # the reference gives ranges only for IV/IM ketamine in psychiatric use
    per_kg = dose_mg_per_kg(adm, patient_weight_kg)
    if per_kg is None:
        return [_warn("dose-unchecked", "weight_kg",
                      "no weight on the administration or the patient: the mg/kg dose cannot be checked")]
    if per_kg >= t.dose_out_of_range_mg_per_kg:
        return [_warn("dose-out-of-range", "dose_mg_per_kg",
                      f"{per_kg:.2f} mg/kg is at or above {t.dose_out_of_range_mg_per_kg} mg/kg, the anesthetic "
                      "range, for a psychiatric indication")]
    if per_kg > t.dose_review_mg_per_kg:
        return [_warn("dose-review", "dose_mg_per_kg",
                      f"{per_kg:.2f} mg/kg is above {t.dose_review_mg_per_kg} mg/kg for a psychiatric "
                      "indication: review")]
    return []


def vitals_warnings(vitals: Record, *, pre_dose: bool = False, t: Thresholds = DEFAULT) -> list[Warning]:
    """Hold and review thresholds for one set of vital signs."""
    if vitals.get("status") == "entered-in-error":
        return []
    out: list[Warning] = []
    sbp, dbp = vitals.get("systolic_mmhg"), vitals.get("diastolic_mmhg")
    if (sbp is not None and sbp > t.hold_sbp) or (dbp is not None and dbp > t.hold_dbp):
        out.append(_warn("bp-hold", "systolic_mmhg",
                         f"BP {sbp}/{dbp} mmHg is above {t.hold_sbp}/{t.hold_dbp}: hold or stop dosing and "
                         "notify the prescriber"))
    elif pre_dose and ((sbp or 0) > t.pre_dose_sbp_review or (dbp or 0) > t.pre_dose_dbp_review):
        out.append(_warn("bp-review", "systolic_mmhg",
                         f"pre-dose BP {sbp}/{dbp} mmHg is above {t.pre_dose_sbp_review}/"
                         f"{t.pre_dose_dbp_review}: review before dosing"))
    hr = vitals.get("heart_rate_bpm")
    if hr is not None and hr > t.max_heart_rate:
        out.append(_warn("heart-rate-high", "heart_rate_bpm", f"heart rate {hr}/min is above {t.max_heart_rate}"))
    spo2 = vitals.get("spo2_pct")
    if spo2 is not None and spo2 < t.min_spo2:
        out.append(_warn("spo2-low", "spo2_pct", f"SpO2 {spo2} % is below {t.min_spo2} %"))
    return out


def observation_warnings(obs: Record) -> list[Warning]:
    """Safety signals: PHQ-9 item 9 above 0, or any positive C-SSRS answer."""
    if obs.get("status") == "entered-in-error":
        return []
    items = obs.get("items") or []
    if obs["instrument"] == "phq9" and len(items) == 9 and items[8] > 0:
        return [_warn("safety-signal", "items.8",
                      "PHQ-9 item 9 (thoughts of being better off dead or self-harm) is above 0: "
                      "urgent progress update to the referrer")]
    if obs["instrument"] == "cssrs" and (obs["score"] > 0 or any(items)):
        return [_warn("safety-signal", "score", "positive C-SSRS screen: urgent progress update to the referrer")]
    return []


def is_safety_signal(obs: Record) -> bool:
    return any(w["code"] == "safety-signal" for w in observation_warnings(obs))


def session_warnings(session: Record) -> list[Warning]:
    """Documentation gaps in a session record."""
    if session["status"] == "stopped-early" and not session.get("stop_reason"):
        return [_warn("stop-reason-missing", "stop_reason", "a session stopped early should say why")]
    return []


def rems_warnings(
    session: Record, administrations: Iterable[Record], vitals: Iterable[Record], t: Thresholds = DEFAULT
) -> list[Warning]:
    """Spravato REMS monitoring of a finished esketamine session (reference section 9.3).

    Needs BP before the first dose and about 40 minutes after it, pulse oximetry, and at least
    two hours from the first dose to the end of monitoring (the session's ``end``).
    """
    if session["status"] not in ("completed", "stopped-early"):
        return []
    doses = [a for a in administrations
             if a["drug"] == "esketamine" and a["status"] in ("completed", "stopped", "in-progress")]
    if not doses:
        return []
    first = min(_time(a["start"]) for a in doses)
    taken = [v for v in vitals if v.get("status") != "entered-in-error"]
    bp_times = [_time(v["effective"]) for v in taken if v.get("systolic_mmhg") is not None]
    lo, hi = t.rems_post_dose_bp_window_min
    missing = []
    if not any(ts <= first for ts in bp_times):
        missing.append("blood pressure before the dose")
    if not any(lo * 60 <= (ts - first).total_seconds() <= hi * 60 for ts in bp_times):
        missing.append(f"blood pressure about 40 minutes after the dose ({lo}-{hi} min)")
    if not any(v.get("spo2_pct") is not None for v in taken):
        missing.append("pulse oximetry")
    end = _time(session.get("end"))
    if end is None:
        missing.append("the end of monitoring (session end)")
    elif (end - first).total_seconds() < t.rems_monitoring_min * 60:
        minutes = int((end - first).total_seconds() // 60)
        missing.append(f"monitoring of at least {t.rems_monitoring_min} minutes (recorded {minutes})")
    if not missing:
        return []
    return [_warn("rems-monitoring-incomplete", "vitals",
                  "esketamine REMS monitoring incomplete: missing " + "; ".join(missing))]


def instrument_names() -> list[str]:
    return sorted(INSTRUMENTS)


def course_indication(session: Record, ctx: MappingContext) -> str | None:
    """A session's indication: its course's, else the first diagnosis of the course's referral."""
    course = ctx.lookup("courses", session["course_id"]) if session.get("course_id") else None
    if course is None:
        return None
    if course.get("indication"):
        return course["indication"]
    referral = ctx.lookup("referrals", course["referral_id"]) if course.get("referral_id") else None
    return referral["diagnoses"][0] if referral else None


def _pre_dose(vitals: Record, ctx: MappingContext) -> bool:
    if vitals.get("timing"):
        return vitals["timing"] == "pre-dose"
    starts = [_time(a["start"]) for a in ctx.children(vitals["session_id"], "administrations")]
    return bool(starts) and _time(vitals["effective"]) < min(starts)


def warnings_for(collection: str, record: Record, ctx: MappingContext) -> list[Warning]:
    """The clinical checks of one record, with what they need looked up through ``ctx``."""
    if collection == "administrations":
        session = ctx.lookup("sessions", record["session_id"]) or {}
        patient = ctx.lookup("patients", session.get("patient_id", "")) or {}
        return administration_warnings(record, patient_weight_kg=patient.get("weight_kg"),
                                       indication=course_indication(session, ctx) if session else None)
    if collection == "vitals":
        return vitals_warnings(record, pre_dose=_pre_dose(record, ctx))
    if collection == "observations":
        return observation_warnings(record)
    if collection == "sessions":
        return session_warnings(record)
    return []


def session_rems(session: Record, ctx: MappingContext) -> list[Warning]:
    """The REMS check of a session from its recorded doses and vitals."""
    return rems_warnings(session, ctx.children(session["id"], "administrations"), ctx.children(session["id"], "vitals"))
