"""The worker process's entry point: ``WorkerSettings`` and the cron jobs (``settings``), the
shared parts (``context``) and the wiring of the loops (``process``). The engine itself is in
``relay``."""

from __future__ import annotations
