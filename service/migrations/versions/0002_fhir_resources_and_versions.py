"""fhir resources and versions

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 04:08:34.377288
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "fhir_resource_versions",
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("last_updated", sa.DateTime(timezone=True), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("resource_type", "id", "version_id", name=op.f("pk_fhir_resource_versions")),
    )
    with op.batch_alter_table("fhir_resource_versions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_fhir_resource_versions_last_updated"), ["last_updated"], unique=False)

    op.create_table(
        "fhir_resources",
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("last_updated", sa.DateTime(timezone=True), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=True),
        sa.Column("source_collection", sa.String(length=32), nullable=False),
        sa.Column("source_id", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("resource_type", "id", name=op.f("pk_fhir_resources")),
    )
    with op.batch_alter_table("fhir_resources", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_fhir_resources_last_updated"), ["last_updated"], unique=False)
        batch_op.create_index(batch_op.f("ix_fhir_resources_patient_id"), ["patient_id"], unique=False)
        batch_op.create_index("ix_fhir_resources_source", ["source_collection", "source_id"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("fhir_resources", schema=None) as batch_op:
        batch_op.drop_index("ix_fhir_resources_source")
        batch_op.drop_index(batch_op.f("ix_fhir_resources_patient_id"))
        batch_op.drop_index(batch_op.f("ix_fhir_resources_last_updated"))

    op.drop_table("fhir_resources")
    with op.batch_alter_table("fhir_resource_versions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_fhir_resource_versions_last_updated"))

    op.drop_table("fhir_resource_versions")
