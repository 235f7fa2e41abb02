"""operational events (events.owner, events.district_id nullable) and subscription_hours

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 12:33:19.264894

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel
import relay.db.types

# revision identifiers, used by Alembic.
revision: str = '0005'
down_revision: Union[str, Sequence[str], None] = '0004'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('subscription_hours',
    sa.Column('subscription_id', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('hour', relay.db.types.UTCDateTime(), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('succeeded', sa.Integer(), nullable=False),
    sa.Column('failed', sa.Integer(), nullable=False),
    sa.Column('deliveries_failed', sa.Integer(), nullable=False),
    sa.Column('duration_ms', sa.BigInteger(), nullable=False),
    sa.Column('le_5', sa.Integer(), nullable=False),
    sa.Column('le_10', sa.Integer(), nullable=False),
    sa.Column('le_25', sa.Integer(), nullable=False),
    sa.Column('le_50', sa.Integer(), nullable=False),
    sa.Column('le_100', sa.Integer(), nullable=False),
    sa.Column('le_250', sa.Integer(), nullable=False),
    sa.Column('le_500', sa.Integer(), nullable=False),
    sa.Column('le_1000', sa.Integer(), nullable=False),
    sa.Column('le_2500', sa.Integer(), nullable=False),
    sa.Column('le_5000', sa.Integer(), nullable=False),
    sa.Column('le_15000', sa.Integer(), nullable=False),
    sa.Column('le_inf', sa.Integer(), nullable=False),
    sa.Column('last_success_at', relay.db.types.UTCDateTime(), nullable=True),
    sa.Column('last_failure_at', relay.db.types.UTCDateTime(), nullable=True),
    sa.PrimaryKeyConstraint('subscription_id', 'hour')
    )
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('owner', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True))
        batch_op.alter_column('district_id',
               existing_type=sa.VARCHAR(length=64),
               nullable=True)



def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.alter_column('district_id',
               existing_type=sa.VARCHAR(length=64),
               nullable=False)
        batch_op.drop_column('owner')

    op.drop_table('subscription_hours')
