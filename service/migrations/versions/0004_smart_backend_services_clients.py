"""smart backend services clients

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "smart_clients",
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("jwks", sa.JSON(), nullable=False),
        sa.Column("scopes", sa.String(length=1024), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("client_id", name=op.f("pk_smart_clients")),
        sa.UniqueConstraint("name", name=op.f("uq_smart_clients_name")),
    )
    op.create_table(
        "smart_assertion_jtis",
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("jti", sa.String(length=255), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["client_id"], ["smart_clients.client_id"],
                                name=op.f("fk_smart_assertion_jtis_client_id_smart_clients")),
        sa.PrimaryKeyConstraint("client_id", "jti", name=op.f("pk_smart_assertion_jtis")),
    )
    with op.batch_alter_table("smart_assertion_jtis", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_smart_assertion_jtis_expires_at"), ["expires_at"], unique=False)

    op.create_table(
        "smart_access_tokens",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("scopes", sa.String(length=1024), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["client_id"], ["smart_clients.client_id"],
                                name=op.f("fk_smart_access_tokens_client_id_smart_clients")),
        sa.PrimaryKeyConstraint("token_hash", name=op.f("pk_smart_access_tokens")),
    )
    with op.batch_alter_table("smart_access_tokens", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_smart_access_tokens_client_id"), ["client_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_smart_access_tokens_expires_at"), ["expires_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("smart_access_tokens", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_smart_access_tokens_expires_at"))
        batch_op.drop_index(batch_op.f("ix_smart_access_tokens_client_id"))
    op.drop_table("smart_access_tokens")
    with op.batch_alter_table("smart_assertion_jtis", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_smart_assertion_jtis_expires_at"))
    op.drop_table("smart_assertion_jtis")
    op.drop_table("smart_clients")
