"""Certificates' time index carries the log index: a page of a time range picks its keys from the
index alone (`DecisionFilter.page`) instead of sorting the certificates themselves.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_certificates_tenant_time_index", "certificates", ["tenant_id", "issued_at", "log_index"])
    op.drop_index("ix_certificates_tenant_time", table_name="certificates")


def downgrade() -> None:
    op.create_index("ix_certificates_tenant_time", "certificates", ["tenant_id", "issued_at"])
    op.drop_index("ix_certificates_tenant_time_index", table_name="certificates")
