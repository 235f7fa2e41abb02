"""``/docs`` works offline: the page names no other host and the relay serves every asset it
uses (issue 14, item 5)."""

from __future__ import annotations

import re

import httpx

from relay.api.docs import ASSETS


def test_docs_names_no_other_host(anonymous: httpx.Client) -> None:
    page = anonymous.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert not re.search(r"(https?:)?//[A-Za-z0-9]", page.text), page.text
    referenced = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sorted(referenced) == [
        "/docs/assets/favicon-32x32.png",
        "/docs/assets/swagger-ui-bundle.js",
        "/docs/assets/swagger-ui.css",
        "/openapi.json",
    ]
    assert 'url: "/openapi.json"' in page.text
    assert "validatorUrl: null" in page.text  # else Swagger UI asks its public validator


def test_every_asset_the_page_uses_is_served(anonymous: httpx.Client) -> None:
    page = anonymous.get("/docs").text
    for path in re.findall(r'(?:src|href)="(/docs/assets/[^"]+)"', page):
        response = anonymous.get(path)
        assert response.status_code == 200, path
        assert response.headers["content-type"] == ASSETS[path.rsplit("/", 1)[1]]
        assert len(response.content) > 500, path
    bundle = anonymous.get("/docs/assets/swagger-ui-bundle.js").text
    assert "SwaggerUIBundle" in bundle
    where = bundle.index("versions.swaggerUI={")  # Swagger UI records its own version here
    majors = re.findall(r'"(\d+)\.\d+\.\d+"', bundle[where - 400 : where])
    assert majors, bundle[where - 400 : where]
    assert int(majors[-1]) >= 5  # Swagger UI 5: the first that renders OpenAPI 3.1
    licence = anonymous.get("/docs/assets/LICENSE")
    assert licence.status_code == 200
    assert "Apache License" in licence.text


def test_only_the_listed_assets_are_served(anonymous: httpx.Client) -> None:
    for name in ("swagger-editor-bundle.js", "..%2F__init__.py", "index.css"):
        response = anonymous.get(f"/docs/assets/{name}")
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"
