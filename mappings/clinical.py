"""Clinical facts the service checks records against, from shared/domain/clinical-reference.md.

Thresholds here are the reference's configuration defaults (section 0 and 9.5); a clinician must
sign them off before go-live. Section numbers in comments point into that document.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "DOSE_CONSISTENCY_TOLERANCE_MG",
    "DOSE_CONSISTENCY_TOLERANCE_PCT",
    "ESKETAMINE_DEVICE_MG",
    "INSTRUMENTS",
    "Instrument",
    "Thresholds",
    "is_psychiatric",
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
