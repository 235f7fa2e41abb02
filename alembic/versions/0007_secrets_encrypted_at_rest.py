"""secrets encrypted at rest: district tokens and signing secrets become Text

Fernet ciphertext is longer than the values it holds (a 512-character token becomes ~800);
the values already stored stay readable as plain text until ``relay keys reencrypt``.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 15:40:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel

revision: str = '0007'
down_revision: Union[str, Sequence[str], None] = '0006'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('districts') as batch:
        batch.alter_column('token', type_=sa.Text(), existing_type=sqlmodel.sql.sqltypes.AutoString(length=512), existing_nullable=False)
    with op.batch_alter_table('subscriptions') as batch:
        batch.alter_column('secret', type_=sa.Text(), existing_type=sqlmodel.sql.sqltypes.AutoString(length=128), existing_nullable=False)
        batch.alter_column('previous_secret', type_=sa.Text(), existing_type=sqlmodel.sql.sqltypes.AutoString(length=128), existing_nullable=True)


def downgrade() -> None:
    # ciphertext does not fit the old columns: run 'relay keys decrypt' first (not provided:
    # a downgrade past 0007 is not supported once secrets are encrypted)
    raise NotImplementedError("downgrading past 0007 would truncate encrypted secrets")
