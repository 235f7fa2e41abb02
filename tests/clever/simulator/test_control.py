"""The /_sim control API, event generation modes (backlog, steady rate, scripts) and the CLI."""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path
from typing import Any

from relay.clever.simulator import Simulator, SimulatorConfig
from relay.clever.simulator.cli import add_arguments, config_from_args
from tests.support.simulator import Sim, small_config


def test_state_and_add_district(sim: Sim) -> None:
    state = sim.http.get("/_sim/state").json()
    assert len(state["districts"]) == 2
    assert state["districts"][0]["event_count"] == 0
    assert state["districts"][0]["oldest_event_id"] is None
    r = sim.http.post("/_sim/districts", json={"name": "Added ISD"})
    assert r.status_code == 201
    added = r.json()
    assert added["name"] == "Added ISD"
    assert len(added["id"]) == 24
    ids = sim.generate(3, district=added["id"])
    r = sim.events(token=added["token"])
    assert [i["data"]["id"] for i in r.json()["data"]] == ids
    district = next(
        d for d in sim.http.get("/_sim/state").json()["districts"] if d["id"] == added["id"]
    )
    assert district["event_count"] == 3
    assert (district["oldest_event_id"], district["newest_event_id"]) == (ids[0], ids[-1])
    assert sim.http.post("/_sim/districts/nope/events", json={"generate": 1}).status_code == 404


def test_backlog_of_100k_events(sim: Sim) -> None:
    live = sim.generate(5)
    r = sim.http.post(f"/_sim/districts/{sim.district}/backlog", json={"count": 100_000})
    assert r.status_code == 201
    info = r.json()
    assert info["count"] == 100_000
    assert info["first_id"] > live[-1]
    state = sim.http.get("/_sim/state").json()["districts"][0]
    assert state["event_count"] == 100_005
    store = sim.sim.districts[sim.district].store
    ids = store.ids
    assert all(a < b for a, b in itertools.pairwise(ids))  # strictly increasing
    now = time.time()
    # Timestamped in the recent past, within retention, never before the live events.
    assert now - 6 * 3600 - 5 <= int(info["first_id"][:8], 16) <= now + 1
    assert int(live[-1][:8], 16) <= int(info["first_id"][:8], 16)
    body = sim.events(f"?limit=10000&starting_after={info['first_id']}").json()
    assert len(body["data"]) == 10_000


def test_backlog_from_config_is_spread_over_the_past(make_sim: Any) -> None:
    sim: Sim = make_sim(backlog=500)
    for d in sim.http.get("/_sim/state").json()["districts"]:
        assert d["event_count"] == 500
        oldest, newest = int(d["oldest_event_id"][:8], 16), int(d["newest_event_id"][:8], 16)
        assert newest - oldest > 3600  # spread, not all stamped now


def test_scripted_events_are_stored_as_given(sim: Sim) -> None:
    obj = {"id": "5faac8b8bc447500a10ae8bf", "district": sim.district, "name": {"last": "X"}}
    prev = {"name": {"last": "Y"}}
    ids = sim.script(
        [
            {"type": "users.updated", "object": obj, "previous_attributes": prev},
            {"type": "users.deleted", "object": obj},
            {"type": "terms.created"},  # no object: generated
        ]
    )
    events = [i["data"] for i in sim.events().json()["data"]]
    assert [e["id"] for e in events] == ids
    assert events[0]["data"] == {"object": obj, "previous_attributes": prev}
    assert events[1]["data"] == {"object": obj}
    assert events[2]["type"] == "terms.created"
    assert "start_date" in events[2]["data"]["object"]
    bad = sim.http.post(f"/_sim/districts/{sim.district}/events", json=[{"type": "users.moved"}])
    assert bad.status_code == 400
    assert sim.http.post(f"/_sim/districts/{sim.district}/events", content=b"{").status_code == 400
    assert len(sim.events().json()["data"]) == 3  # a bad batch adds nothing


def test_script_file_in_config(tmp_path: Path, make_sim: Any) -> None:
    script = tmp_path / "script.json"
    script.write_text(
        json.dumps(
            [
                {"type": "schools.created"},
                {"generate": 4, "district": 1},
                {"type": "users.updated", "object": {"id": "abc"}, "previous_attributes": {}},
            ]
        )
    )
    sim: Sim = make_sim(script=str(script))
    first = [i["data"]["type"] for i in sim.events().json()["data"]]
    assert first == ["schools.created", "users.updated"]
    assert len(sim.events(token=sim.districts[1]["token"]).json()["data"]) == 4


def test_steady_rate_generates_in_the_background(sim: Sim) -> None:
    assert sim.http.post("/_sim/rate", json={"events_per_second": 50}).status_code == 200
    time.sleep(1.0)
    sim.http.post("/_sim/rate", json={"events_per_second": 0})
    counts = [d["event_count"] for d in sim.http.get("/_sim/state").json()["districts"]]
    assert all(20 <= c <= 80 for c in counts), counts
    time.sleep(0.2)
    assert [d["event_count"] for d in sim.http.get("/_sim/state").json()["districts"]] == counts
    ids = [i["data"]["id"] for i in sim.events("?limit=1000").json()["data"]]
    assert ids == sorted(ids)
    assert len(ids) == counts[0]
    info = sim.http.get(f"/_sim/events/{ids[-1]}").json()
    assert info["district"] == sim.district
    assert abs(info["appeared_at"] - time.time()) < 5
    assert sim.http.post("/_sim/rate", json={"events_per_second": -1}).status_code == 400


def test_configured_rate(make_sim: Any) -> None:
    sim: Sim = make_sim(events_per_second=40, districts=1)
    time.sleep(0.6)
    assert len(sim.events().json()["data"]) >= 10


def test_expire_older_than_and_count(sim: Sim) -> None:
    sim.generate(10)
    assert sim.http.post("/_sim/expire", json={"count": 4}).json() == {"expired": 4}
    assert len(sim.events().json()["data"]) == 6
    r = sim.http.post("/_sim/expire", json={"older_than_seconds": 0, "district": sim.district})
    assert r.json() == {"expired": 6}
    assert sim.events().json()["data"] == []
    assert sim.http.post("/_sim/expire", json={}).status_code == 400


def test_seed_gives_the_same_districts_and_tokens() -> None:
    a, b = Simulator(small_config(seed=3)), Simulator(small_config(seed=3))
    assert [(d.id, d.token) for d in a.districts.values()] == [
        (d.id, d.token) for d in b.districts.values()
    ]
    c = Simulator(small_config(seed=4))
    assert list(c.districts) != list(a.districts)


def test_ids_share_seconds_and_still_increase() -> None:
    sim = Simulator(SimulatorConfig(districts=1))
    did = next(iter(sim.districts))
    events = sim.generate(did, 300)
    assert len({e.id[:8] for e in events}) <= 2  # many events share one second
    assert [e.id for e in events] == sorted({e.id for e in events})


def test_cli_arguments() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args([])
    assert (args.host, args.port) == ("127.0.0.1", 8765)
    args = parser.parse_args(
        [
            "--districts",
            "3",
            "--rate",
            "5",
            "--backlog",
            "10",
            "--retention",
            "60",
            "--fault-rate",
            "0.1",
            "--seed",
            "9",
            "--script",
            "s.json",
            "--port",
            "9000",
        ]
    )
    config = config_from_args(args)
    assert config.districts == 3
    assert config.events_per_second == 5
    assert config.backlog == 10
    assert config.retention_seconds == 60
    assert config.fault_probability == 0.1
    assert config.seed == 9
    assert str(config.script) == "s.json"
