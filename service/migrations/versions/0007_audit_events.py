"""audit events

The append-only audit trail (issue 10): ``audit_events`` and ``audit_event_refs``, with triggers
that refuse UPDATE and DELETE on both (PostgreSQL: a plpgsql function; SQLite: RAISE(ABORT)).
TRUNCATE is not refused: it needs the table owner's privilege, which the tests use to empty
their database; run the service as a role that does not own the tables to close that too.
Also ``sync_remote.created_by_pull``: which records a pull created (the pull bound, issue 10).

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

TABLES = ("audit_events", "audit_event_refs")

PG_FUNCTION = """
CREATE OR REPLACE FUNCTION audit_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'the audit trail is append-only: % on % refused', TG_OP, TG_TABLE_NAME;
END;
$$ LANGUAGE plpgsql
"""


def upgrade() -> None:
    op.create_table(
        "audit_events",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("recorded", sa.DateTime(timezone=True), nullable=False),
        sa.Column("type_code", sa.String(length=16), nullable=False),
        sa.Column("subtype", sa.String(length=32), nullable=False),
        sa.Column("action", sa.String(length=1), nullable=False),
        sa.Column("outcome", sa.String(length=2), nullable=False),
        sa.Column("agent_kind", sa.String(length=32), nullable=False),
        sa.Column("agent", sa.String(length=255), nullable=True),
        sa.Column("agent_name", sa.String(length=255), nullable=True),
        sa.Column("content", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_events")),
    )
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_events_recorded"), ["recorded"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_events_agent"), ["agent"], unique=False)
        batch_op.create_index("ix_audit_events_subtype", ["subtype", "recorded"], unique=False)
    op.create_table(
        "audit_event_refs",
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("ref", sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(["event_id"], ["audit_events.id"],
                                name=op.f("fk_audit_event_refs_event_id_audit_events")),
        sa.PrimaryKeyConstraint("event_id", "kind", "ref", name=op.f("pk_audit_event_refs")),
    )
    with op.batch_alter_table("audit_event_refs", schema=None) as batch_op:
        batch_op.create_index("ix_audit_event_refs_ref", ["ref", "kind"], unique=False)
    with op.batch_alter_table("sync_remote", schema=None) as batch_op:
        batch_op.add_column(sa.Column("created_by_pull", sa.Boolean(), nullable=False, server_default=sa.false()))
    _append_only()


def _append_only() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(PG_FUNCTION)
        for table in TABLES:
            op.execute(f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                       "FOR EACH ROW EXECUTE FUNCTION audit_append_only()")
        return
    for table in TABLES:
        for operation in ("UPDATE", "DELETE"):
            op.execute(f"CREATE TRIGGER {table}_no_{operation.lower()} BEFORE {operation} ON {table} "
                       f"BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in TABLES:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
        op.execute("DROP FUNCTION IF EXISTS audit_append_only()")
    with op.batch_alter_table("sync_remote", schema=None) as batch_op:
        batch_op.drop_column("created_by_pull")
    with op.batch_alter_table("audit_event_refs", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_event_refs_ref")
    op.drop_table("audit_event_refs")  # SQLite drops a table's triggers with it
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_events_subtype")
        batch_op.drop_index(batch_op.f("ix_audit_events_agent"))
        batch_op.drop_index(batch_op.f("ix_audit_events_recorded"))
    op.drop_table("audit_events")
