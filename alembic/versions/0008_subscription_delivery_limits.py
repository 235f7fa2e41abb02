"""subscription delivery limits: max_in_flight, max_per_second

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 15:45:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

revision: str = '0008'
down_revision: Union[str, Sequence[str], None] = '0007'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('subscriptions') as batch:
        batch.add_column(sa.Column('max_in_flight', sa.Integer(), server_default='8', nullable=False))
        batch.add_column(sa.Column('max_per_second', sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('subscriptions') as batch:
        batch.drop_column('max_per_second')
        batch.drop_column('max_in_flight')
