"""destinations gain the resource types of mapping revision 2

Mapping revision 2 (issue 11) emits Medication, QuestionnaireResponse, CareTeam and Flag, which
resources a destination already receives now reference (MedicationAdministration.medicationReference,
Observation.derivedFrom, CarePlan.careTeam). A destination that took every default type gets the
new defaults; any other gets the types its chosen ones reference, so nothing it holds dangles.
Run ``ketamine-fhir remap`` after upgrading to queue the new resources.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

#: the order of service/sync/destinations.py SYNCABLE_TYPES at this revision
ORDER = ("Organization", "Practitioner", "PractitionerRole", "Patient", "Condition", "ServiceRequest", "CarePlan",
         "CareTeam", "Encounter", "Procedure", "Medication", "MedicationAdministration", "QuestionnaireResponse",
         "Observation", "AdverseEvent", "Flag", "Provenance")
OLD_DEFAULT = {"Organization", "Practitioner", "PractitionerRole", "Patient", "Condition", "ServiceRequest",
               "CarePlan", "Encounter", "Procedure", "MedicationAdministration", "Observation", "AdverseEvent"}
NEW = ("CareTeam", "Medication", "QuestionnaireResponse", "Flag")
#: a chosen type -> the new type its resources reference
NEEDS = {"MedicationAdministration": "Medication", "Observation": "QuestionnaireResponse", "CarePlan": "CareTeam"}


def upgraded(types: list[str]) -> list[str]:
    """The types a destination receives after this revision."""
    have = set(types)
    if have >= OLD_DEFAULT:
        have |= set(NEW)
    have |= {NEEDS[t] for t in types if t in NEEDS}
    return [t for t in ORDER if t in have]


def upgrade() -> None:
    conn = op.get_bind()
    table = sa.table("sync_destinations", sa.column("id"), sa.column("resource_types", sa.JSON))
    for row in conn.execute(sa.select(table.c.id, table.c.resource_types)).all():
        types = list(row.resource_types)
        new = upgraded(types)
        if new != types:
            conn.execute(table.update().where(table.c.id == row.id).values(resource_types=new))


def downgrade() -> None:
    conn = op.get_bind()
    table = sa.table("sync_destinations", sa.column("id"), sa.column("resource_types", sa.JSON))
    for row in conn.execute(sa.select(table.c.id, table.c.resource_types)).all():
        conn.execute(table.update().where(table.c.id == row.id)
                     .values(resource_types=[t for t in row.resource_types if t not in NEW]))
