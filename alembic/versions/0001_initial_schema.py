"""initial schema: sites, chairs, devices, patients, sessions, samples, events

Revision ID: 0001
Revises: 
Create Date: 2026-11-25 02:43:38.843647
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table('patients',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('pseudonym', sa.String(length=64), nullable=False),
    sa.Column('initials', sa.String(length=8), nullable=False),
    sa.Column('weight_kg', sa.Float(), nullable=True),
    sa.Column('birth_year', sa.Integer(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_patients')),
    sa.UniqueConstraint('pseudonym', name=op.f('uq_patients_pseudonym'))
    )
    op.create_table('sites',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=120), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sites')),
    sa.UniqueConstraint('name', name=op.f('uq_sites_name'))
    )
    op.create_table('chairs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('site_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=60), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['site_id'], ['sites.id'], name=op.f('fk_chairs_site_id_sites'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_chairs')),
    sa.UniqueConstraint('site_id', 'name', name=op.f('uq_chairs_site_id_name'))
    )
    with op.batch_alter_table('chairs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_chairs_site_id'), ['site_id'], unique=False)

    op.create_table('devices',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('identifier', sa.String(length=128), nullable=False),
    sa.Column('kind', sa.String(length=40), nullable=False),
    sa.Column('chair_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['chair_id'], ['chairs.id'], name=op.f('fk_devices_chair_id_chairs'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_devices')),
    sa.UniqueConstraint('identifier', name=op.f('uq_devices_identifier'))
    )
    with op.batch_alter_table('devices', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_devices_chair_id'), ['chair_id'], unique=False)

    op.create_table('sessions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('chair_id', sa.Integer(), nullable=False),
    sa.Column('patient_id', sa.Integer(), nullable=False),
    sa.Column('phase', sa.Enum('checked_in', 'baseline', 'infusion', 'recovery', 'discharged', name='sessionphase', native_enum=False, length=24), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['chair_id'], ['chairs.id'], name=op.f('fk_sessions_chair_id_chairs')),
    sa.ForeignKeyConstraint(['patient_id'], ['patients.id'], name=op.f('fk_sessions_patient_id_patients')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sessions'))
    )
    with op.batch_alter_table('sessions', schema=None) as batch_op:
        batch_op.create_index('ix_sessions_chair_id_ended_at', ['chair_id', 'ended_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_sessions_patient_id'), ['patient_id'], unique=False)

    op.create_table('samples',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('session_id', sa.Integer(), nullable=True),
    sa.Column('device_id', sa.Integer(), nullable=False),
    sa.Column('chair_id', sa.Integer(), nullable=True),
    sa.Column('vital', sa.String(length=16), nullable=False),
    sa.Column('value', sa.Float(), nullable=False),
    sa.Column('unit', sa.String(length=16), nullable=False),
    sa.Column('device_time', sa.DateTime(timezone=True), nullable=False),
    sa.Column('received_time', sa.DateTime(timezone=True), nullable=False),
    sa.Column('quality', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['chair_id'], ['chairs.id'], name=op.f('fk_samples_chair_id_chairs')),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], name=op.f('fk_samples_device_id_devices')),
    sa.ForeignKeyConstraint(['session_id'], ['sessions.id'], name=op.f('fk_samples_session_id_sessions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_samples'))
    )
    with op.batch_alter_table('samples', schema=None) as batch_op:
        batch_op.create_index('ix_samples_chair_id_vital_received_time', ['chair_id', 'vital', 'received_time'], unique=False)
        batch_op.create_index('ix_samples_device_id_received_time', ['device_id', 'received_time'], unique=False)
        batch_op.create_index('ix_samples_session_id_vital_device_time', ['session_id', 'vital', 'device_time'], unique=False)

    op.create_table('session_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('session_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.Enum('check_in', 'baseline_start', 'infusion_start', 'rate_change', 'infusion_pause', 'infusion_resume', 'infusion_stop', 'bp_medication', 'note', 'discharge', name='eventkind', native_enum=False, length=24), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('recorded_by', sa.String(length=80), nullable=False),
    sa.Column('recorded_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('value', sa.Float(), nullable=True),
    sa.Column('unit', sa.String(length=24), nullable=True),
    sa.Column('note', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['session_id'], ['sessions.id'], name=op.f('fk_session_events_session_id_sessions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_session_events'))
    )
    with op.batch_alter_table('session_events', schema=None) as batch_op:
        batch_op.create_index('ix_session_events_session_id_at', ['session_id', 'at'], unique=False)


def downgrade() -> None:

    with op.batch_alter_table('session_events', schema=None) as batch_op:
        batch_op.drop_index('ix_session_events_session_id_at')

    op.drop_table('session_events')
    with op.batch_alter_table('samples', schema=None) as batch_op:
        batch_op.drop_index('ix_samples_session_id_vital_device_time')
        batch_op.drop_index('ix_samples_device_id_received_time')
        batch_op.drop_index('ix_samples_chair_id_vital_received_time')

    op.drop_table('samples')
    with op.batch_alter_table('sessions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_sessions_patient_id'))
        batch_op.drop_index('ix_sessions_chair_id_ended_at')

    op.drop_table('sessions')
    with op.batch_alter_table('devices', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_devices_chair_id'))

    op.drop_table('devices')
    with op.batch_alter_table('chairs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_chairs_site_id'))

    op.drop_table('chairs')
    op.drop_table('sites')
    op.drop_table('patients')

