"""replays, and events by created time

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 11:05:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel
import relay.db.types

# revision identifiers, used by Alembic.
revision: str = '0004'
down_revision: Union[str, Sequence[str], None] = '0003'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('replays',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('subscription_id', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('since', relay.db.types.UTCDateTime(), nullable=False),
    sa.Column('until', relay.db.types.UTCDateTime(), nullable=False),
    sa.Column('after_created', relay.db.types.UTCDateTime(), nullable=True),
    sa.Column('after_id', sqlmodel.sql.sqltypes.AutoString(length=24), nullable=True),
    sa.Column('matched', sa.Integer(), nullable=False),
    sa.Column('requeued', sa.Integer(), nullable=False),
    sa.Column('done', sa.Boolean(), nullable=False),
    sa.Column('created_at', relay.db.types.UTCDateTime(), nullable=False),
    sa.Column('updated_at', relay.db.types.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('replays', schema=None) as batch_op:
        batch_op.create_index('ix_replays_done_id', ['done', 'id'], unique=False)
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.create_index('ix_events_created_id', ['created', 'id'], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_index('ix_events_created_id')
    with op.batch_alter_table('replays', schema=None) as batch_op:
        batch_op.drop_index('ix_replays_done_id')
    op.drop_table('replays')
