"""GET /health (no token: a load balancer or a supervisor asks it, and is told the verdict
and each part's state, not the sources' names or any error text, which the token shows) and GET /metrics
(Prometheus text), mounted from the metrics wing's own modules."""

from __future__ import annotations

from aiohttp import web

from tacx.server.context import AUTHORIZED, context
from tacx.server.health import health_report, public_view
from tacx.server.metrics import CONTENT_TYPE, EngineMetrics

routes = web.RouteTableDef()
METRICS = web.AppKey("tacx-metrics", EngineMetrics)


@routes.get("/health")
async def health(request: web.Request) -> web.Response:
    coordinator = context(request).coordinator
    status, body = await health_report(coordinator, coordinator.store)
    return web.json_response(body if request[AUTHORIZED] else public_view(body), status=status)


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=await request.app[METRICS].exposition(), headers={"Content-Type": CONTENT_TYPE})
