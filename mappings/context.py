"""What a mapping needs besides the record: the clinic's identity and its related records."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mappings.security_labels import SecurityPolicy

__all__ = ["MappingContext"]

Record = Mapping[str, Any]


def _no_lookup(collection: str, record_id: str) -> Record | None:
    return None


def _no_children(parent_id: str, collection: str) -> list[Record]:
    return []


@dataclass(frozen=True)
class MappingContext:
    """The caller's view of the clinic, passed into pure mappings (no IO inside them).

    ``lookup(collection, id)`` returns a related clinic record (or None). ``children(parent_id,
    collection)`` returns the records of ``collection`` under a parent, in a stable order:
    ``"administrations"`` and ``"vitals"`` of a session id, ``"sessions"`` of a course id. Records
    of administrations and vitals handed to mappings may carry ``patient_id`` (the service adds it).
    Every record may carry ``warnings`` (the clinical checks of its last write), which mappings
    flag on the resource. The service answers from the database, ``ketamine-fhir map`` from the
    records read so far.
    """

    base_uri: str
    clinic_name: str = "Ketamine clinic"
    lookup: Callable[[str, str], Record | None] = field(default=_no_lookup)
    children: Callable[[str, str], list[Record]] = field(default=_no_children)
    #: the clinic's ``meta.security`` policy (mappings/security_labels.py)
    security: SecurityPolicy = field(default_factory=SecurityPolicy)

    def session_patient_id(self, session_id: str) -> str | None:
        session = self.lookup("sessions", session_id)
        return session["patient_id"] if session else None

    def patient_id_of(self, record: Record) -> str:
        """The patient of a record: its ``patient_id`` (the service adds it to nested records), else
        its session's patient.

        :raise ValueError: neither is known
        """
        patient_id = record.get("patient_id") or (
            self.session_patient_id(record["session_id"]) if record.get("session_id") else None)
        if not patient_id:
            raise ValueError(f"record {record.get('id')!r}: no patient_id and no known session to take it from")
        return patient_id
