// Prometheus panels through the agent's metrics proxy (/v1/internal/ui/metrics-proxy/...).
// The PromQL comes from templates: defaults below, overridden by
// ui_config.metrics_provider_options_json = {"queries": {"<name>": "<PromQL>"}}. A template's
// {{service}} is the label value (escaped), {{range}} the selected range.
import { config, request } from './api.js';
import { clear, h } from './dom.js';

export const SERVICE_QUERIES = {
  'Targets up': 'sum(up{job="{{service}}"})',
  'Request rate (req/s)': 'sum(rate(http_requests_total{job="{{service}}"}[{{range}}]))',
  'Error ratio (%)': '100 * (sum(rate(http_requests_total{job="{{service}}",code=~"5.."}[{{range}}])) or vector(0))'
    + ' / sum(rate(http_requests_total{job="{{service}}"}[{{range}}]))',
  'p99 latency (s)': 'histogram_quantile(0.99, sum by (le) '
    + '(rate(http_request_duration_seconds_bucket{job="{{service}}"}[{{range}}])))',
};

export const CLUSTER_QUERIES = {
  'Raft commit time (ms, median)': 'max(consul_raft_commitTime{quantile="0.5"})',
  'Leader changes': 'sum(changes(consul_raft_state_leader[{{range}}]))',
  'Gossip health score (0 is best)': 'max({__name__=~"consul_(.+_)?memberlist_health_score"})',
  'DNS queries (/s)': 'sum(rate(consul_dns_domain_query_count[{{range}}]))',
  'HTTP requests (/s)': 'sum(rate(consul_api_http_count[{{range}}]))',
};

export const RANGES = ['5m', '15m', '1h', '6h', '24h'];

export function enabled() {
  const ui = config.UIConfig || {};
  return ui.metrics_provider === 'prometheus' && ui.metrics_proxy_enabled;
}

export function notConfigured() {
  return h('div', { class: 'notice', 'data-metrics': 'off' },
    h('p', null, 'Prometheus metrics are not configured for this agent. To show them here, add to the agent '
      + 'configuration and restart:'),
    h('pre', null, 'ui_config {\n  metrics_provider = "prometheus"\n  metrics_proxy {\n'
      + '    base_url = "http://127.0.0.1:9090"\n  }\n}'));
}

const escapeLabel = (v) => v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');

export function queries(kind, defaults) {
  const options = (config.UIConfig || {}).metrics_provider_options || {};
  const own = (options.queries && options.queries[kind]) || null;
  return own || defaults;
}

export function render(template, vars) {
  return template.replace(/\{\{(\w+)\}\}/g, (_, name) => (name === 'range' ? vars.range : escapeLabel(vars[name] || '')));
}

function format(value) {
  if (!Number.isFinite(value)) return 'no data';
  if (Math.abs(value) >= 1000) return value.toFixed(0);
  if (Math.abs(value) >= 10) return value.toFixed(1);
  return value.toPrecision(3).replace(/\.?0+$/, '') || '0';
}

async function instant(query) {
  const resp = await request('/v1/internal/ui/metrics-proxy/api/v1/query', { params: { query }, dc: false });
  if (resp.status === 502 || resp.status === 504) throw new Error('Prometheus did not answer');
  if (!resp.ok) throw new Error(`metrics proxy answered ${resp.status}`);
  const data = await resp.json();
  const result = data?.data?.result || [];
  if (!result.length) return NaN;
  return Number(result[0].value[1]);
}

// Panels for a set of queries, refreshed every 15 s (Prometheus has no blocking queries) until stop().
export function panels(container, kind, defaults, vars) {
  if (!enabled()) { clear(container, notConfigured()); return () => {}; }
  const templates = queries(kind, defaults);
  const rangeSelect = h('select', { id: `${kind}-range` }, RANGES.map((r) => h('option', { value: r, selected: r === '15m' }, r)));
  const grid = h('div', { class: 'panels' });
  const banner = h('div');
  const cells = Object.keys(templates).map((label) => {
    const value = h('div', { class: 'value', 'data-panel': label }, '…');
    grid.append(h('div', { class: 'panel' }, h('div', { class: 'label' }, label), value));
    return [label, value];
  });
  clear(container, h('div', { class: 'controls' }, h('label', { for: `${kind}-range` }, 'Time range', rangeSelect)),
    banner, grid);
  let timer = null;
  let stopped = false;
  async function refresh() {
    const range = rangeSelect.value;
    let failed = null;
    await Promise.all(cells.map(async ([label, el]) => {
      try {
        el.textContent = format(await instant(render(templates[label], { ...vars, range })));
        el.classList.remove('zero');
      } catch (err) {
        failed = err;
        el.classList.add('zero');
      }
    }));
    if (stopped) return;
    clear(banner, failed ? h('div', { class: 'error', role: 'status' }, `Metrics unavailable: ${failed.message}`) : null);
    timer = setTimeout(refresh, 15000);
  }
  rangeSelect.addEventListener('change', () => { clearTimeout(timer); refresh(); });
  refresh();
  return () => { stopped = true; clearTimeout(timer); };
}
