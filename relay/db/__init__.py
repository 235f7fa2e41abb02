"""Storage: SQLModel tables and the async engine (SQLite or PostgreSQL)."""

from __future__ import annotations

from relay.db.engine import Database, utcnow

__all__ = ["Database", "utcnow"]
