"""alarms, alarm transitions, limit overrides and session baselines

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 03:31:16.970696
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op



revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table('alarms',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('session_id', sa.Integer(), nullable=False),
    sa.Column('chair_id', sa.Integer(), nullable=False),
    sa.Column('rule_id', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('priority', sa.String(length=16), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('text', sa.String(length=200), nullable=False),
    sa.Column('value', sa.Float(), nullable=True),
    sa.Column('limit_value', sa.Float(), nullable=True),
    sa.Column('condition_active', sa.Boolean(), nullable=False),
    sa.Column('audio_paused', sa.Boolean(), nullable=False),
    sa.Column('raised_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('acknowledged_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('acknowledged_by', sa.String(length=80), nullable=True),
    sa.Column('cleared_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('escalate_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('protocol_version', sa.String(length=40), nullable=False),
    sa.ForeignKeyConstraint(['chair_id'], ['chairs.id'], name=op.f('fk_alarms_chair_id_chairs')),
    sa.ForeignKeyConstraint(['session_id'], ['sessions.id'], name=op.f('fk_alarms_session_id_sessions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_alarms'))
    )
    with op.batch_alter_table('alarms', schema=None) as batch_op:
        batch_op.create_index('ix_alarms_chair_id_raised_at', ['chair_id', 'raised_at'], unique=False)
        batch_op.create_index('ix_alarms_session_id_raised_at', ['session_id', 'raised_at'], unique=False)
        batch_op.create_index('ix_alarms_state', ['state'], unique=False)

    op.create_table('limit_overrides',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('session_id', sa.Integer(), nullable=False),
    sa.Column('rule_id', sa.String(length=64), nullable=False),
    sa.Column('old_value', sa.Float(), nullable=False),
    sa.Column('new_value', sa.Float(), nullable=False),
    sa.Column('changed_by', sa.String(length=80), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('reverted', sa.Boolean(), nullable=False),
    sa.Column('protocol_version', sa.String(length=40), nullable=False),
    sa.ForeignKeyConstraint(['session_id'], ['sessions.id'], name=op.f('fk_limit_overrides_session_id_sessions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_limit_overrides'))
    )
    with op.batch_alter_table('limit_overrides', schema=None) as batch_op:
        batch_op.create_index('ix_limit_overrides_session_id_at', ['session_id', 'at'], unique=False)

    op.create_table('alarm_transitions',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('alarm_id', sa.String(length=64), nullable=False),
    sa.Column('event', sa.String(length=24), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('priority', sa.String(length=16), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('value', sa.Float(), nullable=True),
    sa.Column('limit_value', sa.Float(), nullable=True),
    sa.Column('text', sa.String(length=200), nullable=False),
    sa.Column('actor', sa.String(length=80), nullable=True),
    sa.Column('condition_active', sa.Boolean(), nullable=False),
    sa.Column('audio_paused', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['alarm_id'], ['alarms.id'], name=op.f('fk_alarm_transitions_alarm_id_alarms')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_alarm_transitions'))
    )
    with op.batch_alter_table('alarm_transitions', schema=None) as batch_op:
        batch_op.create_index('ix_alarm_transitions_alarm_id_at', ['alarm_id', 'at'], unique=False)
    op.create_table('session_baselines',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('session_id', sa.Integer(), nullable=False),
    sa.Column('vital', sa.String(length=16), nullable=False),
    sa.Column('value', sa.Float(), nullable=False),
    sa.Column('set_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['session_id'], ['sessions.id'], name=op.f('fk_session_baselines_session_id_sessions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_session_baselines')),
    sa.UniqueConstraint('session_id', 'vital', name=op.f('uq_session_baselines_session_id_vital'))
    )


def downgrade() -> None:
    op.drop_table('session_baselines')

    with op.batch_alter_table('alarm_transitions', schema=None) as batch_op:
        batch_op.drop_index('ix_alarm_transitions_alarm_id_at')

    op.drop_table('alarm_transitions')
    with op.batch_alter_table('limit_overrides', schema=None) as batch_op:
        batch_op.drop_index('ix_limit_overrides_session_id_at')

    op.drop_table('limit_overrides')
    with op.batch_alter_table('alarms', schema=None) as batch_op:
        batch_op.drop_index('ix_alarms_state')
        batch_op.drop_index('ix_alarms_session_id_raised_at')
        batch_op.drop_index('ix_alarms_chair_id_raised_at')

    op.drop_table('alarms')

