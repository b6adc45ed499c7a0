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

from appliance.http.context import HTTPContext
from appliance.http.errors import HTTPError
from appliance.http.values import Answer, Request, json_answer

DISABLED = "Prometheus is not enabled since its retention time is not positive"
NOT_INSTALLED = "Prometheus format is not available: the cairn exporters extension is not installed"
OPENMETRICS = "application/openmetrics-text"


def wants_prometheus(req: Request) -> bool:
    if req.query.get("format") == "prometheus":
        return True
    accept = req.headers.get("Accept", "")
    return any(part.split(";", 1)[0].strip().lower() == OPENMETRICS for part in accept.split(","))


async def metrics(req: Request, ctx: HTTPContext) -> Answer:
    tel = ctx.telemetry
    if wants_prometheus(req):
        if not tel.prometheus_enabled:
            raise HTTPError(415, DISABLED)
        formatter = tel.formatters.get("prometheus")
        if formatter is None:
            raise HTTPError(415, NOT_INSTALLED)
        body, content_type = formatter(ctx, req.query)
        return Answer(200, None, body, content_type)
    return json_answer(req, tel.display())
