"""The API reference page (``/schema``): Scalar, pinned to one version and checked by Subresource Integrity.

Litestar's Scalar plugin loads ``@scalar/api-reference@latest`` and a stylesheet from a branch of a GitHub
repository, on the API's own origin, without integrity: whoever controls that CDN path runs script next to
the API. Here the script is one fixed file whose hash the browser verifies, and nothing else is loaded.
The page can be switched off (``API_DOCS``, off by default in production); ``/schema/openapi.json`` stays.
"""

from __future__ import annotations

import html
import json
from typing import Any

from litestar import Request
from litestar.openapi.plugins import JsonRenderPlugin, OpenAPIRenderPlugin, ScalarRenderPlugin

from service.settings import Settings

SCALAR_VERSION = "1.46.4"
SCALAR_JS = f"https://cdn.jsdelivr.net/npm/@scalar/api-reference@{SCALAR_VERSION}/dist/browser/standalone.js"
# sha384 of that file, as npm serves it (`npm pack @scalar/api-reference@1.46.4`, dist/browser/standalone.js).
SCALAR_INTEGRITY = "sha384-BbTs28WithFYxTDCiH0YPK5tv3MflhBVpABoMjfb9UqXa/hegSE9I4THoddKejMF"


class PinnedScalarPlugin(ScalarRenderPlugin):
    def __init__(self) -> None:
        super().__init__(js_url=SCALAR_JS, path="/")

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        title = html.escape(str(openapi_schema["info"]["title"]))
        spec_url = html.escape(self.get_openapi_json_route(request), quote=True)
        config = html.escape(json.dumps(self.options or {}), quote=True)
        return f"""<!DOCTYPE html>
<html>
  <head>
    <title>{title}</title>
    <meta charset="utf-8"/>
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <meta name="referrer" content="no-referrer">
  </head>
  <body>
    <noscript>The API reference needs JavaScript; the schema is at {spec_url}.</noscript>
    <script id="api-reference" data-url="{spec_url}" data-configuration="{config}"></script>
    <script src="{SCALAR_JS}" integrity="{SCALAR_INTEGRITY}" crossorigin="anonymous"></script>
  </body>
</html>
""".encode()


def docs_plugins(settings: Settings) -> list[OpenAPIRenderPlugin]:
    """The page and the JSON schema, or only the schema when the page is off."""
    enabled = settings.api_docs if settings.api_docs is not None else not settings.is_production
    return [PinnedScalarPlugin(), JsonRenderPlugin()] if enabled else [JsonRenderPlugin()]
