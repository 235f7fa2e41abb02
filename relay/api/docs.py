"""``/docs``: Swagger UI over ``/openapi.json``, with every asset served by the relay itself,
so the page renders offline and air-gapped (it names no other host).

The assets come from the ``swagger-ui-py`` package (Swagger UI 5.x; both Apache-2.0, the
licence served beside them at ``/docs/assets/LICENSE``): Swagger UI 5 is the first to render
OpenAPI 3.1, which is what ``/openapi.json`` is (``swagger-ui-bundle`` ships 4.x). Only the
package's files are used: it is located, not imported (its Python part renders templates for
other frameworks). The validator badge, which Swagger UI would fetch from its public
validator, is turned off.
"""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import Route

from relay.api.errors import error_response

ASSET_PREFIX = "/docs/assets/"
#: the files the page uses, and the licence
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon-32x32.png": "image/png",
    "LICENSE": "text/plain; charset=utf-8",
}

DOCS_HTML = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Clever Events Relay API</title>
<link rel="icon" type="image/png" href="{ASSET_PREFIX}favicon-32x32.png">
<link rel="stylesheet" href="{ASSET_PREFIX}swagger-ui.css"></head>
<body><div id="ui"><p>Loading the API reference… (the raw description is
<a href="/openapi.json">/openapi.json</a>)</p></div>
<script src="{ASSET_PREFIX}swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({{url: "/openapi.json", dom_id: "#ui", validatorUrl: null}});</script>
</body></html>
"""


@cache
def assets_dir() -> Path:
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("swagger-ui-py is not installed (a dependency of the relay)")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


async def docs(_request: Request) -> Response:
    return HTMLResponse(DOCS_HTML)


async def docs_asset(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in ASSETS:
        return error_response(404, f"no docs asset {name!r}")
    return FileResponse(
        assets_dir() / name,
        media_type=ASSETS[name],
        headers={"Cache-Control": "public, max-age=86400"},
    )


routes = [
    Route("/docs", docs, methods=["GET"], include_in_schema=False),
    Route(ASSET_PREFIX + "{name}", docs_asset, methods=["GET"], include_in_schema=False),
]
