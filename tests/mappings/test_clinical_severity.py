"""Severity bands of outcome scores (mappings/clinical.py, clinical reference section 7.2)."""

from __future__ import annotations

from itertools import pairwise

import pytest

from mappings.clinical import INSTRUMENTS, SEVERITY_BANDS, band_for, severity_band


@pytest.mark.parametrize(("instrument", "score", "band"), [
    ("phq9", 0, "minimal"), ("phq9", 4, "minimal"), ("phq9", 5, "mild"), ("phq9", 14, "moderate"),
    ("phq9", 15, "moderately-severe"), ("phq9", 19, "moderately-severe"), ("phq9", 20, "severe"),
    ("phq9", 27, "severe"),
    ("gad7", 4, "minimal"), ("gad7", 9, "mild"), ("gad7", 10, "moderate"), ("gad7", 15, "severe"),
    ("gad7", 21, "severe"),
    ("qids-sr16", 5, "none"), ("qids-sr16", 6, "mild"), ("qids-sr16", 16, "severe"), ("qids-sr16", 21, "very-severe"),
    ("bdi2", 13, "minimal"), ("bdi2", 14, "mild"), ("bdi2", 28, "moderate"), ("bdi2", 29, "severe"),
    ("bdi2", 63, "severe")])
def test_the_band_of_a_score_follows_the_reference_cut_offs(instrument: str, score: int, band: str) -> None:
    assert severity_band(instrument, score) == band


@pytest.mark.parametrize("instrument", ["madrs", "hamd17", "pcl5", "ymbocs", "cssrs", "pain-nrs", "peg", "cadss"])
def test_instruments_without_bands_in_the_reference_have_none(instrument: str) -> None:
    assert severity_band(instrument, 5) is None


@pytest.mark.parametrize(("instrument", "score"), [("phq9", -1), ("phq9", 28), ("gad7", 22), ("unknown", 3)])
def test_scores_outside_the_range_have_no_band(instrument: str, score: int) -> None:
    assert severity_band(instrument, score) is None


@pytest.mark.parametrize("instrument", sorted(SEVERITY_BANDS))
def test_bands_cover_the_instrument_range_without_gaps_or_overlaps(instrument: str) -> None:
    bands, inst = SEVERITY_BANDS[instrument], INSTRUMENTS[instrument]
    assert (bands[0].low, bands[-1].high) == (inst.min_score, inst.max_score)
    assert all(b.low == a.high + 1 for a, b in pairwise(bands))
    for score in range(int(inst.min_score), int(inst.max_score) + 1):
        band = band_for(instrument, score)
        assert band is not None and band.low <= score <= band.high
