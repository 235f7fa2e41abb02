"""OpenAPI 3.1 for the API, generated from the same pydantic models the handlers validate with.

Each handler declares its operation with :func:`operation`; ``build_openapi`` walks the
routes, so a route cannot exist without a description of its request and responses.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from relay import __version__
from relay.api.schemas import Error

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Query:
    name: str
    schema: dict[str, Any]
    description: str = ""


@dataclass(frozen=True)
class Operation:
    summary: str
    tag: str
    responses: dict[int, type[BaseModel] | None]
    request: type[BaseModel] | None = None
    query: Sequence[Query] = ()
    errors: Sequence[int] = ()
    auth: bool = True
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def operation(op: Operation) -> Callable[[F], F]:
    def attach(fn: F) -> F:
        fn.__openapi__ = op  # type: ignore[attr-defined]
        return fn

    return attach


LIMIT = Query("limit", {"type": "integer", "minimum": 1, "maximum": 500}, "page size")
CURSOR = Query(
    "cursor",
    {"type": "string"},
    "next_cursor of the previous page (one this API did not issue answers 404: no such page)",
)
_PATH_PARAM = re.compile(r"{(\w+)(?::\w+)?}")
_ERROR_TEXT = {
    400: "Malformed request",
    401: "Missing, invalid or revoked token (the header is Authorization: Bearer <token>)",
    403: "Not allowed for this token",
    404: "Not found, or not visible to this token",
    409: "Conflicts with existing state",
    413: "Request body larger than 1 MiB",
    422: "Invalid field values",
    429: "Too many requests for this token (see Retry-After)",
    503: "Not ready, or the API is busy (see Retry-After)",
}


Endpoint = Callable[[Request], Awaitable[Response]]


def merge_by_path(routes: Sequence[Route]) -> list[Route]:
    """One route per path, dispatching on the method, so a 405 lists in ``Allow`` every
    method the path supports (separate routes for one path would each list only their own)."""
    by_path: dict[str, dict[str, Endpoint]] = {}
    options: dict[str, bool] = {}
    for route in routes:
        for method in (route.methods or set()) - {"HEAD"}:
            by_path.setdefault(route.path, {})[method] = route.endpoint
        options[route.path] = route.include_in_schema
    merged = []
    for path, handlers in by_path.items():
        if len(handlers) == 1:
            [(method, handler)] = handlers.items()
            merged.append(Route(path, handler, methods=[method], include_in_schema=options[path]))
            continue

        async def dispatch(request: Request, handlers: dict[str, Endpoint] = handlers) -> Response:
            method = "GET" if request.method == "HEAD" else request.method
            return await handlers[method](request)

        dispatch.__openapi_methods__ = {  # type: ignore[attr-defined]
            m: getattr(h, "__openapi__", None) for m, h in handlers.items()
        }
        merged.append(Route(path, dispatch, methods=sorted(handlers)))
    return merged


def _operations(route: Route) -> list[tuple[str, Operation]]:
    per_method = getattr(route.endpoint, "__openapi_methods__", None)
    if per_method is None:
        op = getattr(route.endpoint, "__openapi__", None)
        methods = (route.methods or set()) - {"HEAD"}
        per_method = dict.fromkeys(methods, op)
    return [(m, op) for m, op in sorted(per_method.items()) if op is not None]


def build_openapi(routes: Sequence[BaseRoute]) -> dict[str, Any]:
    ops: list[tuple[str, str, Operation]] = []
    models: set[type[BaseModel]] = {Error}
    for route in routes:
        if not isinstance(route, Route):
            continue
        for method, op in _operations(route):
            ops.append((route.path, method.lower(), op))
            models.update(m for m in op.responses.values() if m is not None)
            if op.request is not None:
                models.add(op.request)

    pairs: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        (m, "validation" if _is_request(m, ops) else "serialization") for m in models
    ]
    _, top = models_json_schema(
        sorted(pairs, key=lambda p: p[0].__name__),
        ref_template="#/components/schemas/{model}",
    )
    defs = top.get("$defs", {})
    for model, mode in pairs:
        if mode == "validation" and model.__name__ in defs:
            _no_nul_inside(defs[model.__name__])
    paths: dict[str, dict[str, Any]] = {}
    for path, method, op in ops:
        template = _PATH_PARAM.sub(r"{\1}", path)
        paths.setdefault(template, {})[method] = _operation_object(template, method, op)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Clever Events Relay",
            "version": __version__,
            "description": "Manage districts, webhook subscriptions, service tokens, the "
            "delivery log and events of the relay. For a browser, GET /ui is the on-call page: "
            "failing subscriptions and failed deliveries, with retry, recover and re-enable.",
        },
        "paths": paths,
        "components": {
            "schemas": top.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _is_request(model: type[BaseModel], ops: list[tuple[str, str, Operation]]) -> bool:
    return any(op.request is model for _, _, op in ops)


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _operation_id(method: str, path: str) -> str:
    return method + "_" + re.sub(r"[^A-Za-z0-9]+", "_", path).strip("_")


#: what the API accepts in a path or query string: anything but NUL (400, ``RejectNulMiddleware``)
_NO_NUL = "^[^\\x00]*$"


def _no_nul(schema: dict[str, Any]) -> dict[str, Any]:
    """A copy of a parameter's ``schema`` with ``_no_nul_inside`` applied (the Query objects
    are shared between routes, so theirs stay as they are)."""
    copied = copy.deepcopy(schema)
    _no_nul_inside(copied)
    return copied


def _no_nul_inside(schema: Any) -> None:
    """Every free-text string of ``schema`` (a request body's, a path or query parameter's),
    NUL-free as the API has it: a NUL in a body is a 422 naming the field
    (``relay.api.context``), in the URL a 400 (``RejectNulMiddleware``)."""
    if isinstance(schema, list):
        for item in schema:
            _no_nul_inside(item)
    elif isinstance(schema, dict):
        if (
            schema.get("type") == "string"
            and not {"pattern", "enum", "format", "const"} & schema.keys()
        ):
            schema["pattern"] = _NO_NUL
        for value in schema.values():
            _no_nul_inside(value)


def _operation_object(path: str, method: str, op: Operation) -> dict[str, Any]:
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": _no_nul({"type": "string"})}
        for name in _PATH_PARAM.findall(path)
    ]
    params += [
        {"name": q.name, "in": "query", "required": False, "schema": _no_nul(q.schema)}
        | ({"description": q.description} if q.description else {})
        for q in op.query
    ]
    responses: dict[str, Any] = {}
    for status, model in op.responses.items():
        entry: dict[str, Any] = {"description": "OK" if status < 300 else "Response"}
        if model is not None:
            entry["content"] = {"application/json": {"schema": _ref(model)}}
        responses[str(status)] = entry
    errors = set(op.errors)
    if op.auth:
        errors |= {400, 401, 429, 503}  # 400: a NUL in the URL; 429/503: the API's limits
    if op.request is not None:
        errors |= {400, 413, 422}
    if op.query:
        errors |= {400, 422}
    if CURSOR in op.query:
        errors |= {404}
    for status in sorted(errors):
        responses[str(status)] = {
            "description": _ERROR_TEXT.get(status, "Error"),
            "content": {"application/json": {"schema": _ref(Error)}},
        }
    obj: dict[str, Any] = {
        "summary": op.summary,
        "operationId": _operation_id(method, path),
        "tags": [op.tag],
        "parameters": params,
        "responses": responses,
    }
    if op.description:
        obj["description"] = op.description
    if op.auth:
        obj["security"] = [{"bearer": []}]
    if op.request is not None:
        obj["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(op.request)}},
        }
    return obj | op.extra
