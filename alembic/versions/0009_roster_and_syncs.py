"""the roster (records), syncs, bootstraps, events.source, districts.sync_id and synced_at

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 21:30:00

Districts registered before this revision have an empty roster: the events stored from now
on fill it, and their first sync reports every record it never saw as ``created`` (unless
the operator asks that sync not to: ``POST /v1/districts/{id}/resync {"emit_created": false}``).
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel
import relay.db.types

revision: str = '0009'
down_revision: Union[str, Sequence[str], None] = '0008'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

_BIG = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table('syncs',
    sa.Column('id', _BIG, nullable=False),
    sa.Column('district_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('state', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('reason', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('emit_created', sa.Boolean(), nullable=False),
    sa.Column('cursor_taken', sa.Boolean(), nullable=False),
    sa.Column('events_cursor', sqlmodel.sql.sqltypes.AutoString(length=24), nullable=True),
    sa.Column('record_type', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True),
    sa.Column('after', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('deleting', sa.Boolean(), nullable=False),
    sa.Column('records_read', sa.Integer(), nullable=False),
    sa.Column('created', sa.Integer(), nullable=False),
    sa.Column('updated', sa.Integer(), nullable=False),
    sa.Column('deleted', sa.Integer(), nullable=False),
    sa.Column('failures', sa.Integer(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('started_at', relay.db.types.UTCDateTime(), nullable=False),
    sa.Column('finished_at', relay.db.types.UTCDateTime(), nullable=True),
    sa.Column('updated_at', relay.db.types.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('syncs', schema=None) as batch_op:
        batch_op.create_index('ix_syncs_district_id_id', ['district_id', 'id'], unique=False)
    op.create_table('records',
    sa.Column('district_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('type', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('object', sa.Text(), nullable=False),
    sa.Column('event_id', sqlmodel.sql.sqltypes.AutoString(length=24), nullable=True),
    sa.Column('schools', sa.Text(), nullable=False),
    sa.Column('roles', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('sync_id', _BIG, nullable=True),
    sa.Column('updated_at', relay.db.types.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('district_id', 'type', 'id')
    )
    with op.batch_alter_table('records', schema=None) as batch_op:
        batch_op.create_index('ix_records_id', ['id'], unique=False)
    op.create_table('bootstraps',
    sa.Column('id', _BIG, nullable=False),
    sa.Column('subscription_id', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('after_district', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('after_type', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True),
    sa.Column('after_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('matched', sa.Integer(), nullable=False),
    sa.Column('requeued', sa.Integer(), nullable=False),
    sa.Column('done', sa.Boolean(), nullable=False),
    sa.Column('created_at', relay.db.types.UTCDateTime(), nullable=False),
    sa.Column('updated_at', relay.db.types.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('bootstraps', schema=None) as batch_op:
        batch_op.create_index('ix_bootstraps_done_id', ['done', 'id'], unique=False)
    with op.batch_alter_table('districts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('sync_id', _BIG, nullable=True))
        batch_op.add_column(sa.Column('synced_at', relay.db.types.UTCDateTime(), nullable=True))
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('source', sqlmodel.sql.sqltypes.AutoString(length=16), server_default='clever', nullable=False))
    op.execute("UPDATE events SET source = 'relay' WHERE owner IS NOT NULL")


def downgrade() -> None:
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_column('source')
    with op.batch_alter_table('districts', schema=None) as batch_op:
        batch_op.drop_column('synced_at')
        batch_op.drop_column('sync_id')
    with op.batch_alter_table('bootstraps', schema=None) as batch_op:
        batch_op.drop_index('ix_bootstraps_done_id')
    op.drop_table('bootstraps')
    with op.batch_alter_table('records', schema=None) as batch_op:
        batch_op.drop_index('ix_records_id')
    op.drop_table('records')
    with op.batch_alter_table('syncs', schema=None) as batch_op:
        batch_op.drop_index('ix_syncs_district_id_id')
    op.drop_table('syncs')
