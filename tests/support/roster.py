"""The consumer's side of the roster promise, as a test applies it: a mirror fed by an
ordered subscription's deliveries in arrival order, compared with Clever's Data API records
(read over HTTP from the simulator, as a consumer with credentials would) and with the
relay's own roster."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

import httpx
from sqlmodel import col, select

from relay.db import Database, utcnow
from relay.db.models import District, DistrictStatus, Record, Sync
from relay.roster import syncs

DATA_TYPES = ("districts", "schools", "users", "sections", "courses", "terms", "resources")
Key = tuple[str, str]


class Mirror:
    """What a consumer holds after applying deliveries in arrival order: ``created`` and
    ``updated`` set the object, ``deleted`` removes it."""

    def __init__(self) -> None:
        self.records: dict[Key, dict[str, Any]] = {}
        self.deleted: list[tuple[Key, str | None]] = []  # (record, source) of each delete

    def apply(self, body: dict[str, Any]) -> None:
        record_type, _, action = str(body["type"]).partition(".")
        if record_type == "relay":
            return
        record = body["data"]["object"]
        key = (record_type, str(record["id"]))
        if action == "deleted":
            self.records.pop(key, None)
            self.deleted.append((key, body.get("source")))
        else:
            self.records[key] = record

    @classmethod
    def of(cls, bodies: Iterable[bytes]) -> Mirror:
        mirror = cls()
        for body in bodies:
            mirror.apply(json.loads(body))
        return mirror


def data_api_records(clever_url: str, token: str, page: int = 1000) -> dict[Key, dict[str, Any]]:
    """Every record the district shares, read page by page from ``/v3.1/<type>``."""
    out: dict[Key, dict[str, Any]] = {}
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=clever_url, headers=headers, timeout=30) as client:
        for record_type in DATA_TYPES:
            after: str | None = None
            while True:
                params = {"limit": str(page)} | ({"starting_after": after} if after else {})
                response = client.get(f"/v3.1/{record_type}", params=params)
                if response.status_code == 429:  # the relay's token is ours too: wait
                    reset = float(response.headers.get("x-ratelimit-reset", time.time() + 1))
                    time.sleep(min(max(reset - time.time(), 0.1), 60))
                    continue
                response.raise_for_status()
                items = response.json().get("data", [])
                for item in items:
                    out[(record_type, str(item["data"]["id"]))] = item["data"]
                if len(items) < page:
                    break
                after = str(items[-1]["data"]["id"])
    return out


async def roster_records(db: Database, district_id: str) -> dict[Key, dict[str, Any]]:
    async with db.read() as session:
        rows = (
            await session.exec(select(Record).where(col(Record.district_id) == district_id))
        ).all()
    return {(r.type, r.id): json.loads(r.object) for r in rows}


async def start_sync(
    db: Database, district_id: str, reason: str = syncs.REQUESTED, *, emit_created: bool = True
) -> int:
    """What ``POST /v1/districts/{id}/resync`` (or registration with ``start_from: "sync"``)
    does, straight in the database: a running sync and the district ``syncing``."""
    async with db.write() as session:
        district = await session.get(District, district_id)
        assert district is not None
        sync_id = await syncs.begin(
            await session.connection(), district_id, reason, utcnow(), emit_created=emit_created
        )
        district.sync_id, district.status = sync_id, DistrictStatus.SYNCING
        district.updated_at = utcnow()
        session.add(district)
    return sync_id


async def sync_of(db: Database, sync_id: int) -> Sync:
    async with db.read() as session:
        sync = await session.get(Sync, sync_id)
    assert sync is not None
    return sync


async def latest_sync(db: Database, district_id: str) -> Sync | None:
    async with db.read() as session:
        district = await session.get(District, district_id)
        if district is None or district.sync_id is None:
            return None
        return await session.get(Sync, district.sync_id)
