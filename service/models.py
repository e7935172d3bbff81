"""SQLAlchemy models: one table per collection of the clinic API contract.

Each clinical table keeps the validated clinic record as JSON (``record``, the source of truth
that the API returns) next to typed columns for everything the database must enforce or index:
clinic ids, MRNs, foreign keys between records, statuses and the times used for filtering.
Integrity lives in the schema (foreign keys, unique constraints), not only in code.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

__all__ = [
    "Administration",
    "ApiToken",
    "Base",
    "ClinicRecord",
    "Course",
    "FhirResource",
    "FhirResourceVersion",
    "InfusionSession",
    "Observation",
    "Patient",
    "PatientIdentifier",
    "Practitioner",
    "Referral",
    "SessionPerformer",
    "Vitals",
]

ID = String(64)


class UTCDateTime(TypeDecorator):
    """A timestamp stored in UTC and always read back timezone-aware (SQLite keeps no offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: every stored time carries its UTC offset")
        return value.astimezone(UTC).replace(tzinfo=None) if self._naive(dialect) else value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    @staticmethod
    def _naive(dialect: object) -> bool:
        return getattr(dialect, "name", "") == "sqlite"

# Deterministic constraint names so Alembic migrations are portable between SQLite and PostgreSQL.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class ClinicRecord:
    """Columns every clinic record has."""

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    record: Mapped[dict] = mapped_column(JSON, nullable=False)
    content_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    status: Mapped[str | None] = mapped_column(String(32))
    #: clinical-check warnings from the last write (see mappings.checks), kept for the FHIR flags
    warnings: Mapped[list | None] = mapped_column(JSON)
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, index=True)


class Practitioner(ClinicRecord, Base):
    __tablename__ = "practitioners"
    role: Mapped[str] = mapped_column(String(32), nullable=False)
    npi: Mapped[str | None] = mapped_column(String(10), unique=True)


class Patient(ClinicRecord, Base):
    __tablename__ = "patients"
    mrn: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    birth_date: Mapped[date] = mapped_column(Date, nullable=False)
    referring_practitioner_id: Mapped[str | None] = mapped_column(ID, ForeignKey("practitioners.id"))


class PatientIdentifier(Base):
    """Other systems' identifiers of a patient (e.g. the EHR's MRN): one patient per system|value."""

    __tablename__ = "patient_identifiers"
    __table_args__ = (UniqueConstraint("system", "value", name="uq_patient_identifiers_system_value"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    patient_id: Mapped[str] = mapped_column(ID, ForeignKey("patients.id"), nullable=False, index=True)
    system: Mapped[str] = mapped_column(String(255), nullable=False)
    value: Mapped[str] = mapped_column(String(255), nullable=False)


class Referral(ClinicRecord, Base):
    __tablename__ = "referrals"
    patient_id: Mapped[str] = mapped_column(ID, ForeignKey("patients.id"), nullable=False, index=True)
    referrer_id: Mapped[str] = mapped_column(ID, ForeignKey("practitioners.id"), nullable=False)
    referred_on: Mapped[date] = mapped_column(Date, nullable=False)


class Course(ClinicRecord, Base):
    __tablename__ = "courses"
    patient_id: Mapped[str] = mapped_column(ID, ForeignKey("patients.id"), nullable=False, index=True)
    referral_id: Mapped[str | None] = mapped_column(ID, ForeignKey("referrals.id"))
    start_date: Mapped[date] = mapped_column(Date, nullable=False)


class InfusionSession(ClinicRecord, Base):
    """One treatment session (infusion, injection or nasal dosing visit)."""

    __tablename__ = "sessions"
    __table_args__ = (UniqueConstraint("course_id", "number", name="uq_sessions_course_number"),)
    patient_id: Mapped[str] = mapped_column(ID, ForeignKey("patients.id"), nullable=False, index=True)
    course_id: Mapped[str | None] = mapped_column(ID, ForeignKey("courses.id"), index=True)
    number: Mapped[int | None] = mapped_column(Integer)
    start: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)


class SessionPerformer(Base):
    __tablename__ = "session_performers"
    session_id: Mapped[str] = mapped_column(ID, ForeignKey("sessions.id"), primary_key=True)
    practitioner_id: Mapped[str] = mapped_column(ID, ForeignKey("practitioners.id"), primary_key=True)
    function: Mapped[str] = mapped_column(String(32), primary_key=True)


class Administration(ClinicRecord, Base):
    __tablename__ = "administrations"
    session_id: Mapped[str] = mapped_column(ID, ForeignKey("sessions.id"), nullable=False, index=True)
    patient_id: Mapped[str] = mapped_column(ID, ForeignKey("patients.id"), nullable=False, index=True)
    performer_id: Mapped[str | None] = mapped_column(ID, ForeignKey("practitioners.id"))
    drug: Mapped[str] = mapped_column(String(16), nullable=False)
    start: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)


