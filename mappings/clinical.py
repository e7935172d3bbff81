"""Clinical facts the service checks records against, from shared/domain/clinical-reference.md.

Thresholds here are the reference's configuration defaults (section 0 and 9.5); a clinician must
sign them off before go-live. Section numbers in comments point into that document.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "CLINICIAN_RATED",
    "DOSE_CONSISTENCY_TOLERANCE_MG",
    "DOSE_CONSISTENCY_TOLERANCE_PCT",
    "ESKETAMINE_DEVICE_MG",
    "INSTRUMENTS",
    "SAFETY_ITEMS",
    "SELF_REPORT",
    "SEVERITY_BANDS",
    "Instrument",
    "SeverityBand",
    "Thresholds",
    "band_for",
    "is_psychiatric",
    "severity_band",
]


@dataclass(frozen=True)
class Instrument:
    """An outcome-score instrument: valid ranges and how items add up to the score (section 7)."""

    key: str
    name: str
    min_score: float
    max_score: float
    items: int | None = None  # item count when fixed by the instrument
    item_min: int = 0
    item_max: int | None = None
    scoring: str = "sum"  # "sum", "mean" or "other" (score not derivable from items here)
    integer_score: bool = True
    response_pct: float = 50.0  # reduction from baseline that counts as response (section 0)
    remission_max: float | None = None  # score at or below which the patient is in remission


INSTRUMENTS: dict[str, Instrument] = {
    i.key: i
    for i in (
        Instrument("phq9", "PHQ-9", 0, 27, items=9, item_max=3, remission_max=4),
        Instrument("phq2", "PHQ-2", 0, 6, items=2, item_max=3),
        Instrument("gad7", "GAD-7", 0, 21, items=7, item_max=3, remission_max=4),
        Instrument("madrs", "MADRS", 0, 60, items=10, item_max=6, remission_max=10),
        Instrument("hamd17", "HAM-D-17", 0, 52, items=17, item_max=4, remission_max=7),
        Instrument("qids-sr16", "QIDS-SR16", 0, 27, items=16, item_max=3, scoring="other", remission_max=5),
        Instrument("bdi2", "BDI-II", 0, 63, items=21, item_max=3, remission_max=12),
        Instrument("pcl5", "PCL-5", 0, 80, items=20, item_max=4, remission_max=32),
        Instrument("ymbocs", "Y-BOCS", 0, 40, items=10, item_max=4, response_pct=35.0),
        # C-SSRS screener: yes/no items; the score is the number of positive answers (section 7.2).
        Instrument("cssrs", "C-SSRS screener", 0, 6, items=6, item_max=1),
        Instrument("pain-nrs", "Pain NRS", 0, 10, items=0, response_pct=30.0),
        Instrument("peg", "PEG", 0, 10, items=3, item_max=10, scoring="mean", integer_score=False,
                   response_pct=30.0),
        Instrument("cadss", "CADSS", 0, 92, item_max=4),
        Instrument("bprs", "BPRS", 18, 126, items=18, item_min=1, item_max=7),
        Instrument("audit-c", "AUDIT-C", 0, 12, items=3, item_max=4),
    )
}

#: Who answers an instrument (Observation.performer, mapping revision 2 item 13). Self-report: the
#: patient (the LOINC names of PHQ-9, PHQ-2 and pain NRS say "[Reported]"; QIDS-SR16 is the
#: self-report QIDS; PCL-5, BDI-II, GAD-7, AUDIT-C and PEG are questionnaires). Clinician-rated: the
#: rater the record names (CADSS is "Clinician Administered", section 7.2; MADRS, HAM-D-17, Y-BOCS
#: and BPRS are interview scales). The C-SSRS screener is either: the rater if the record names one.
SELF_REPORT = frozenset({"phq9", "phq2", "gad7", "pcl5", "bdi2", "qids-sr16", "pain-nrs", "peg", "audit-c"})
CLINICIAN_RATED = frozenset({"madrs", "hamd17", "cadss", "ymbocs", "bprs"})
#: Safety items, by 1-based item number (section 7.2: PHQ-9 item 9 > 0 is a safety alert whatever
#: the total; any positive C-SSRS answer escalates): interpretation POS above 0, else NEG (section 12.1)
SAFETY_ITEMS: dict[str, frozenset[int]] = {"phq9": frozenset({9}), "cssrs": frozenset(range(1, 7))}


@dataclass(frozen=True)
class SeverityBand:
    """One severity band of an instrument's total score (section 7.2); ``code`` is the band's code
    in the clinic's ``severity-band`` CodeSystem, shared by every instrument with that band name."""

    code: str
    label: str
    low: float
    high: float


