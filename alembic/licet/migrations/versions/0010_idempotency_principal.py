"""Idempotency-Keys belong to a caller, an API key or a person: `idempotency_keys.api_key_id` becomes
`principal`, `key:<API key id>` or `user:<user id>` (before, a person's session had no records, so a
retry with its Idempotency-Key decided again).

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_KEY_ID, _PRINCIPAL = sa.String(length=36), sa.String(length=64)


def upgrade() -> None:
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.alter_column("api_key_id", new_column_name="principal", existing_type=_KEY_ID, type_=_PRINCIPAL,
                              existing_nullable=False)
    op.execute("UPDATE idempotency_keys SET principal = 'key:' || principal")


def downgrade() -> None:
    # Before this revision only API keys had records: a person's would never be read again.
    op.execute("DELETE FROM idempotency_keys WHERE principal NOT LIKE 'key:%'")
    op.execute("UPDATE idempotency_keys SET principal = substr(principal, 5)")
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.alter_column("principal", new_column_name="api_key_id", existing_type=_PRINCIPAL, type_=_KEY_ID,
                              existing_nullable=False)