class Observation(ClinicRecord, Base):
    """An outcome score (PHQ-9, GAD-7, MADRS, ...)."""

    __tablename__ = "observations"
    patient_id: Mapped[str] = mapped_column(ID, ForeignKey("patients.id"), nullable=False, index=True)
    session_id: Mapped[str | None] = mapped_column(ID, ForeignKey("sessions.id"), index=True)
    instrument: Mapped[str] = mapped_column(String(32), nullable=False)
    effective: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    safety_signal: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)


class Vitals(ClinicRecord, Base):
    """A set of vital signs taken during a session."""

    __tablename__ = "vitals"
    session_id: Mapped[str] = mapped_column(ID, ForeignKey("sessions.id"), nullable=False, index=True)
    patient_id: Mapped[str] = mapped_column(ID, ForeignKey("patients.id"), nullable=False, index=True)
    effective: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)


class ApiToken(Base):
    """A static bearer token; only its SHA-256 is stored."""

    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128), nullable=False, unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    scopes: Mapped[str] = mapped_column(String(1024), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    #: when the secret stops working; None: until revoked (issue 10)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    #: the last ``token rotate``: the current secret dates from then, not from ``created_at``
    rotated_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    #: the secret before the last rotation, still accepted until ``previous_expires_at`` (grace period)
    previous_token_hash: Mapped[str | None] = mapped_column(String(64), index=True, unique=True)
    previous_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


Index("ix_observations_patient_effective", Observation.patient_id, Observation.effective)


class FhirResource(Base):
    """The current version of every FHIR resource the service emits, as the JSON it serves.

    Mapped once, at write time (architecture.md): reads, searches, sync and $export serve
    ``content`` as stored. ``content_hash`` covers the mapping output without ``meta``, so an
    unchanged mapping never makes a new version.
    """

    __tablename__ = "fhir_resources"
    resource_type: Mapped[str] = mapped_column(String(64), primary_key=True)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    version_id: Mapped[int] = mapped_column(Integer, nullable=False)
    last_updated: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, index=True)
    content: Mapped[str] = mapped_column(Text, nullable=False)
    content_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    deleted: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    #: the clinic patient whose compartment holds the resource (None for practitioners, the clinic)
    patient_id: Mapped[str | None] = mapped_column(ID, index=True)
    source_collection: Mapped[str] = mapped_column(String(32), nullable=False)
    source_id: Mapped[str] = mapped_column(ID, nullable=False)


class FhirResourceVersion(Base):
    """Every version of every FHIR resource (vread and _history)."""

    __tablename__ = "fhir_resource_versions"
    resource_type: Mapped[str] = mapped_column(String(64), primary_key=True)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    version_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    last_updated: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, index=True)
    content: Mapped[str] = mapped_column(Text, nullable=False)
    deleted: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)


Index("ix_fhir_resources_source", FhirResource.source_collection, FhirResource.source_id)


