"""alarm outbox: a transition is stored once (alarm id, event and time are unique) (issue 14)

The alarm outbox retries a write whose outcome it could not know and replays its journal
after a restart; this constraint makes either harmless. Rows that would break it (none are
expected: nothing wrote a transition twice before the outbox) are removed first, keeping
the first of each.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 03:00:00.000000
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        sa.text(
            'DELETE FROM alarm_transitions WHERE id NOT IN '
            '(SELECT MIN(id) FROM alarm_transitions GROUP BY alarm_id, event, at)'
        )
    )
    with op.batch_alter_table('alarm_transitions', schema=None) as batch_op:
        batch_op.create_unique_constraint(
            batch_op.f('uq_alarm_transitions_alarm_id_event_at'), ['alarm_id', 'event', 'at']
        )


def downgrade() -> None:
    with op.batch_alter_table('alarm_transitions', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('uq_alarm_transitions_alarm_id_event_at'), type_='unique')
