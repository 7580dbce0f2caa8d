"""The HTTP API, by resource: speech, voices, batch, discovery (models, Open WebUI's listings), and the
system routes (health, ready, status, metrics).

`create_api(service)` builds the FastAPI app that the UI is mounted on; every route reaches the
service object it is given and nothing else. Errors go through one table (errors.py).
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from glmtts.http.batch import batch_router
from glmtts.http.captions import captions_router
from glmtts.http.discovery import discovery_router
from glmtts.http.errors import NotReady, add_v1_fallback, install_error_handlers
from glmtts.http.security import SecurityMiddleware
from glmtts.http.speech import speech_router
from glmtts.http.system import system_router
from glmtts.http.voices import voices_router
from glmtts.metrics import MetricsMiddleware
from glmtts.service import Service


def create_api(service: Service) -> FastAPI:
    api = FastAPI(title="GLM-TTS warm WebUI", docs_url=None, redoc_url=None)
    api.add_middleware(SecurityMiddleware, settings=service.settings, limiter=service.limiter, warmup_token=service.warmup_token)
    api.add_middleware(MetricsMiddleware, metrics=service.metrics)  # outermost: sees the security middleware's answers too
    install_error_handlers(api)

    def require_warm() -> None:
        if not service.warm:
            raise NotReady()

    api.include_router(system_router(service))
    api.include_router(speech_router(service, require_warm))
    api.include_router(captions_router(service, require_warm))  # Kokoro-FastAPI's /dev/captioned_speech
    api.include_router(voices_router(service, require_warm))
    api.include_router(batch_router(service, require_warm))
    api.include_router(discovery_router(service))
    add_v1_fallback(api)  # after every /v1 route
    add_api_page(api)
    return api


def add_api_page(api: FastAPI) -> None:
    """`/docs`, the API page, with Swagger UI's script and styles served from here (`/docs-assets/`):
    FastAPI's own page loads them from a CDN, which an offline machine cannot reach and which would run
    another site's script on this origin."""
    api.mount("/docs-assets", StaticFiles(directory=files("fastapi_offline") / "static"), name="docs-assets")

    @api.get("/docs", include_in_schema=False)
    def api_page(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=root + api.openapi_url,
            title=f"{api.title}: API",
            swagger_js_url=f"{root}/docs-assets/swagger-ui-bundle.js",
            swagger_css_url=f"{root}/docs-assets/swagger-ui.css",
            swagger_favicon_url=f"{root}/docs-assets/favicon.png",
        )
