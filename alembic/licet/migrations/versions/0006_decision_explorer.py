"""The decisions explorer: certificates found by rule (a row per rule a certificate names, filled from
the stored certificates), and indexes for paging by outcome and by agent.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import json

import sqlalchemy as sa

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_BATCH = 5000


def upgrade() -> None:
    op.create_table(
        "certificate_rules",
        sa.Column("tenant_id", sa.String(length=64), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("rule", sa.String(length=200), nullable=False),
        sa.Column("log_index", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "rule", "log_index"),
    )
    with op.batch_alter_table("certificates", schema=None) as batch_op:
        batch_op.create_index("ix_certificates_outcome", ["tenant_id", "outcome", "log_index"], unique=False)
        batch_op.create_index("ix_certificates_principal", ["tenant_id", "principal_id", "log_index"], unique=False)
    connection = op.get_bind()
    rules = sa.table("certificate_rules", sa.column("tenant_id"), sa.column("rule"), sa.column("log_index"))
    last = ("", -1)
    while True:  # keyset over (tenant, index): memory stays flat however many certificates exist
        rows = connection.execute(sa.text(
            "SELECT tenant_id, log_index, body FROM certificates WHERE (tenant_id > :t) OR "
            "(tenant_id = :t AND log_index > :i) ORDER BY tenant_id, log_index LIMIT :n"),
            {"t": last[0], "i": last[1], "n": _BATCH}).all()
        if not rows:
            break
        named = [{"tenant_id": t, "rule": rule, "log_index": i}
                 for t, i, body in rows for rule in sorted(set(json.loads(body).get("rules") or []))]
        if named:
            connection.execute(sa.insert(rules), named)
        last = (rows[-1][0], rows[-1][1])


def downgrade() -> None:
    with op.batch_alter_table("certificates", schema=None) as batch_op:
        batch_op.drop_index("ix_certificates_principal")
        batch_op.drop_index("ix_certificates_outcome")
    op.drop_table("certificate_rules")
