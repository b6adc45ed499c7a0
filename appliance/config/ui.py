"""The web UI's `ui_config` metrics settings, resolved to a UIMetrics (Consul's names and texts).

    ui_config {
      enabled      = true
      content_path = "/ui/"
      metrics_provider = "prometheus"
      metrics_provider_options_json = "{\\"queries\\": {\\"request_rate\\": \\"...\\"}}"
      metrics_proxy {
        base_url       = "http://127.0.0.1:9090"
        add_headers    = [{ name = "Authorization", value = "Bearer ..." }]
        path_allowlist = ["/api/v1/query", "/api/v1/query_range"]
      }
      dashboard_url_templates { service = "https://grafana/d/x?var-service={{Service.Name}}" }
    }

With `metrics_provider = "prometheus"` and no allow-list, the proxy allows Prometheus's two query
paths (Consul's documented default). `content_path` is checked here too, with Consul's texts.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlsplit

from appliance.config.errors import ConfigError
from appliance.config.runtime import UIMetrics

PROMETHEUS_PATHS = ("/api/v1/query", "/api/v1/query_range")
_CONTENT_PATH = re.compile(r"^[A-Za-z0-9/_-]+$")
_API_PATH = re.compile(r"^/v\d+/$")
_BASIC_NAME = re.compile(r"^[a-zA-Z0-9_-]+$")


def _http_url(value: str) -> bool:
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def check_content_path(path: str) -> None:
    if not _CONTENT_PATH.match(path):
        raise ConfigError(f"ui-content-path can only contain alphanumeric, -, _, or /. received: {json.dumps(path)}")
    if not path.strip("/"):
        raise ConfigError(f"ui-content-path cannot be the root: the HTTP API is there. received: {json.dumps(path)}")
    if _API_PATH.match(path):
        raise ConfigError(f"ui-content-path cannot have 'v[0-9]'. received: {json.dumps(path)}")


def _headers(raw: Any) -> tuple[tuple[str, str], ...]:
    out = []
    for item in raw or ():
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ConfigError("ui_config.metrics_proxy.add_headers: each entry needs a name and a value")
        out.append((item["name"], str(item.get("value", ""))))
    return tuple(out)


def resolve_ui_metrics(ui: dict[str, Any]) -> UIMetrics:
    provider = str(ui.get("metrics_provider") or "")
    if provider and not _BASIC_NAME.match(provider):
        raise ConfigError(f"ui_config.metrics_provider can only contain lowercase alphanumeric, - or _ characters."
                          f" received: {json.dumps(provider)}")
    options_json = str(ui.get("metrics_provider_options_json") or "")
    options: Any = {}
    if options_json:
        try:
            options = json.loads(options_json)
        except ValueError:
            options = None
        if not isinstance(options, dict):
            raise ConfigError("ui_config.metrics_provider_options_json must be empty or a string containing a valid"
                              f" JSON object. received: {json.dumps(options_json)}")
    proxy = ui.get("metrics_proxy") or {}
    if isinstance(proxy, list):  # an HCL block may arrive as a list of one mapping
        proxy = proxy[0] if proxy else {}
    base_url = str(proxy.get("base_url") or "")
    if base_url and not _http_url(base_url):
        raise ConfigError("ui_config.metrics_proxy.base_url must be a valid http or https URL. "
                          f"received: {json.dumps(base_url)}")
    allow = tuple(str(p) for p in proxy.get("path_allowlist") or ())
    for path in allow:
        if not path.startswith("/") or urlsplit(path).path != path:
            raise ConfigError(f"ui_config.metrics_proxy.path_allowlist: path {json.dumps(path)} is not an absolute"
                              " path")
    if not allow and provider == "prometheus":
        allow = PROMETHEUS_PATHS
    templates = {str(k): str(v) for k, v in (ui.get("dashboard_url_templates") or {}).items()}
    for value in templates.values():
        if not _http_url(value):
            raise ConfigError("ui_config.dashboard_url_templates values must be a valid http or https URL. "
                              f"received: {json.dumps(value)}")
    return UIMetrics(provider=provider, provider_options=options, proxy_base_url=base_url.rstrip("/"),
                     proxy_add_headers=_headers(proxy.get("add_headers")), proxy_path_allowlist=allow,
                     dashboard_url_templates=templates)
