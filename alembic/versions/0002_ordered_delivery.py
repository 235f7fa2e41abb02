"""ordered delivery: subscriptions.ordered, deliveries.waiting_for

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 10:15:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

# revision identifiers, used by Alembic.
revision: str = '0002'
down_revision: Union[str, Sequence[str], None] = '0001'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table('subscriptions', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('ordered', sa.Boolean(), server_default=sa.false(), nullable=False)
        )
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                'waiting_for',
                sa.BigInteger().with_variant(sa.Integer(), 'sqlite'),
                nullable=True,
            )
        )
        batch_op.create_index('ix_deliveries_waiting_for', ['waiting_for'], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_index('ix_deliveries_waiting_for')
        batch_op.drop_column('waiting_for')
    with op.batch_alter_table('subscriptions', schema=None) as batch_op:
        batch_op.drop_column('ordered')
