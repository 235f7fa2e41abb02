"""A sync's row: started where the reason arises, in the transaction that causes it.

``begin`` is called by the API (registration with ``start_from: "sync"``, a resync request),
by the page store (a gap, with ``RELAY_RESYNC_ON_GAP``) and by the poller (``RELAY_RESYNC_EVERY``);
it writes a ``syncs`` row, and the caller sets the district ``syncing`` with that ``sync_id``
in the same transaction. Whichever worker holds the district's lease then runs it
(``relay.roster.sync``).
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from relay.db.models import Sync, SyncState
from relay.db.tables import table_of

INITIAL = "initial"
GAP = "gap"
REQUESTED = "requested"
SCHEDULED = "scheduled"

_TABLE = table_of(Sync)


async def begin(
    conn: AsyncConnection,
    district_id: str,
    reason: str,
    now: datetime,
    *,
    emit_created: bool = True,
) -> int:
    """A new running sync of ``district_id``; returns its id."""
    result = await conn.execute(
        sa.insert(_TABLE)
        .values(
            district_id=district_id,
            state=SyncState.RUNNING,
            reason=reason,
            emit_created=emit_created,
            cursor_taken=False,
            deleting=False,
            records_read=0,
            created=0,
            updated=0,
            deleted=0,
            failures=0,
            started_at=now,
            updated_at=now,
        )
        .returning(_TABLE.c.id)
    )
    return int(result.scalar_one())