# --- SMART Backend Services (issue 4, item 6) ---


class SmartClient(Base):
    """A registered SMART Backend Services client: its public JWKS and the scopes it may be granted."""

    __tablename__ = "smart_clients"
    client_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), nullable=False, unique=True)
    #: ``{"keys": [...]}``, public keys only, each with a unique ``kid``
    jwks: Mapped[dict] = mapped_column(JSON, nullable=False)
    scopes: Mapped[str] = mapped_column(String(1024), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class SmartAssertionJti(Base):
    """A client assertion ``jti`` already used, kept until the assertion expires (replay protection)."""

    __tablename__ = "smart_assertion_jtis"
    client_id: Mapped[str] = mapped_column(String(64), ForeignKey("smart_clients.client_id"), primary_key=True)
    jti: Mapped[str] = mapped_column(String(255), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, index=True)


class SmartAccessToken(Base):
    """An access token issued at the token endpoint; only its SHA-256 is stored."""

    __tablename__ = "smart_access_tokens"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(64), ForeignKey("smart_clients.client_id"), nullable=False,
                                           index=True)
    scopes: Mapped[str] = mapped_column(String(1024), nullable=False)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, index=True)


# --- FHIR search index (issue 4: search) ---


class FhirSearchIndex(Base):
    """One searchable value of one version of a FHIR resource (service/fhir/search/index.py).

    Rows are versioned: ``valid_from`` is the version's write time and ``valid_to`` the time a
    later version (or a delete) replaced it, so a search can page over the snapshot of its first
    page. Typed value columns by parameter type: token (``token_system``/``token_code``), string
    (``string_norm`` lower-cased without accents, ``string_exact``), date (``date_start`` to
    ``date_end``, half-open, UTC), quantity (``number`` with the unit in the token columns),
    reference (``ref_type``/``ref_id``).
    """

    __tablename__ = "fhir_search_index"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    resource_type: Mapped[str] = mapped_column(String(64), nullable=False)
    resource_id: Mapped[str] = mapped_column(String(64), nullable=False)
    version_id: Mapped[int] = mapped_column(Integer, nullable=False)
    param: Mapped[str] = mapped_column(String(64), nullable=False)
    valid_from: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    valid_to: Mapped[datetime | None] = mapped_column(UTCDateTime())
    token_system: Mapped[str | None] = mapped_column(Text)
    token_code: Mapped[str | None] = mapped_column(Text)
    string_norm: Mapped[str | None] = mapped_column(Text)
    string_exact: Mapped[str | None] = mapped_column(Text)
    date_start: Mapped[datetime | None] = mapped_column(UTCDateTime())
    date_end: Mapped[datetime | None] = mapped_column(UTCDateTime())
    number: Mapped[float | None] = mapped_column(Float)
    ref_type: Mapped[str | None] = mapped_column(String(64))
    ref_id: Mapped[str | None] = mapped_column(String(64))


Index("ix_fhir_search_index_resource", FhirSearchIndex.resource_type, FhirSearchIndex.resource_id,
      FhirSearchIndex.valid_to)
Index("ix_fhir_search_index_token", FhirSearchIndex.resource_type, FhirSearchIndex.param, FhirSearchIndex.token_code)
Index("ix_fhir_search_index_date", FhirSearchIndex.resource_type, FhirSearchIndex.param, FhirSearchIndex.date_start)
Index("ix_fhir_search_index_reference", FhirSearchIndex.param, FhirSearchIndex.ref_id, FhirSearchIndex.ref_type)
Index("ix_fhir_search_index_string", FhirSearchIndex.resource_type, FhirSearchIndex.param,
      FhirSearchIndex.string_norm)
__all__ += ["FhirSearchIndex"]


# --- Sync to external EHRs (issue 5) ---

BIGID = BigInteger().with_variant(Integer, "sqlite")  # SQLite autoincrements INTEGER PRIMARY KEY only


