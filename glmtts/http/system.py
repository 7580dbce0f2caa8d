"""Health, readiness, status and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from glmtts.http.errors import RETRY_AFTER_S
from glmtts.service import Service


def system_router(service: Service) -> APIRouter:
    router = APIRouter()

    @router.get("/health")
    def health() -> dict[str, str]:
        """200 while the process is up."""
        return {"status": "up"}

    @router.get("/ready")
    def ready() -> JSONResponse:
        """503 until warm-up has finished, then 200; says which engine runs and why."""
        status = {"ready": service.ready, "engine": service.engine.name, "engine_reason": service.engine_reason}
        headers = None if service.ready else {"Retry-After": str(RETRY_AFTER_S)}
        return JSONResponse(status, status_code=200 if service.ready else 503, headers=headers)

    @router.get("/v1/status")
    def status() -> dict[str, object]:
        """Engine, device, timings, memory, voices, queue."""
        return service.status()

    @router.get("/metrics")
    def metrics() -> Response:
        """Prometheus metrics: requests by route and status, latency and RTF, queue depth, memory, ready."""
        return Response(service.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    return router
