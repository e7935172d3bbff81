"""Lists: patient_id / since / status filters and cursor paging."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.factories import OBSERVATION, make, seed_course

pytestmark = pytest.mark.postgres


def _scores(api, n: int) -> None:
    for i in range(n):
        body = make(OBSERVATION, id=f"ob-{i:02d}", instrument="pain-nrs", score=i % 10, items=None)
        assert api.put(f"/observations/ob-{i:02d}", body).status_code == 201


def test_cursor_paging_returns_every_record_once(api):
    seed_course(api)
    _scores(api, 23)
    seen, url, pages = [], "/observations?limit=10", 0
    while url:
        body = api.get(url.removeprefix("/api/v1")).get_json()
        seen += [o["id"] for o in body["items"]]
        url, pages = body.get("next"), pages + 1
    assert pages == 3
    assert sorted(seen) == [f"ob-{i:02d}" for i in range(23)]


def test_a_record_changed_while_paging_is_seen_again_not_lost(api):
    seed_course(api)
    _scores(api, 6)
    first = api.get("/observations?limit=3").get_json()
    changed = make(OBSERVATION, id="ob-00", instrument="pain-nrs", score=9, items=None)
    api.put("/observations/ob-00", changed)
    rest = api.get(f"/observations?limit=10&cursor={first['next_cursor']}").get_json()
    ids = [o["id"] for o in first["items"]] + [o["id"] for o in rest["items"]]
    assert set(ids) == {f"ob-{i:02d}" for i in range(6)}
    assert ids[-1] == "ob-00"


def test_since_returns_only_records_updated_at_or_after_it(api):
    seed_course(api)
    _scores(api, 2)
    later = datetime.now(UTC) + timedelta(seconds=1)
    assert api.get(f"/observations?since={later.isoformat().replace('+00:00', 'Z')}").get_json()["items"] == []
    earlier = (datetime.now(UTC) - timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    assert len(api.get(f"/observations?since={earlier}").get_json()["items"]) == 2


def test_patient_id_filters_each_collection(api):
    seed_course(api)
    api.put("/patients/pt-2", {"id": "pt-2", "mrn": "MRN-0002", "name": {"family": "Birch"},
                               "birth_date": "1990-01-01", "sex": "male"})
    assert [p["id"] for p in api.get("/patients?patient_id=pt-2").get_json()["items"]] == ["pt-2"]
    assert [s["id"] for s in api.get("/sessions?patient_id=pt-1").get_json()["items"]] == ["se-1"]
    assert api.get("/sessions?patient_id=pt-2").get_json()["items"] == []


def test_limit_is_capped_and_the_next_link_keeps_filters(api):
    seed_course(api)
    _scores(api, 3)
    body = api.get("/observations?limit=2&patient_id=pt-1").get_json()
    assert body["limit"] == 2
    assert "patient_id=pt-1" in body["next"]
    assert api.get("/observations?limit=100000").get_json()["limit"] == 500