class Destination(Base):
    """An external FHIR server the clinic's data is pushed to (and referrals pulled from).

    ``auth_config`` holds secrets (bearer token, SMART private key) and is never returned by the
    API. The circuit and throttle columns are shared state of every worker delivering to it.
    """

    __tablename__ = "sync_destinations"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), nullable=False, unique=True)
    base_url: Mapped[str] = mapped_column(String(1024), nullable=False)
    auth_kind: Mapped[str] = mapped_column(String(16), nullable=False, default="none")
    auth_config: Mapped[dict] = mapped_column(JSON, nullable=False, default=dict)
    #: resource types sent; see service/sync/destinations.py DEFAULT_TYPES
    resource_types: Mapped[list] = mapped_column(JSON, nullable=False)
    #: which patients: {"kind": "all"}, {"kind": "referred-by", "practitioner_id": ...} or
    #: {"kind": "identifier-system", "system": ...}
    patients: Mapped[dict] = mapped_column(JSON, nullable=False)
    mode: Mapped[str] = mapped_column(String(16), nullable=False, default="transaction")
    max_bundle_entries: Mapped[int] = mapped_column(Integer, nullable=False, default=8)
    rate_limit: Mapped[float | None] = mapped_column(Float)
    connect_timeout: Mapped[float] = mapped_column(Float, nullable=False, default=5.0)
    read_timeout: Mapped[float] = mapped_column(Float, nullable=False, default=30.0)
    retry: Mapped[dict] = mapped_column(JSON, nullable=False, default=dict)
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    pull: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    #: {"Patient": "<_lastUpdated of the newest pulled>", ...}
    pull_watermarks: Mapped[dict] = mapped_column(JSON, nullable=False, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    circuit_state: Mapped[str] = mapped_column(String(16), nullable=False, default="closed")
    circuit_failures: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    circuit_opened_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    #: a 429's Retry-After pauses the whole destination until then
    paused_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_success_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(String(1000))
    last_pull_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_pull_error: Mapped[str | None] = mapped_column(String(1000))


class OutboxMessage(Base):
    """One resource version to deliver to one destination (the transactional outbox).

    ``lane`` orders delivery: rows of one lane (one patient, or ``shared`` for the clinic and its
    practitioners) go out in id order, one worker at a time. ``status``: pending, in-flight (a
    worker holds it until ``lease_until``), delivered, dead (a dead letter), superseded (an older
    version of a resource whose newer row went out in the same request, with the current content).
    """

    __tablename__ = "sync_outbox"
    id: Mapped[int] = mapped_column(BIGID, primary_key=True, autoincrement=True)
    destination_id: Mapped[str] = mapped_column(String(64), ForeignKey("sync_destinations.id", ondelete="CASCADE"),
                                                nullable=False)
    lane: Mapped[str] = mapped_column(String(80), nullable=False)
    resource_type: Mapped[str] = mapped_column(String(64), nullable=False)
    resource_id: Mapped[str] = mapped_column(String(64), nullable=False)
    version_id: Mapped[int] = mapped_column(Integer, nullable=False)
    deleted: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="pending")
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    deferrals: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    claimed_by: Mapped[str | None] = mapped_column(String(128))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(String(1000))
    #: the destination's OperationOutcome of a dead letter
    outcome: Mapped[dict | None] = mapped_column(JSON)


Index("ix_sync_outbox_lane", OutboxMessage.destination_id, OutboxMessage.lane, OutboxMessage.status,
      OutboxMessage.id)
Index("ix_sync_outbox_due", OutboxMessage.destination_id, OutboxMessage.status, OutboxMessage.next_attempt_at)
Index("ix_sync_outbox_resource", OutboxMessage.destination_id, OutboxMessage.resource_type, OutboxMessage.resource_id)


