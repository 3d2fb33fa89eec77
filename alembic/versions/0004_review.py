"""review annotations: notes on sessions and actionable marks on alarms (issue 8)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 05:00:00.000000
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('review_annotations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('session_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.Enum('note', 'alarm_mark', name='annotationkind', native_enum=False, length=24), nullable=False),
    sa.Column('alarm_id', sa.String(length=64), nullable=True),
    sa.Column('actionable', sa.Boolean(), nullable=True),
    sa.Column('text', sa.Text(), nullable=True),
    sa.Column('author', sa.String(length=80), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['alarm_id'], ['alarms.id'], name=op.f('fk_review_annotations_alarm_id_alarms')),
    sa.ForeignKeyConstraint(['session_id'], ['sessions.id'], name=op.f('fk_review_annotations_session_id_sessions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_review_annotations'))
    )
    with op.batch_alter_table('review_annotations', schema=None) as batch_op:
        batch_op.create_index('ix_review_annotations_alarm_id_at', ['alarm_id', 'at'], unique=False)
        batch_op.create_index('ix_review_annotations_session_id_at', ['session_id', 'at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('review_annotations', schema=None) as batch_op:
        batch_op.drop_index('ix_review_annotations_session_id_at')
        batch_op.drop_index('ix_review_annotations_alarm_id_at')

    op.drop_table('review_annotations')
