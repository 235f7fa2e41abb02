"""The README's examples use ids that exist under ``relay run`` (issue 14, item 9): its
district and school are the bundled simulator's, and its CLI lines name real commands."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from relay.clever.simulator import Simulator
from relay.cli import build_parser
from relay.cli.run import simulator_config

README = (Path(__file__).parents[2] / "README.md").read_text()


def test_example_district_and_school_are_the_simulators() -> None:
    found = re.search(r"export DISTRICT=(\w+) SCHOOL=(\w+)", README)
    assert found is not None
    district_id, school_id = found.groups()
    sim = Simulator(simulator_config(1.0))
    assert district_id in sim.districts
    assert school_id in sim.districts[district_id].roster.school_ids()
    assert f"`{district_id}` is one, and `{school_id}` one of its schools" in README


def operator_lines() -> list[str]:
    section = README[README.index("### The operator CLI") :]
    block = section[section.index("```sh") + 5 : section.index("```\n", section.index("```sh"))]
    joined = block.replace("\\\n", " ")
    return [line.split("#")[0].strip() for line in joined.splitlines() if line.strip()]


@pytest.mark.parametrize("line", operator_lines())
def test_every_operator_example_parses(line: str) -> None:
    argv = shlex.split(line)
    assert argv[0] == "relay"
    args = build_parser().parse_args([a.replace("$", "X") for a in argv[1:]])
    assert args.handler is not None
