"""initial schema

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-22 03:31:19.788349
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("scopes", sa.String(length=1024), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_tokens")),
        sa.UniqueConstraint("name", name=op.f("uq_api_tokens_name")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_api_tokens_token_hash")),
    )
    op.create_table(
        "practitioners",
        sa.Column("role", sa.String(length=32), nullable=False),
        sa.Column("npi", sa.String(length=10), nullable=True),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("record", sa.JSON(), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=True),
        sa.Column("warnings", sa.JSON(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_practitioners")),
        sa.UniqueConstraint("npi", name=op.f("uq_practitioners_npi")),
    )
    with op.batch_alter_table("practitioners", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_practitioners_updated_at"), ["updated_at"], unique=False)

    op.create_table(
        "patients",
        sa.Column("mrn", sa.String(length=64), nullable=False),
        sa.Column("birth_date", sa.Date(), nullable=False),
        sa.Column("referring_practitioner_id", sa.String(length=64), nullable=True),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("record", sa.JSON(), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=True),
        sa.Column("warnings", sa.JSON(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["referring_practitioner_id"],
            ["practitioners.id"],
            name=op.f("fk_patients_referring_practitioner_id_practitioners"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_patients")),
        sa.UniqueConstraint("mrn", name=op.f("uq_patients_mrn")),
    )
    with op.batch_alter_table("patients", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_patients_updated_at"), ["updated_at"], unique=False)

    op.create_table(
        "patient_identifiers",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("system", sa.String(length=255), nullable=False),
        sa.Column("value", sa.String(length=255), nullable=False),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patients.id"], name=op.f("fk_patient_identifiers_patient_id_patients")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_patient_identifiers")),
        sa.UniqueConstraint("system", "value", name="uq_patient_identifiers_system_value"),
    )
    with op.batch_alter_table("patient_identifiers", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_patient_identifiers_patient_id"), ["patient_id"], unique=False)

    op.create_table(
        "referrals",
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("referrer_id", sa.String(length=64), nullable=False),
        sa.Column("referred_on", sa.Date(), nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("record", sa.JSON(), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=True),
        sa.Column("warnings", sa.JSON(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patients.id"], name=op.f("fk_referrals_patient_id_patients")
        ),
        sa.ForeignKeyConstraint(
            ["referrer_id"], ["practitioners.id"], name=op.f("fk_referrals_referrer_id_practitioners")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_referrals")),
    )
    with op.batch_alter_table("referrals", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_referrals_patient_id"), ["patient_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_referrals_updated_at"), ["updated_at"], unique=False)

    op.create_table(
        "courses",
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("referral_id", sa.String(length=64), nullable=True),
        sa.Column("start_date", sa.Date(), nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("record", sa.JSON(), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=True),
        sa.Column("warnings", sa.JSON(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["patient_id"], ["patients.id"], name=op.f("fk_courses_patient_id_patients")),
        sa.ForeignKeyConstraint(
            ["referral_id"], ["referrals.id"], name=op.f("fk_courses_referral_id_referrals")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_courses")),
    )
    with op.batch_alter_table("courses", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_courses_patient_id"), ["patient_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_courses_updated_at"), ["updated_at"], unique=False)

    op.create_table(
        "sessions",
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("course_id", sa.String(length=64), nullable=True),
        sa.Column("number", sa.Integer(), nullable=True),
        sa.Column("start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("record", sa.JSON(), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=True),
        sa.Column("warnings", sa.JSON(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["course_id"], ["courses.id"], name=op.f("fk_sessions_course_id_courses")),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patients.id"], name=op.f("fk_sessions_patient_id_patients")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sessions")),
        sa.UniqueConstraint("course_id", "number", name="uq_sessions_course_number"),
    )
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sessions_course_id"), ["course_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_sessions_patient_id"), ["patient_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_sessions_updated_at"), ["updated_at"], unique=False)

    op.create_table(
        "administrations",
        sa.Column("session_id", sa.String(length=64), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("performer_id", sa.String(length=64), nullable=True),
        sa.Column("drug", sa.String(length=16), nullable=False),
        sa.Column("start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("record", sa.JSON(), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=True),
        sa.Column("warnings", sa.JSON(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patients.id"], name=op.f("fk_administrations_patient_id_patients")
        ),
        sa.ForeignKeyConstraint(
            ["performer_id"], ["practitioners.id"], name=op.f("fk_administrations_performer_id_practitioners")
        ),
        sa.ForeignKeyConstraint(
            ["session_id"], ["sessions.id"], name=op.f("fk_administrations_session_id_sessions")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_administrations")),
    )
    with op.batch_alter_table("administrations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_administrations_patient_id"), ["patient_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_administrations_session_id"), ["session_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_administrations_updated_at"), ["updated_at"], unique=False)

    op.create_table(
        "observations",
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("session_id", sa.String(length=64), nullable=True),
        sa.Column("instrument", sa.String(length=32), nullable=False),
        sa.Column("effective", sa.DateTime(timezone=True), nullable=False),
        sa.Column("safety_signal", sa.Boolean(), nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("record", sa.JSON(), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=True),
        sa.Column("warnings", sa.JSON(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patients.id"], name=op.f("fk_observations_patient_id_patients")
        ),
        sa.ForeignKeyConstraint(
            ["session_id"], ["sessions.id"], name=op.f("fk_observations_session_id_sessions")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_observations")),
    )
    with op.batch_alter_table("observations", schema=None) as batch_op:
        batch_op.create_index("ix_observations_patient_effective", ["patient_id", "effective"], unique=False)
        batch_op.create_index(batch_op.f("ix_observations_patient_id"), ["patient_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_observations_session_id"), ["session_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_observations_updated_at"), ["updated_at"], unique=False)

    op.create_table(
        "session_performers",
        sa.Column("session_id", sa.String(length=64), nullable=False),
        sa.Column("practitioner_id", sa.String(length=64), nullable=False),
        sa.Column("function", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["practitioner_id"],
            ["practitioners.id"],
            name=op.f("fk_session_performers_practitioner_id_practitioners"),
        ),
        sa.ForeignKeyConstraint(
            ["session_id"], ["sessions.id"], name=op.f("fk_session_performers_session_id_sessions")
        ),
        sa.PrimaryKeyConstraint(
            "session_id", "practitioner_id", "function", name=op.f("pk_session_performers")
        ),
    )
    op.create_table(
        "vitals",
        sa.Column("session_id", sa.String(length=64), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("effective", sa.DateTime(timezone=True), nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("record", sa.JSON(), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=True),
        sa.Column("warnings", sa.JSON(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["patient_id"], ["patients.id"], name=op.f("fk_vitals_patient_id_patients")),
        sa.ForeignKeyConstraint(["session_id"], ["sessions.id"], name=op.f("fk_vitals_session_id_sessions")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_vitals")),
    )
    with op.batch_alter_table("vitals", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_vitals_patient_id"), ["patient_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_vitals_session_id"), ["session_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_vitals_updated_at"), ["updated_at"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("vitals", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_vitals_updated_at"))
        batch_op.drop_index(batch_op.f("ix_vitals_session_id"))
        batch_op.drop_index(batch_op.f("ix_vitals_patient_id"))

    op.drop_table("vitals")
    op.drop_table("session_performers")
    with op.batch_alter_table("observations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_observations_updated_at"))
        batch_op.drop_index(batch_op.f("ix_observations_session_id"))
        batch_op.drop_index(batch_op.f("ix_observations_patient_id"))
        batch_op.drop_index("ix_observations_patient_effective")

    op.drop_table("observations")
    with op.batch_alter_table("administrations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_administrations_updated_at"))
        batch_op.drop_index(batch_op.f("ix_administrations_session_id"))
        batch_op.drop_index(batch_op.f("ix_administrations_patient_id"))

    op.drop_table("administrations")
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sessions_updated_at"))
        batch_op.drop_index(batch_op.f("ix_sessions_patient_id"))
        batch_op.drop_index(batch_op.f("ix_sessions_course_id"))

    op.drop_table("sessions")
    with op.batch_alter_table("courses", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_courses_updated_at"))
        batch_op.drop_index(batch_op.f("ix_courses_patient_id"))

    op.drop_table("courses")
    with op.batch_alter_table("referrals", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_referrals_updated_at"))
        batch_op.drop_index(batch_op.f("ix_referrals_patient_id"))

    op.drop_table("referrals")
    with op.batch_alter_table("patient_identifiers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_patient_identifiers_patient_id"))

    op.drop_table("patient_identifiers")
    with op.batch_alter_table("patients", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_patients_updated_at"))

    op.drop_table("patients")
    with op.batch_alter_table("practitioners", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_practitioners_updated_at"))

    op.drop_table("practitioners")
    op.drop_table("api_tokens")
