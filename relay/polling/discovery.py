"""Token discovery: with ``CLEVER_CLIENT_ID``/``CLEVER_CLIENT_SECRET`` set, every district
that shared data with the app is registered, and rotated tokens are picked up (an
``unauthorized`` district given a new token has recovered: its operational event is queued
by the reconciler, as this cron has no queue of its own). A stored token no key decrypts is
replaced by the one Clever lists, like any other that differs."""

from __future__ import annotations

import logging

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from relay._exceptions import CleverError, SecretUnreadable
from relay.clever.tokens import fetch_district_tokens
from relay.db import Database, crypto, utcnow
from relay.db.models import District, DistrictStatus, Sync
from relay.db.tables import table_of
from relay.fanout import operational
from relay.settings import Settings

logger = logging.getLogger("relay.discovery")


async def discover_districts(settings: Settings, db: Database) -> int:
    """Register new districts (starting from Clever's newest event) and refresh tokens;
    returns how many districts were added or changed."""
    credentials = settings.clever_credentials
    if credentials is None:
        return 0
    try:
        tokens = await fetch_district_tokens(settings.clever_oauth_url, *credentials)
    except CleverError as exc:
        logger.warning("token discovery failed", extra={"error": str(exc)})
        return 0
    changed = 0
    recovered: list[operational.Notice] = []
    async with db.write() as session:
        for token in tokens:
            district = await session.get(District, token.district_id)
            if district is None:
                session.add(
                    District(
                        id=token.district_id, token=token.access_token, token_source="discovered"
                    )
                )
                logger.info("district discovered", extra={"district_id": token.district_id})
            elif await _stored_token(await session.connection(), district.id) != token.access_token:
                district.token = token.access_token
                district.token_source = "discovered"
                district.updated_at = utcnow()
                if district.status == DistrictStatus.UNAUTHORIZED:
                    district.status = DistrictStatus.ACTIVE
                    district.last_error = None
                    recovered.append(
                        operational.district_notice(
                            operational.DISTRICT_RECOVERED,
                            district,
                            district.updated_at,
                            await session.get(Sync, district.sync_id) if district.sync_id else None,
                        )
                    )
                session.add(district)
            else:
                continue
            changed += 1
        await operational.raise_notices(await session.connection(), recovered, utcnow())
    return changed


_districts = table_of(District)
_TOKEN = sa.select(crypto.as_stored(_districts.c.token)).where(
    _districts.c.id == sa.bindparam("b_id")
)


async def _stored_token(conn: AsyncConnection, district_id: str) -> str | None:
    """The district's token, decrypted; None if no configured key decrypts it (then the
    one Clever lists replaces it: one district's unreadable token must not stop discovery
    of every other)."""
    stored = (await conn.execute(_TOKEN, {"b_id": district_id})).scalar_one_or_none()
    if stored is None:
        return None
    try:
        return crypto.keyring().decrypt(stored)
    except SecretUnreadable:
        return None
