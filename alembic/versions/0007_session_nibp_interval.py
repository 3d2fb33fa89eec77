"""sessions.nibp_interval_s: the NIBP auto interval set for a session (issue 14)

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-25 12:00:00.000000
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable, no default: existing sessions keep the protocol's interval for their phase.
    with op.batch_alter_table('sessions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('nibp_interval_s', sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('sessions', schema=None) as batch_op:
        batch_op.drop_column('nibp_interval_s')
