"""The interactive API documentation, offline: Swagger UI at /docs and ReDoc at /redoc.

FastAPI's own pages load both from a CDN, so on a machine without the internet they stay
blank. Here their scripts and style sheets come from the installed `fastapi-offline` package
(which vendors Swagger UI and ReDoc from npm), served under /docs/assets, and Swagger UI is
started by a script of ours rather than an inline one: the pages load nothing from another
host and run no inline script (`DOCS_POLICY` in api/browser.py says so to the browser).
"""

from __future__ import annotations

from html import escape
from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

# swagger-ui-bundle.js, swagger-ui.css, redoc.standalone.js, favicon.png
ASSETS = Path(str(files("fastapi_offline") / "static"))
ASSETS_PATH = "/docs/assets"
START_SWAGGER_PATH = "/docs/start-swagger.js"

# Swagger UI's options as FastAPI sets them; the OpenAPI document's URL comes from the page,
# and no validator badge (Swagger UI would send the document to its makers' validator).
START_SWAGGER = """\
const root = document.getElementById("swagger-ui");
window.ui = SwaggerUIBundle({
  url: root.dataset.openapiUrl,
  validatorUrl: null,
  dom_id: "#swagger-ui",
  layout: "BaseLayout",
  deepLinking: true,
  showExtensions: true,
  showCommonExtensions: true,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
});
"""

SWAGGER_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} - Swagger UI</title>
<link rel="stylesheet" href="{root}{assets}/swagger-ui.css">
<link rel="icon" href="{root}{assets}/favicon.png">
</head>
<body>
<div id="swagger-ui" data-openapi-url="{root}{openapi}"></div>
<script src="{root}{assets}/swagger-ui-bundle.js"></script>
<script src="{root}{start}"></script>
</body>
</html>
"""

REDOC_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} - ReDoc</title>
<link rel="icon" href="{root}{assets}/favicon.png">
</head>
<body>
<redoc spec-url="{root}{openapi}"></redoc>
<script src="{root}{assets}/redoc.standalone.js"></script>
</body>
</html>
"""


def install_docs(app: FastAPI) -> None:
    """Serve /docs, /redoc and their assets; the app must be made with `docs_url=None` and
    `redoc_url=None` (FastAPI's CDN pages off)."""
    app.mount(ASSETS_PATH, StaticFiles(directory=ASSETS), name="docs-assets")

    def page(template: str, request: Request) -> HTMLResponse:
        return HTMLResponse(
            template.format(
                title=escape(app.title),
                root=escape(request.scope.get("root_path", "")),
                assets=ASSETS_PATH,
                openapi=app.openapi_url,
                start=START_SWAGGER_PATH,
            )
        )

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        return page(SWAGGER_PAGE, request)

    @app.get(START_SWAGGER_PATH, include_in_schema=False)
    async def start_swagger_ui() -> Response:
        return Response(START_SWAGGER, media_type="text/javascript")

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        return page(REDOC_PAGE, request)
