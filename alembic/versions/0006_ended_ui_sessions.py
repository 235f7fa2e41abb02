"""ended ui sessions

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 14:18:05.298683

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel
import relay.db.types

# revision identifiers, used by Alembic.
revision: str = '0006'
down_revision: Union[str, Sequence[str], None] = '0005'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('ended_ui_sessions',
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('ended_at', relay.db.types.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_table('ended_ui_sessions')
