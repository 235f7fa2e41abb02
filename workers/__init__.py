"""arq job functions and ``WorkerSettings``: polling, delivery, reconciliation."""

from __future__ import annotations
