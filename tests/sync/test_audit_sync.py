"""Sync delivery is audited (issue 10): each request sent to a destination is one AuditEvent naming
the service (requestor) and the destination, the resources it carried, and how it ended."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select

from mappings.datatypes import fhir_id
from service import audit, models
from tests.sync import test_engine
from tests.sync.test_engine import PATIENT

# the delivery engine's fixtures: a tiny clinic, a destination played by ``responses``, a clock
add_destination, clinic, clock, deliver, ehr = (test_engine.add_destination, test_engine.clinic, test_engine.clock,
                                                test_engine.deliver, test_engine.ehr)

BASE = "https://clinic.example.org/fhir"


def sync_events(app, db) -> list[dict[str, Any]]:
    assert audit.flush(app)
    db.rollback()
    rows = db.scalars(select(models.AuditEventRow).where(models.AuditEventRow.agent_kind == "service")
                      .order_by(models.AuditEventRow.recorded, models.AuditEventRow.id))
    return [json.loads(r.content) for r in rows]


def test_each_delivery_request_is_one_event_with_the_destination_and_its_resources(app, db, ehr, add_destination,
                                                                                 deliver):
    dest_id = add_destination()
    deliver(dest_id)
    shared, lane = sync_events(app, db)  # one transaction per lane (see test_engine)
    for event in (shared, lane):
        assert (event["subtype"][0]["code"], event["action"], event["outcome"]) == ("transaction", "E", "0")
        assert event["agent"][0]["who"]["identifier"]["system"] == f"{BASE}/organization"
        assert event["agent"][1] == {"who": {"identifier": {"system": f"{BASE}/sync-destinations", "value": dest_id},
                                             "display": "ehr"}, "name": "ehr", "requestor": False}
    sent = [e["resource"]["resourceType"] for e in ehr.bodies[1]["entry"]]  # our ids are not sent
    patient = f"Patient/{fhir_id(BASE, 'Patient', 'patients', PATIENT['id'])}"
    listed = {e["what"]["reference"] for e in lane["entity"]}
    assert sorted(r.split("/")[0] for r in listed) == sorted(sent) and patient in listed
    assert [e["what"]["reference"] for e in lane["entity"] if e["role"]["code"] == "1"] == [patient]
    assert not [e for e in shared["entity"] if e["role"]["code"] == "1"]  # staff only: no patient


def test_a_failed_delivery_is_a_serious_failure(app, db, ehr, add_destination, deliver):
    dest_id = add_destination()
    ehr.always(lambda request: True, (503, {}, {"resourceType": "OperationOutcome", "issue": []}))
    deliver(dest_id)
    events = sync_events(app, db)
    assert events and {e["outcome"] for e in events} == {"8"}
