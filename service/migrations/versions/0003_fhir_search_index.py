"""fhir search index

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "fhir_search_index",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("resource_id", sa.String(length=64), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("param", sa.String(length=64), nullable=False),
        sa.Column("valid_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("valid_to", sa.DateTime(timezone=True), nullable=True),
        sa.Column("token_system", sa.Text(), nullable=True),
        sa.Column("token_code", sa.Text(), nullable=True),
        sa.Column("string_norm", sa.Text(), nullable=True),
        sa.Column("string_exact", sa.Text(), nullable=True),
        sa.Column("date_start", sa.DateTime(timezone=True), nullable=True),
        sa.Column("date_end", sa.DateTime(timezone=True), nullable=True),
        sa.Column("number", sa.Float(), nullable=True),
        sa.Column("ref_type", sa.String(length=64), nullable=True),
        sa.Column("ref_id", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fhir_search_index")),
    )
    with op.batch_alter_table("fhir_search_index", schema=None) as batch_op:
        batch_op.create_index("ix_fhir_search_index_resource", ["resource_type", "resource_id", "valid_to"],
                              unique=False)
        batch_op.create_index("ix_fhir_search_index_token", ["resource_type", "param", "token_code"], unique=False)
        batch_op.create_index("ix_fhir_search_index_date", ["resource_type", "param", "date_start"], unique=False)
        batch_op.create_index("ix_fhir_search_index_reference", ["param", "ref_id", "ref_type"], unique=False)
        batch_op.create_index("ix_fhir_search_index_string", ["resource_type", "param", "string_norm"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("fhir_search_index", schema=None) as batch_op:
        for name in ("string", "reference", "date", "token", "resource"):
            batch_op.drop_index(f"ix_fhir_search_index_{name}")
    op.drop_table("fhir_search_index")
