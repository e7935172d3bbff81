"""sync destinations outbox remote attempts

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sync_destinations",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("base_url", sa.String(length=1024), nullable=False),
        sa.Column("auth_kind", sa.String(length=16), nullable=False),
        sa.Column("auth_config", sa.JSON(), nullable=False),
        sa.Column("resource_types", sa.JSON(), nullable=False),
        sa.Column("patients", sa.JSON(), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("max_bundle_entries", sa.Integer(), nullable=False),
        sa.Column("rate_limit", sa.Float(), nullable=True),
        sa.Column("connect_timeout", sa.Float(), nullable=False),
        sa.Column("read_timeout", sa.Float(), nullable=False),
        sa.Column("retry", sa.JSON(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("pull", sa.Boolean(), nullable=False),
        sa.Column("pull_watermarks", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("circuit_state", sa.String(length=16), nullable=False),
        sa.Column("circuit_failures", sa.Integer(), nullable=False),
        sa.Column("circuit_opened_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("paused_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_success_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.String(length=1000), nullable=True),
        sa.Column("last_pull_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_pull_error", sa.String(length=1000), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_destinations")),
        sa.UniqueConstraint("name", name=op.f("uq_sync_destinations_name")),
    )
    op.create_table(
        "sync_outbox",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("destination_id", sa.String(length=64), nullable=False),
        sa.Column("lane", sa.String(length=80), nullable=False),
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("resource_id", sa.String(length=64), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("deferrals", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_by", sa.String(length=128), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.String(length=1000), nullable=True),
        sa.Column("outcome", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["destination_id"],
            ["sync_destinations.id"],
            name=op.f("fk_sync_outbox_destination_id_sync_destinations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_outbox")),
    )
    with op.batch_alter_table("sync_outbox", schema=None) as batch_op:
        batch_op.create_index("ix_sync_outbox_due", ["destination_id", "status", "next_attempt_at"], unique=False)
        batch_op.create_index(
            "ix_sync_outbox_resource", ["destination_id", "resource_type", "resource_id"], unique=False
        )
        batch_op.create_index("ix_sync_outbox_lane", ["destination_id", "lane", "status", "id"], unique=False)

    op.create_table(
        "sync_remote",
        sa.Column("destination_id", sa.String(length=64), nullable=False),
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("resource_id", sa.String(length=64), nullable=False),
        sa.Column("remote_id", sa.String(length=64), nullable=True),
        sa.Column("content_hash", sa.String(length=64), nullable=True),
        sa.Column("version_id", sa.Integer(), nullable=True),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["destination_id"],
            ["sync_destinations.id"],
            name=op.f("fk_sync_remote_destination_id_sync_destinations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("destination_id", "resource_type", "resource_id", name=op.f("pk_sync_remote")),
    )
    with op.batch_alter_table("sync_remote", schema=None) as batch_op:
        batch_op.create_index(
            "ix_sync_remote_remote_id", ["destination_id", "resource_type", "remote_id"], unique=False
        )

    op.create_table(
        "sync_attempts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("message_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("destination_id", sa.String(length=64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("worker", sa.String(length=128), nullable=False),
        sa.Column("request", sa.String(length=64), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("result", sa.String(length=16), nullable=False),
        sa.Column("error", sa.String(length=500), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"], ["sync_outbox.id"], name=op.f("fk_sync_attempts_message_id_sync_outbox"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_attempts")),
    )
    with op.batch_alter_table("sync_attempts", schema=None) as batch_op:
        batch_op.create_index("ix_sync_attempts_destination", ["destination_id", "at"], unique=False)
        batch_op.create_index(batch_op.f("ix_sync_attempts_message_id"), ["message_id"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("sync_attempts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sync_attempts_message_id"))
        batch_op.drop_index("ix_sync_attempts_destination")

    op.drop_table("sync_attempts")
    with op.batch_alter_table("sync_remote", schema=None) as batch_op:
        batch_op.drop_index("ix_sync_remote_remote_id")

    op.drop_table("sync_remote")
    with op.batch_alter_table("sync_outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_sync_outbox_lane")
        batch_op.drop_index("ix_sync_outbox_due")
        batch_op.drop_index("ix_sync_outbox_resource")

    op.drop_table("sync_outbox")
    op.drop_table("sync_destinations")
