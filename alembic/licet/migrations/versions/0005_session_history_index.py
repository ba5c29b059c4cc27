"""Session history read from one index range: contributions carry their event's tenant, principal and
time (filled from the events for existing rows), and events are indexed in id order per principal.

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

_COPIED = ("tenant_id", "principal_id", "time")


def upgrade() -> None:
    with op.batch_alter_table("session_contributions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("tenant_id", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("principal_id", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("time", sa.Double(), nullable=True))
    for column in _COPIED:
        op.execute(f"UPDATE session_contributions SET {column} = (SELECT e.{column} FROM session_events e "
                   "WHERE e.id = session_contributions.event_id)")
    with op.batch_alter_table("session_contributions", schema=None) as batch_op:
        batch_op.alter_column("tenant_id", existing_type=sa.String(length=64), nullable=False)
        batch_op.alter_column("principal_id", existing_type=sa.String(length=200), nullable=False)
        batch_op.alter_column("time", existing_type=sa.Double(), nullable=False)
        batch_op.create_index("ix_session_contributions_read",
                              ["tenant_id", "principal_id", "policy_hash", "relevant", "time"], unique=False)
    with op.batch_alter_table("session_events", schema=None) as batch_op:
        batch_op.create_index("ix_session_events_order", ["tenant_id", "principal_id", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("session_events", schema=None) as batch_op:
        batch_op.drop_index("ix_session_events_order")
    with op.batch_alter_table("session_contributions", schema=None) as batch_op:
        batch_op.drop_index("ix_session_contributions_read")
        for column in reversed(_COPIED):
            batch_op.drop_column(column)
