"""Token discovery: with ``CLEVER_CLIENT_ID``/``CLEVER_CLIENT_SECRET`` set, every district
that shared data with the app is registered, and rotated tokens are picked up (an
``unauthorized`` district given a new token has recovered: its operational event is queued
by the reconciler, as this cron has no queue of its own)."""

from __future__ import annotations

import logging

from relay._exceptions import CleverError
from relay.clever.tokens import fetch_district_tokens
from relay.db import Database, utcnow
from relay.db.models import District, DistrictStatus, Sync
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
            elif district.token != token.access_token:
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
