"""Secrets at rest: the columns holding TOTP and webhook secrets widen to hold sealed values
(`v1:<key id>:<base64>`, server/sealing.py).

The migration does not seal anything: it cannot see the key-encryption key, which never lives in the
database. Values still in plaintext are sealed by the server at start-up (`licet.server.app`) or by
`licet secrets rotate`, and read nowhere else.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

# (table, column, nullable, width before this revision)
_COLUMNS = (("users", "totp_secret", True, 64), ("users", "totp_pending_secret", True, 64),
            ("webhooks", "secret", False, 100))
_SEALED_WIDTH = 255


def upgrade() -> None:
    for table, column, nullable, width in _COLUMNS:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column(column, existing_type=sa.String(length=width), type_=sa.String(length=_SEALED_WIDTH),
                                  existing_nullable=nullable)


def downgrade() -> None:
    # Code before this revision reads the columns as plaintext: sealed values would be unusable to it,
    # and it cannot open them. Refuse rather than leave people unable to sign in with TOTP.
    connection = op.get_bind()
    for table, column, _nullable, _width in _COLUMNS:
        sealed = connection.execute(sa.text(f"SELECT count(*) FROM {table} WHERE {column} LIKE 'v1:%'")).scalar_one()
        if sealed:
            raise RuntimeError(f"{table}.{column} holds {sealed} sealed secrets that code before revision 0009 "
                               "cannot read: downgrading below 0009 is refused (docs/secrets.md)")
    for table, column, nullable, width in _COLUMNS:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column(column, existing_type=sa.String(length=_SEALED_WIDTH), type_=sa.String(length=width),
                                  existing_nullable=nullable)
