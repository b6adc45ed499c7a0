// One service: its instances with node, address, port, tags, meta and checks; health over time
// since the page opened; Prometheus panels.
import { config, currentDC, encodePath, link, live } from '../api.js';
import { clear, counts, h, metaList, safeLink, statusBadge, tags, worst } from '../dom.js';
import { SERVICE_QUERIES, panels } from '../metrics.js';

// ui_config.dashboard_url_templates.service, each placeholder filled with an encoded value
function dashboard(name) {
  const template = (config.UIConfig?.dashboard_url_templates || {}).service;
  if (!template) return null;
  const values = { 'Service.Name': name, 'Service.Namespace': '', 'Service.Partition': '',
    Datacenter: currentDC() || config.LocalDatacenter || '' };
  const url = template.replace(/\{\{\s*([\w.]+)\s*\}\}/g,
    (m, key) => (key in values ? encodeURIComponent(values[key]) : m));
  const a = safeLink(url);
  if (typeof a === 'string') return null;
  a.textContent = 'Open dashboard';
  a.id = 'svc-dashboard';
  return h('p', null, a);
}

export function page(main, name) {
  document.title = `${name} - cairn`;
  const head = h('p', { id: 'svc-health' });
  const timeline = h('div', { class: 'timeline', role: 'img', 'aria-label': 'Health since this page opened' });
  const instances = h('div', { id: 'instances' });
  const metrics = h('div', { id: 'metrics' });
  const problem = h('div');
  clear(main, h('p', null, h('a', { href: link('services') }, '← Services')),
    h('h1', null, name), dashboard(name), problem, head,
    h('h2', null, 'Health since this page opened'), timeline,
    h('h2', null, 'Metrics'), metrics,
    h('h2', null, 'Instances'), instances);
  const changed = new Map();  // node/check -> [status, when the page saw it change]
  const history = [];
  const stopMetrics = panels(metrics, 'service', SERVICE_QUERIES, { service: name });

  function checkRow(node, c) {
    const key = `${node}/${c.CheckID}`;
    const seen = changed.get(key);
    if (!seen || seen[0] !== c.Status) changed.set(key, [c.Status, seen ? new Date() : null]);
    const when = changed.get(key)[1];
    return h('tr', { 'data-check': c.CheckID },
      h('td', null, c.Name, c.ServiceID ? null : [' ', h('span', { class: 'badge' }, 'node')]),
      h('td', null, statusBadge(c.Status)),
      h('td', null, c.Output ? h('pre', null, c.Output) : h('span', { class: 'zero' }, 'no output')),
      h('td', null, when ? when.toLocaleTimeString() : 'before this page opened'));
  }

  function render(data) {
    if (!data || !data.length) {
      clear(head, 'This service has no instances in this datacenter.');
      clear(instances);
      return;
    }
    const all = data.flatMap((csn) => csn.Checks.map((c) => [csn.Node.Node, c]));
    const uniq = new Map(all.map(([n, c]) => [`${n}/${c.CheckID}`, c.Status]));
    const statuses = [...uniq.values()];
    const n = (s) => statuses.filter((x) => x === s).length;
    clear(head, `${data.length} instance${data.length === 1 ? '' : 's'} · `,
      counts(n('passing'), n('warning'), n('critical')));
    history.push(n('critical') ? 'critical' : n('warning') ? 'warning' : 'passing');
    if (history.length > 120) history.shift();
    clear(timeline, history.map((s) => h('span', { class: s, title: s })));
    clear(instances, data.map((csn) => {
      const svc = csn.Service;
      const addr = svc.Address || csn.Node.Address;
      return h('section', { class: 'panel', 'data-instance': svc.ID },
        h('h3', null, svc.ID, ' ', statusBadge(worst(csn.Checks))),
        h('dl', { class: 'meta' },
          h('dt', null, 'Node'), h('dd', null, h('a', { href: link(`nodes/${encodePath(csn.Node.Node)}`) }, csn.Node.Node)),
          h('dt', null, 'Address'), h('dd', { class: 'mono' }, `${addr}:${svc.Port}`),
          h('dt', null, 'Tags'), h('dd', null, svc.Tags && svc.Tags.length ? tags(svc.Tags) : 'none'),
          h('dt', null, 'Meta'), h('dd', null, metaList(svc.Meta))),
        h('table', { class: 'stack' },
          h('caption', { class: 'visually-hidden' }, `Checks of ${svc.ID}`),
          h('thead', null, h('tr', null, h('th', { scope: 'col' }, 'Check'), h('th', { scope: 'col' }, 'Status'),
            h('th', { scope: 'col' }, 'Output'), h('th', { scope: 'col' }, 'Last change'))),
          h('tbody', null, csn.Checks.map((c) => checkRow(csn.Node.Node, c)))));
    }));
  }

  const stop = live(`/v1/health/service/${encodePath(name)}`, (data) => { clear(problem); render(data); },
    (err) => clear(problem, h('div', { class: 'error', role: 'alert' }, `Could not load the service: ${err.message}`)));
  return () => { stop(); stopMetrics(); };
}
