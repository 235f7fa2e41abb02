"""Clever Events Relay: polls Clever's Events API and delivers signed webhooks."""

from __future__ import annotations

__version__ = "0.1.0"
