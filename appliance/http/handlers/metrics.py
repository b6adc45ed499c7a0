"""GET /v1/agent/metrics: the agent's own metrics (reference/consul-api.md §4.1).

How it works: the agent's recorder (appliance.telemetry) keeps every metric. Without options
the answer is Consul's JSON (`Timestamp`, `Gauges`, `Points`, `Counters`, `Samples`) for the
latest finished 10 s interval. With `?format=prometheus`, or an `Accept` header that asks for
OpenMetrics (what Prometheus sends), the answer is the Prometheus text format, produced by the
formatter the exporters package registers on the recorder when the agent mounts it (the
appliance never imports exporters). When `telemetry.prometheus_retention_time` is not positive
the Prometheus format is refused with Consul's 415 text.
"""

from __future__ import annotations

from aiohttp import web

from appliance.http.encoding import json_response
from appliance.http.errors import HTTPError

DISABLED = "Prometheus is not enabled since its retention time is not positive"
NOT_INSTALLED = "Prometheus format is not available: the cairn exporters extension is not installed"
OPENMETRICS = "application/openmetrics-text"


def wants_prometheus(request: web.Request) -> bool:
    if request.query.get("format") == "prometheus":
        return True
    accept = request.headers.get("Accept", "")
    return any(part.split(";", 1)[0].strip().lower() == OPENMETRICS for part in accept.split(","))


async def metrics(request: web.Request) -> web.Response:
    agent = request.app["agent"]
    tel = agent.telemetry
    if wants_prometheus(request):
        if not tel.prometheus_enabled:
            raise HTTPError(415, DISABLED)
        formatter = tel.formatters.get("prometheus")
        if formatter is None:
            raise HTTPError(415, NOT_INSTALLED)
        body, content_type = formatter(agent, request.query)
        return web.Response(body=body, headers={"Content-Type": content_type})
    return json_response(request, tel.display())


ROUTES = [
    ("GET", "/v1/agent/metrics", metrics),
]
