"""The management API (Starlette): districts, subscriptions, tokens, deliveries, events."""

from __future__ import annotations
