"""A synthetic clinic to sync: loaded through the clinic API, then changed the ways clinics change it."""

from __future__ import annotations

import copy
from typing import Any

from service.synthetic import clinic_lines, clinic_records


def load(api, patients: int) -> list[tuple[str, dict[str, Any]]]:
    """Import a synthetic clinic of ``patients`` full courses; returns its records."""
    response = api.import_ndjson("\n".join(clinic_lines(patients)))
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["rejected"] == 0
    return list(clinic_records(patients))


def change(api, records: list[tuple[str, dict[str, Any]]], *, round_: int = 1) -> dict[str, int]:
    """Update some records and enter some in error, as a clinic does after the first sync:
    patients made inactive, scores corrected, sessions entered in error (their AdverseEvents
    must then disappear from the destination). Returns what was changed."""
    done = {"patients": 0, "observations": 0, "sessions": 0}
    patients = [r for k, r in records if k == "patients"]
    for record in patients[round_ - 1::7][:6]:
        body = {**copy.deepcopy(record), "status": "inactive" if round_ % 2 else "active"}
        _put(api, "patients", body)
        done["patients"] += 1
    scores = [r for k, r in records if k == "observations" and r.get("items") and r["items"][0] < 3]
    for record in scores[round_::40][:8]:
        body = copy.deepcopy(record)
        body["items"][0] += 1
        body["score"] += 1
        _put(api, "observations", body)
        done["observations"] += 1
    sessions = [r for k, r in records if k == "sessions" and r.get("adverse_events")]
    for record in sessions[round_::9][:4]:
        _put(api, "sessions", {**copy.deepcopy(record), "status": "entered-in-error"})
        done["sessions"] += 1
    return done


def _put(api, collection: str, body: dict[str, Any]) -> None:
    response = api.put(f"/{collection}/{body['id']}", body)
    assert response.status_code == 200, (collection, response.get_json())
