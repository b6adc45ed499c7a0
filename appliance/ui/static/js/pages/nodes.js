// Nodes (health, address, meta, services) and one node with its checks and services.
import { encodePath, link, live } from '../api.js';
import { clear, counts, h, metaList, refill, statusBadge, tags, worst } from '../dom.js';

const tally = (checks, s) => checks.filter((c) => c.Status === s).length;
const failed = (problem, what) => (err) => clear(problem,
  h('div', { class: 'error', role: 'alert' }, `Could not load ${what}: ${err.message}`));

export function list(main) {
  document.title = 'Nodes - cairn';
  const search = h('input', { id: 'node-search', type: 'search' });
  const body = h('tbody');
  const problem = h('div');
  let all = [];
  clear(main, h('h1', null, 'Nodes'),
    h('div', { class: 'controls', role: 'search' }, h('label', { for: 'node-search' }, 'Search', search)),
    problem,
    h('table', { class: 'stack', id: 'nodes' },
      h('thead', null, h('tr', null, ['Node', 'Health', 'Address', 'Services', 'Version']
        .map((t) => h('th', { scope: 'col' }, t)))),
      body));
  function render() {
    const needle = search.value.toLowerCase();
    const shown = all.filter((n) => !needle || n.Node.toLowerCase().includes(needle) || n.Address.includes(needle));
    refill(body, 'data-node', shown.slice(0, 500).map((n) => h('tr', { 'data-node': n.Node },
      h('td', null, h('a', { href: link(`nodes/${encodePath(n.Node)}`) }, n.Node)),
      h('td', null, counts(tally(n.Checks, 'passing'), tally(n.Checks, 'warning'), tally(n.Checks, 'critical'))),
      h('td', { class: 'mono' }, n.Address),
      h('td', null, `${n.Services.length}`),
      h('td', null, (n.Meta || {})['consul-version'] || (n.Meta || {})['cairn-version'] || ''))));
  }
  search.addEventListener('input', render);
  return live('/v1/internal/ui/nodes', (data) => { all = data || []; clear(problem); render(); },
    failed(problem, 'nodes'));
}

export function page(main, name) {
  document.title = `${name} - cairn`;
  const content = h('div');
  const problem = h('div');
  clear(main, h('p', null, h('a', { href: link('nodes') }, '← Nodes')), h('h1', null, name), problem, content);
  return live(`/v1/internal/ui/node/${encodePath(name)}`, (n) => {
    clear(problem);
    if (!n) { clear(content, h('p', null, 'No such node in this datacenter.')); return; }
    clear(content,
      h('p', null, statusBadge(worst(n.Checks)), ' ',
        counts(tally(n.Checks, 'passing'), tally(n.Checks, 'warning'), tally(n.Checks, 'critical'))),
      h('dl', { class: 'meta' }, h('dt', null, 'Address'), h('dd', { class: 'mono' }, n.Address),
        h('dt', null, 'ID'), h('dd', { class: 'mono' }, n.ID), h('dt', null, 'Datacenter'), h('dd', null, n.Datacenter)),
      h('h2', null, 'Health checks'),
      h('table', { class: 'stack', id: 'node-checks' },
        h('thead', null, h('tr', null, ['Check', 'Status', 'Service', 'Output'].map((t) => h('th', { scope: 'col' }, t)))),
        h('tbody', null, n.Checks.map((c) => h('tr', { 'data-check': c.CheckID },
          h('td', null, c.Name), h('td', null, statusBadge(c.Status)),
          h('td', null, c.ServiceName ? h('a', { href: link(`services/${encodePath(c.ServiceName)}`) }, c.ServiceName)
            : h('span', { class: 'zero' }, 'node')),
          h('td', null, c.Output ? h('pre', null, c.Output) : ''))))),
      h('h2', null, 'Services'),
      h('table', { class: 'stack', id: 'node-services' },
        h('thead', null, h('tr', null, ['Service', 'ID', 'Port', 'Tags'].map((t) => h('th', { scope: 'col' }, t)))),
        h('tbody', null, n.Services.map((s) => h('tr', null,
          h('td', null, h('a', { href: link(`services/${encodePath(s.Service)}`) }, s.Service)),
          h('td', null, s.ID), h('td', null, `${s.Port}`), h('td', null, tags(s.Tags)))))),
      h('h2', null, 'Metadata'), metaList(n.Meta));
  }, failed(problem, 'the node'));
}
