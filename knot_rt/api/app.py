"""The Quart application: one blueprint per section of the spec, the feed, the ops routes.

It lives beside the routes (``api``) and takes the shared HTTP layer from ``web``
(errors, request wrapper, feed), so ``web`` never imports ``api``.
"""

from __future__ import annotations

from typing import Any

from quart import Quart, Response, request
from quart_schema import Info, QuartSchema
from quart_schema.openapi import OpenAPIProvider
from quart_trio import QuartTrio

from protocols.errors import error_table

from .. import __version__
from ..context import Services
from ..web.console import bp as console_bp
from ..web.errors import install_error_handlers
from ..web.feed import bp as feed_bp
from ..web.inputs import INT64_MAX, IdConverter, check_query_string
from ..web.metrics import bp as ops_bp
from ..web.request import KnotRequest, drain_request_body
from . import BLUEPRINTS

DESCRIPTION = """Knot application API served by knot_rt.

Every JSON response has an integer `code` (0 is success). Errors carry a `message`
and the matching HTTP status; `x-error-codes` lists every code."""


class KnotOpenAPIProvider(OpenAPIProvider):
    def build_querystring_parameters(self, model: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """As quart-schema's, and a parameter the model requires is marked required."""
        parameters, definitions = super().build_querystring_parameters(model)
        schema: dict[str, Any] = model.model_json_schema() if hasattr(model, "model_json_schema") else {}
        required = set(schema.get("required", []))
        for parameter in parameters:
            if parameter["name"] in required:
                parameter["required"] = True
        return parameters, definitions

    def build_path_parameter(self, name: str, converter: Any) -> dict[str, Any]:
        """A path id is an integer from 0 to a bigint (``IdConverter``), documented as such."""
        parameter = super().build_path_parameter(name, converter)
        if isinstance(converter, IdConverter):
            parameter["schema"] = {"type": "integer", "minimum": 0, "maximum": INT64_MAX}
        return parameter

    def schema(self) -> dict[str, Any]:
        document = super().schema()
        document["x-error-codes"] = error_table()
        return document


def create_app(svc: Services | None = None) -> Quart:
    """Build the app; ``svc`` may be None to only read the OpenAPI document."""
    app = QuartTrio("knot_rt")
    app.request_class = KnotRequest
    app.url_map.converters["int"] = IdConverter  # before any route is added
    app.config["MAX_CONTENT_LENGTH"] = svc.settings.max_body_bytes if svc else 1_048_576
    app.config["JSON_SORT_KEYS"] = False
    app.json.sort_keys = False  # type: ignore[attr-defined]
    if svc is not None:
        app.extensions["knot"] = svc
    QuartSchema(
        app,
        info=Info(title="Knot application API (knot_rt)", version=__version__, description=DESCRIPTION),
        security_schemes={"bearer": {"type": "http", "scheme": "bearer", "bearer_format": "JWT"}},
        openapi_provider_class=KnotOpenAPIProvider,
        redoc_ui_path=None,
        scalar_ui_path=None,
        swagger_ui_path="/docs",
    )
    install_error_handlers(app)

    @app.before_request
    async def check_query() -> None:
        check_query_string(request.query_string)

    @app.after_request
    async def drain_body(response: Response) -> Response:
        await drain_request_body()
        return response

    for blueprint in BLUEPRINTS:
        app.register_blueprint(blueprint)
    app.register_blueprint(feed_bp)
    app.register_blueprint(ops_bp)
    app.register_blueprint(console_bp)  # the ops console's static files at /console/ (hidden from OpenAPI)

    return app