class RemoteResource(Base):
    """What a destination holds of one of our resources: its id there and the content it acknowledged."""

    __tablename__ = "sync_remote"
    destination_id: Mapped[str] = mapped_column(String(64), ForeignKey("sync_destinations.id", ondelete="CASCADE"),
                                                primary_key=True)
    resource_type: Mapped[str] = mapped_column(String(64), primary_key=True)
    resource_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    remote_id: Mapped[str | None] = mapped_column(String(64))
    content_hash: Mapped[str | None] = mapped_column(String(64))
    version_id: Mapped[int | None] = mapped_column(Integer)
    deleted: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    #: our record was created by a pull from this destination: the pull may update it (service/sync/pull.py)
    created_by_pull: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)


Index("ix_sync_remote_remote_id", RemoteResource.destination_id, RemoteResource.resource_type,
      RemoteResource.remote_id)


class DeliveryAttempt(Base):
    """One delivery attempt of one outbox message: the attempt log. No PHI: ids, codes, statuses."""

    __tablename__ = "sync_attempts"
    id: Mapped[int] = mapped_column(BIGID, primary_key=True, autoincrement=True)
    message_id: Mapped[int] = mapped_column(BIGID, ForeignKey("sync_outbox.id", ondelete="CASCADE"), nullable=False,
                                            index=True)
    destination_id: Mapped[str] = mapped_column(String(64), nullable=False)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    worker: Mapped[str] = mapped_column(String(128), nullable=False)
    request: Mapped[str] = mapped_column(String(64), nullable=False)
    status_code: Mapped[int | None] = mapped_column(Integer)
    result: Mapped[str] = mapped_column(String(16), nullable=False)
    error: Mapped[str | None] = mapped_column(String(500))
    duration_ms: Mapped[int] = mapped_column(Integer, nullable=False)


Index("ix_sync_attempts_destination", DeliveryAttempt.destination_id, DeliveryAttempt.at)
__all__ += ["DeliveryAttempt", "Destination", "OutboxMessage", "RemoteResource"]


# --- Audit trail (issue 10) ---


class AuditEventRow(Base):
    """One FHIR AuditEvent (mappings/audit_event.py), append-only: nothing updates or deletes a row
    (on PostgreSQL and SQLite a trigger refuses it, migration 0007). ``content`` is the AuditEvent as
    served; the other columns index it for /fhir/AuditEvent searches."""

    __tablename__ = "audit_events"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    recorded: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, index=True)
    #: AuditEvent.type code (``rest``, or DICOM ``110114`` for a login) and subtype code
    type_code: Mapped[str] = mapped_column(String(16), nullable=False)
    subtype: Mapped[str] = mapped_column(String(32), nullable=False)
    action: Mapped[str] = mapped_column(String(1), nullable=False)
    outcome: Mapped[str] = mapped_column(String(2), nullable=False)
    #: the requesting agent: its kind (api-tokens, smart-clients, ...), identifier value and name
    agent_kind: Mapped[str] = mapped_column(String(32), nullable=False)
    agent: Mapped[str | None] = mapped_column(String(255), index=True)
    agent_name: Mapped[str | None] = mapped_column(String(255))
    content: Mapped[str] = mapped_column(Text, nullable=False)


class AuditEventRef(Base):
    """What an AuditEvent names, for searching: ``kind`` ``patient`` (``Patient/<id>``), ``entity``
    (``Type/id``) or ``record`` (``<collection>/<clinic id>``). Every patient and resource is indexed,
    also those beyond the AuditEvent's listed cap."""

    __tablename__ = "audit_event_refs"
    event_id: Mapped[str] = mapped_column(String(64), ForeignKey("audit_events.id"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(8), primary_key=True)
    ref: Mapped[str] = mapped_column(String(200), primary_key=True)


Index("ix_audit_event_refs_ref", AuditEventRef.ref, AuditEventRef.kind)
Index("ix_audit_events_subtype", AuditEventRow.subtype, AuditEventRow.recorded)
__all__ += ["AuditEventRef", "AuditEventRow"]
