// Cluster: gossip members (status, role, build, tags), Raft peers with the leader, and cairn's own
// health from Prometheus. Members and peers have no blocking query: refreshed every 10 s while open.
import { getJSON } from '../api.js';
import { clear, h, statusBadge } from '../dom.js';
import { CLUSTER_QUERIES, panels } from '../metrics.js';

const MEMBER_STATUS = { 0: 'none', 1: 'alive', 2: 'leaving', 3: 'left', 4: 'failed' };

export function page(main) {
  document.title = 'Cluster - cairn';
  const members = h('tbody');
  const peers = h('tbody');
  const problem = h('div');
  const metrics = h('div', { id: 'cluster-metrics' });
  clear(main, h('h1', null, 'Cluster'), problem,
    h('h2', null, 'Raft peers'),
    h('table', { class: 'stack', id: 'raft-peers' },
      h('thead', null, h('tr', null, ['Node', 'Address', 'Role', 'Voter'].map((t) => h('th', { scope: 'col' }, t)))),
      peers),
    h('h2', null, 'Members'),
    h('table', { class: 'stack', id: 'members' },
      h('thead', null, h('tr', null, ['Name', 'Address', 'Status', 'Role', 'Build', 'Datacenter']
        .map((t) => h('th', { scope: 'col' }, t)))),
      members),
    h('h2', null, 'cairn metrics'), metrics);
  const stopMetrics = panels(metrics, 'cluster', CLUSTER_QUERIES, {});
  let timer = null;
  let stopped = false;
  async function refresh() {
    const problems = [];
    try {
      const list = await getJSON('/v1/agent/members');
      clear(members, list.map((m) => {
        const status = MEMBER_STATUS[m.Status] || String(m.Status);
        return h('tr', { 'data-member': m.Name },
          h('td', null, m.Name), h('td', { class: 'mono' }, `${m.Addr}:${m.Port}`),
          h('td', null, statusBadge(status === 'alive' ? 'passing' : 'critical'), ' ', status),
          h('td', null, (m.Tags || {}).role || ''), h('td', null, (m.Tags || {}).build || ''),
          h('td', null, (m.Tags || {}).dc || ''));
      }));
    } catch (err) { problems.push(`members: ${err.message}`); }
    try {
      const conf = await getJSON('/v1/operator/raft/configuration');
      clear(peers, (conf.Servers || []).map((s) => h('tr', { 'data-peer': s.Node },
        h('td', null, s.Node, s.Leader ? h('span', { class: 'badge', 'data-leader': '' }, ' leader') : null),
        h('td', { class: 'mono' }, s.Address), h('td', null, s.Leader ? 'leader' : 'follower'),
        h('td', null, s.Voter ? 'yes' : 'no'))));
    } catch (err) { problems.push(`Raft peers: ${err.message}`); }
    if (stopped) return;
    clear(problem, problems.map((p) => h('div', { class: 'error', role: 'alert' }, `Could not load ${p}`)));
    timer = setTimeout(refresh, 10000);
  }
  refresh();
  return () => { stopped = true; clearTimeout(timer); stopMetrics(); };
}
