"""A worker process tunes Python's garbage collector before its loop starts (``GcTuning``):
checked in a process of its own, since the setting is the whole process's."""

from __future__ import annotations

import subprocess
import sys

from relay.tuning import GcTuning

PROBE = """
import gc
from relay.tuning import GcTuning
from workers.process import tune_garbage_collector
tune_garbage_collector(GcTuning())
print(*gc.get_threshold(), gc.get_freeze_count() > 0)
"""


def test_a_worker_process_collects_less_often_and_never_its_startup_objects() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    assert out == [*map(str, GcTuning().threshold), "True"]
