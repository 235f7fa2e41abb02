"""The ``/_sim`` control API: JSON, no auth. Drives the simulator from tests and benchmarks.

====================================================  ==========================================
``GET /_sim/state``                                   districts (tokens, event counts and ids,
                                                      record counts, shared), rate, faults
``POST /_sim/districts`` ``{"name"?, "size"?}``      add a district → 201 ``{"id","name","token",
                                                      "records": {type: count}}``; ``size`` has
                                                      :class:`RosterSize`'s fields (each optional)
``POST /_sim/districts/{id}/rotate-token``            new token; the old one gets 401
``POST /_sim/districts/{id}/events``                  scripted ``[{type, object?, previous_attributes?}]``
                                                      (or ``{"events": [...]}``) or ``{"generate": N}``;
                                                      an ``object`` (with an ``id``) sets or deletes
                                                      its record in the Data API
``POST /_sim/districts/{id}/backlog``                 ``{"count": N, "span"?: s}`` events in the recent past
``POST /_sim/districts/{id}/drift``                   ``{"created"?, "updated"?, "deleted"?: N,
                                                      "record_types"?: [...]}``: records change
                                                      with no event → ``{"created": [{"type",
                                                      "id"}], "updated": [...], "deleted": [...]}``
``GET /_sim/events/{id}``                             when an event appeared (for latency measurements)
``POST|GET|DELETE /_sim/faults``                      add (see faults.py), list, clear fault rules
``DELETE /_sim/faults/{id}``                          remove one rule → ``{"removed": <rule>}`` (404
                                                      if none: a counted rule used up is gone)
``GET|DELETE /_sim/requests``                         the request log (``?since=<seq>``), or clear it
``POST /_sim/rate`` ``{"events_per_second": x}``      steady generation rate, per district
``POST /_sim/expire``                                 ``{"before_id"|"older_than_seconds"|"count",
                                                      "district"?}``: drop events as retention would
====================================================  ==========================================
"""  # noqa: E501

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from relay.clever.simulator.roster import RosterSize
from relay.clever.simulator.state import Simulator, UnknownDistrict


def _sim(request: Request) -> Simulator:
    sim: Simulator = request.app.state.sim
    return sim


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status)


async def _body(request: Request) -> Any:
    raw = await request.body()
    if not raw.strip():
        return {}
    return json.loads(raw)


