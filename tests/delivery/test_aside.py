"""What a worker remembers of jobs that stepped aside stays bounded, and lines space out."""

from __future__ import annotations

import itertools

from relay.delivery.aside import Aside, Lines


def test_the_least_recently_seen_jobs_are_forgotten_beyond_the_limit() -> None:
    aside = Aside(limit=3)
    for delivery_id in (1, 2, 3):
        aside.note(delivery_id, f"sub{delivery_id}", "team")
    aside.note(1, "sub1", "team")  # seen again: now the most recent
    aside.note(4, "sub4", "team")
    assert len(aside) == 3
    assert aside.get(2) is None  # the least recently seen
    assert [aside.get(i) is not None for i in (1, 3, 4)] == [True, True, True]
    aside.forget(1)
    assert aside.get(1) is None


def test_a_busy_owner_sends_a_job_further_back_each_time() -> None:
    seen = Aside().note(1, "sub", "team")
    waits = [Aside.busy_owner_wait(seen) for _ in range(8)]
    for turn, wait in enumerate(waits):
        doubled = 2 ** min(turn, 7)
        assert 0.25 * doubled <= wait <= 0.75 * doubled, (turn, wait)


def test_a_line_gives_each_place_one_spacing_after_the_last_and_ends() -> None:
    lines = Lines(keep=2)
    places = [lines.place("sub", 0.5) for _ in range(4)]
    assert all(0.45 < b - a <= 0.5 for a, b in itertools.pairwise(places)), places
    assert lines.place("other", 10) > 9  # a line of its own
    lines.place("ended", 0)  # a third line, that ends at once: pruned beyond `keep`
    assert len(lines) == 2
