"""samples stored once: unique on (device, vital, device time) (issue 15)

A device measures one value of a vital at one moment; a second row for the same moment is a
resend (a lost answer, an MQTT redelivery, an HL7 message sent again). Ingest now skips such
a row (INSERT ... ON CONFLICT DO NOTHING) and answers it as a duplicate: the first value
stored for a moment wins. Rows already stored twice are resolved the same way before the
index is built: the earliest row (lowest id) of each (device, vital, device time) stays, the
later ones go; how many is logged. Nothing references a sample by id.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 02:30:00.000000
"""
import logging
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

log = logging.getLogger("alembic.runtime.migration")


def upgrade() -> None:
    removed = op.get_bind().execute(
        sa.text(
            "DELETE FROM samples WHERE id NOT IN"
            " (SELECT MIN(id) FROM samples GROUP BY device_id, vital, device_time)"
        )
    ).rowcount
    if removed:
        log.warning("removed %d samples stored twice (same device, vital and device time)", removed)
    # A unique index, not a table constraint: SQLite builds it in place, without copying
    # the table as batch mode would for a constraint.
    op.create_index(
        'uq_samples_device_id_vital_device_time',
        'samples',
        ['device_id', 'vital', 'device_time'],
        unique=True,
    )


def downgrade() -> None:
    op.drop_index('uq_samples_device_id_vital_device_time', table_name='samples')