def _bands(*bands: tuple[str, str, float, float]) -> tuple[SeverityBand, ...]:
    return tuple(SeverityBand(*b) for b in bands)


#: Severity bands where section 7.2 gives them: PHQ-9 (Kroenke 2001) and GAD-7 (Spitzer 2006);
#: QIDS-SR16 and BDI-II bands are the "commonly" used ones the reference marks U (unverified).
SEVERITY_BANDS: dict[str, tuple[SeverityBand, ...]] = {
    "phq9": _bands(("minimal", "Minimal", 0, 4), ("mild", "Mild", 5, 9), ("moderate", "Moderate", 10, 14),
                   ("moderately-severe", "Moderately severe", 15, 19), ("severe", "Severe", 20, 27)),
    "gad7": _bands(("minimal", "Minimal", 0, 4), ("mild", "Mild", 5, 9), ("moderate", "Moderate", 10, 14),
                   ("severe", "Severe", 15, 21)),
    "qids-sr16": _bands(("none", "None", 0, 5), ("mild", "Mild", 6, 10), ("moderate", "Moderate", 11, 15),
                        ("severe", "Severe", 16, 20), ("very-severe", "Very severe", 21, 27)),
    "bdi2": _bands(("minimal", "Minimal", 0, 13), ("mild", "Mild", 14, 19), ("moderate", "Moderate", 20, 28),
                   ("severe", "Severe", 29, 63)),
}


def band_for(instrument: str, score: float) -> SeverityBand | None:
    """The severity band of a total score (None: no bands for the instrument, or out of range)."""
    bands = SEVERITY_BANDS.get(instrument, ())
    if not bands or not bands[0].low <= score <= bands[-1].high:
        return None
    # the band whose lower bound the score has reached (integer bands leave no gaps this way)
    return [b for b in bands if b.low <= score][-1]


def severity_band(instrument: str, score: float) -> str | None:
    """The severity-band code of a total score, or None where the reference gives no bands (or the
    score is outside the instrument's range)."""
    band = band_for(instrument, score)
    return band.code if band else None


#: one Spravato device delivers 28 mg (section 9.2)
ESKETAMINE_DEVICE_MG = 28
#: usual Spravato session doses (section 9.2): 56 mg (2 devices) or 84 mg (3 devices)
ESKETAMINE_SESSION_DOSES_MG = (56, 84)

#: dose_mg may differ from dose_mg_per_kg x weight_kg by rounding: up to the larger of these
DOSE_CONSISTENCY_TOLERANCE_MG = 2.5
DOSE_CONSISTENCY_TOLERANCE_PCT = 2.5


@dataclass(frozen=True)
class Thresholds:
    """Warning thresholds (section 0 and 9.5); configuration defaults."""

    dose_review_mg_per_kg: float = 0.75  # IV/IM ketamine, psychiatric indication: review above
    dose_out_of_range_mg_per_kg: float = 1.0  # at or above: out of range (Ketalar induction floor)
    pre_dose_sbp_review: int = 140  # pre-dose BP > 140/90: review before dosing
    pre_dose_dbp_review: int = 90
    hold_sbp: int = 180  # SBP > 180 or DBP > 100: hold or stop, notify the prescriber
    hold_dbp: int = 100
    max_heart_rate: int = 110
    min_spo2: int = 92
    rems_monitoring_min: int = 120  # esketamine: at least 2 h of monitoring
    rems_post_dose_bp_window_min: tuple[int, int] = (30, 60)  # "about 40 minutes" after the dose


def is_psychiatric(icd10: str | None) -> bool:
    """True for mental-health indications (ICD-10-CM chapter F, and R45.851 suicidal ideation).

    An unknown indication counts as psychiatric, the stricter dose range: most courses are.
    """
    if not icd10:
        return True
    return icd10.upper().startswith("F") or icd10.upper() == "R45.851"