def _number(body: Any, key: str, minimum: float = 0.0) -> float | None:
    if not isinstance(body, dict) or body.get(key) is None:
        return None
    value = body[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
        raise ValueError(f"'{key}' must be a number >= {minimum:g}")
    return float(value)


async def _guarded(request: Request, action: Any) -> Response:
    """Run ``action(sim, body, path_params)``; map bad input to 400 and unknown ids to 404."""
    try:
        body = await _body(request)
        result: Response = action(_sim(request), body, request.path_params)
        return result
    except UnknownDistrict as exc:
        return _error(404, f"unknown district {exc.args[0]!r}")
    except (ValueError, TypeError) as exc:  # json.JSONDecodeError is a ValueError
        return _error(400, str(exc))


def _state(sim: Simulator, body: Any, params: dict[str, Any]) -> Response:
    return JSONResponse(sim.state())


def _add_district(sim: Simulator, body: Any, params: dict[str, Any]) -> Response:
    if not isinstance(body, dict):
        raise ValueError("body must be a JSON object")
    name = body.get("name")
    if name is not None and not isinstance(name, str):
        raise ValueError("'name' must be a string")
    size = RosterSize.from_json(body["size"]) if body.get("size") is not None else None
    district = sim.add_district(name, size)
    return JSONResponse(
        {
            "id": district.id,
            "name": district.name,
            "token": district.token,
            "records": district.roster.counts(),
        },
        201,
    )


def _rotate(sim: Simulator, body: Any, params: dict[str, Any]) -> Response:
    token = sim.rotate_token(params["district_id"])
    return JSONResponse({"id": params["district_id"], "token": token})


def _events(sim: Simulator, body: Any, params: dict[str, Any]) -> Response:
    did = params["district_id"]
    sim.district(did)
    if isinstance(body, dict) and "generate" in body:
        count = _number(body, "generate", 1)
        events = sim.generate(did, int(count or 0))
    else:
        specs = body.get("events") if isinstance(body, dict) else body
        if not isinstance(specs, list):
            raise ValueError("send a list of events, {'events': [...]} or {'generate': N}")
        events = sim.add_events(did, specs)
    return JSONResponse({"count": len(events), "ids": [e.id for e in events]}, 201)


def _backlog(sim: Simulator, body: Any, params: dict[str, Any]) -> Response:
    did = params["district_id"]
    store = sim.district(did).store
    count = _number(body, "count", 1)
    if count is None:
        raise ValueError("'count' is required")
    before = len(store)
    sim.add_backlog(did, int(count), _number(body, "span", 0))
    first = store.ids[before] if len(store) > before else None
    return JSONResponse({"count": int(count), "first_id": first, "last_id": store.newest()}, 201)


def _drift(sim: Simulator, body: Any, params: dict[str, Any]) -> Response:
    if not isinstance(body, dict):
        raise ValueError("body must be a JSON object")
    known = ("created", "updated", "deleted", "record_types")
    unknown = sorted(set(body) - set(known))
    if unknown:
        raise ValueError(f"unknown field {unknown[0]!r}; expected {', '.join(known)}")
    types = body.get("record_types")
    if types is not None and not (
        isinstance(types, list) and all(isinstance(t, str) for t in types)
    ):
        raise ValueError("'record_types' must be a list of record types")
    counts = {name: body.get(name, 0) for name in known[:3]}
    drift = sim.drift(params["district_id"], record_types=types, **counts)
    return JSONResponse(
        {
            action: [{"type": t, "id": rid} for t, rid in getattr(drift, action)]
            for action in known[:3]
        }
    )


def _event_info(sim: Simulator, body: Any, params: dict[str, Any]) -> Response:
    for district in sim.districts.values():
        event = district.store.by_id.get(params["event_id"])
        if event is not None:
            info = {
                "id": event.id,
                "type": event.type,
                "district": district.id,
                "appeared_at": event.appeared,
            }
            return JSONResponse(info)
    return _error(404, "unknown event")


def _add_fault(sim: Simulator, body: Any, params: dict[str, Any]) -> Response:
    if isinstance(body, dict) and body.get("district") is not None:
        sim.district(str(body["district"]))
    return JSONResponse(sim.faults.add(body).to_json(), 201)


def _faults(sim: Simulator, body: Any, params: dict[str, Any]) -> Response:
    return JSONResponse({"data": [r.to_json() for r in sim.faults.rules]})


def _remove_fault(sim: Simulator, body: Any, params: dict[str, Any]) -> Response:
    raw = params["fault_id"]
    rule = sim.faults.remove(int(raw)) if raw.isdigit() else None
    if rule is None:
        return _error(404, f"no fault rule {raw!r} (a counted rule used up is gone)")
    return JSONResponse({"removed": rule.to_json()})


def _clear_faults(sim: Simulator, body: Any, params: dict[str, Any]) -> Response:
    cleared = len(sim.faults.rules)
    sim.faults.clear()
    return JSONResponse({"cleared": cleared})


def _clear_requests(sim: Simulator, body: Any, params: dict[str, Any]) -> Response:
    cleared = len(sim.requests)
    sim.requests.clear()
    return JSONResponse({"cleared": cleared})


def _rate(sim: Simulator, body: Any, params: dict[str, Any]) -> Response:
    rate = _number(body, "events_per_second")
    if rate is None:
        raise ValueError("'events_per_second' is required")
    sim.events_per_second = rate
    return JSONResponse({"events_per_second": rate})


def _expire(sim: Simulator, body: Any, params: dict[str, Any]) -> Response:
    if not isinstance(body, dict):
        raise ValueError("body must be a JSON object")
    before_id = body.get("before_id")
    if before_id is not None and not isinstance(before_id, str):
        raise ValueError("'before_id' must be an event id")
    older = _number(body, "older_than_seconds")
    count = _number(body, "count")
    if before_id is None and older is None and count is None:
        raise ValueError("give 'before_id', 'older_than_seconds' or 'count'")
    district = body.get("district")
    dropped = sim.expire(
        str(district) if district else None, before_id, older, int(count) if count else None
    )
    return JSONResponse({"expired": dropped})


async def _requests(request: Request) -> Response:
    since = request.query_params.get("since", "0")
    floor = int(since) if since.isdigit() else 0
    data = [e for e in _sim(request).requests if e["seq"] > floor]
    return JSONResponse({"data": data})


def _route(path: str, action: Any, method: str) -> Route:
    async def endpoint(request: Request) -> Response:
        return await _guarded(request, action)

    return Route(path, endpoint, methods=[method])


def control_routes() -> list[Route]:
    return [
        _route("/_sim/state", _state, "GET"),
        _route("/_sim/districts", _add_district, "POST"),
        _route("/_sim/districts/{district_id}/rotate-token", _rotate, "POST"),
        _route("/_sim/districts/{district_id}/events", _events, "POST"),
        _route("/_sim/districts/{district_id}/backlog", _backlog, "POST"),
        _route("/_sim/districts/{district_id}/drift", _drift, "POST"),
        _route("/_sim/events/{event_id}", _event_info, "GET"),
        _route("/_sim/faults", _add_fault, "POST"),
        _route("/_sim/faults", _faults, "GET"),
        _route("/_sim/faults", _clear_faults, "DELETE"),
        _route("/_sim/faults/{fault_id}", _remove_fault, "DELETE"),
        Route("/_sim/requests", _requests, methods=["GET"]),
        _route("/_sim/requests", _clear_requests, "DELETE"),
        _route("/_sim/rate", _rate, "POST"),
        _route("/_sim/expire", _expire, "POST"),
    ]
