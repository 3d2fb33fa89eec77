"""alarm groups: one alarm per parameter, its vital and worst value; the tier of each transition

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-25 08:00:00.000000

Alarms stored before alarm groups were one per rule: each is its own group, and each of its
transitions showed its one rule.
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0010'
down_revision: str | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('alarms', schema=None) as batch_op:
        batch_op.add_column(sa.Column('alarm_group', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('vital', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('worst_value', sa.Float(), nullable=True))
    op.execute("UPDATE alarms SET alarm_group = rule_id")
    with op.batch_alter_table('alarms', schema=None) as batch_op:
        batch_op.alter_column(
            'alarm_group', existing_type=sa.String(length=64), nullable=False
        )

    with op.batch_alter_table('alarm_transitions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('rule_id', sa.String(length=64), nullable=True))
    op.execute(
        "UPDATE alarm_transitions SET rule_id = "
        "(SELECT alarms.rule_id FROM alarms WHERE alarms.id = alarm_transitions.alarm_id)"
    )
    with op.batch_alter_table('alarm_transitions', schema=None) as batch_op:
        batch_op.alter_column('rule_id', existing_type=sa.String(length=64), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table('alarm_transitions', schema=None) as batch_op:
        batch_op.drop_column('rule_id')

    with op.batch_alter_table('alarms', schema=None) as batch_op:
        batch_op.drop_column('worst_value')
        batch_op.drop_column('vital')
        batch_op.drop_column('alarm_group')
