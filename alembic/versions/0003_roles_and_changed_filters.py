"""roles and changed filters: subscriptions.roles, subscriptions.changed

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 11:00:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

# revision identifiers, used by Alembic.
revision: str = '0003'
down_revision: Union[str, Sequence[str], None] = '0002'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table('subscriptions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('roles', sa.JSON(), server_default='[]', nullable=False))
        batch_op.add_column(sa.Column('changed', sa.JSON(), server_default='[]', nullable=False))


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('subscriptions', schema=None) as batch_op:
        batch_op.drop_column('changed')
        batch_op.drop_column('roles')
