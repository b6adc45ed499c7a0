"""The agent's metrics, under Consul's names: the recorder and what feeds it.

One `Telemetry` per agent (`agent.telemetry`), built by `build` from the `telemetry` block of the
configuration. The package, by concern:

- recorder.py: `Telemetry`, the recorder: counters, gauges and samples with labels, kept in
  10 s intervals for `/v1/agent/metrics` (`display()`) and cumulatively for Prometheus
  (`prometheus_series()`, rendered by the exporters package); `SampledTiming` for hot paths;
- raft.py: `RaftTelemetry`, the Raft driver's metrics hook (`consul.raft.*`, `consul.fsm.*`,
  the timings of the commands proposed to the log);
- gauges.py: `build` and `instrument`, which wire the recorder to the subsystems through their
  interfaces (appliance/interfaces.py), and the agent's state gauges, read when metrics are read;
- edges.py: DNS answers (`instrument_dns`) and HTTP requests (`record_http`, called by the HTTP
  server's middleware);
- gossip.py: the LAN pool's `consul.memberlist.*` and `consul.serf.*` (`instrument_gossip`).

Everything runs on the event loop thread; nothing here blocks or does I/O.
"""

from appliance.telemetry.edges import (
    DNS_SAMPLE_EVERY,
    DNS_SAMPLE_GAP_S,
    HTTP_SAMPLE_EVERY,
    HTTP_SAMPLE_GAP_S,
    instrument_dns,
    is_ptr_query,
    record_http,
    route_label,
)
from appliance.telemetry.gauges import STATUSES, build, check_gauges, instrument, state_gauges
from appliance.telemetry.gossip import GOSSIP_COUNTERS, GOSSIP_SAMPLES, instrument_gossip
from appliance.telemetry.raft import RaftTelemetry, kv_op
from appliance.telemetry.recorder import (
    INTERVAL_S,
    MAX_WINDOW,
    QUANTILES,
    RETAIN_INTERVALS,
    SUMMARY_MAX_AGE_S,
    Aggregate,
    GaugeSource,
    Interval,
    LabelKey,
    Labels,
    SampledTiming,
    Summary,
    Telemetry,
    quantile,
)

__all__ = [
    "DNS_SAMPLE_EVERY", "DNS_SAMPLE_GAP_S", "GOSSIP_COUNTERS", "GOSSIP_SAMPLES", "HTTP_SAMPLE_EVERY",
    "HTTP_SAMPLE_GAP_S", "INTERVAL_S", "MAX_WINDOW", "QUANTILES", "RETAIN_INTERVALS", "STATUSES",
    "SUMMARY_MAX_AGE_S", "Aggregate", "GaugeSource", "Interval", "LabelKey", "Labels", "RaftTelemetry",
    "SampledTiming", "Summary", "Telemetry", "build", "check_gauges", "instrument",
    "instrument_dns", "instrument_gossip", "is_ptr_query", "kv_op", "quantile", "record_http",
    "route_label", "state_gauges",
]
