"""Job ids: what the queue holds says everything a job needs, and parses back."""

from __future__ import annotations

from relay.queue import FIRST_ATTEMPTS_QUEUE, RETRIES_QUEUE, Job


def test_job_ids_parse_back_to_their_attempt() -> None:
    assert Job.parse(Job(42, 3).id) == Job(42, 3)
    assert Job.parse(Job(42, 3, manual=True).id) == Job(42, 3, manual=True)
    for foreign in ("deliver:42", "deliver:x:1", "other:42:1", "deliver:1:2:later", "cron:x"):
        assert Job.parse(foreign) is None, foreign


def test_a_padded_id_is_not_taken_for_another() -> None:
    """Finishing ``deliver:7:1`` would never remove ``deliver:007:1`` from the queue."""
    assert Job.parse("deliver:007:1") is None


def test_first_attempts_and_retries_have_queues_of_their_own() -> None:
    assert Job(1, 1).queue == FIRST_ATTEMPTS_QUEUE
    assert Job(1, 2).queue == RETRIES_QUEUE
    assert Job(1, 2, manual=True).queue == RETRIES_QUEUE
