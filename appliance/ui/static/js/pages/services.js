// Services: health counts, search, filter by health and tag, sort, pages of 100 rows.
import { encodePath, link, live } from '../api.js';
import { clear, counts, h, refill, tags } from '../dom.js';

const PAGE = 100;
// names compared by a lower-cased key made once per answer (a collator is 10x slower on 5,000 rows)
const byName = (a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0);
const SORTS = {
  'name-asc': (a, b) => byName(a, b),
  'name-desc': (a, b) => byName(b, a),
  critical: (a, b) => b.ChecksCritical - a.ChecksCritical || b.ChecksWarning - a.ChecksWarning
    || byName(a, b),
  instances: (a, b) => b.InstanceCount - a.InstanceCount || byName(a, b),
};

export function health(s) {
  if (s.ChecksCritical) return 'critical';
  if (s.ChecksWarning) return 'warning';
  return 'passing';
}

function option(value, text, selected) {
  return h('option', { value, selected: value === selected }, text);
}

export function list(main) {
  document.title = 'Services - cairn';
  const q = new URLSearchParams(location.search);
  const state = { q: q.get('q') || '', status: q.get('status') || '', tag: q.get('tag') || '',
    sort: q.get('sort') || 'name-asc', page: 0 };
  let all = [];
  const search = h('input', { id: 'svc-search', type: 'search', value: state.q, placeholder: 'name or tag' });
  const status = h('select', { id: 'svc-status' }, option('', 'any health', state.status),
    ['passing', 'warning', 'critical'].map((s) => option(s, s, state.status)));
  const tagSelect = h('select', { id: 'svc-tag' });
  const sort = h('select', { id: 'svc-sort' }, option('name-asc', 'name A-Z', state.sort),
    option('name-desc', 'name Z-A', state.sort), option('critical', 'most critical first', state.sort),
    option('instances', 'most instances first', state.sort));
  const summary = h('p', { id: 'svc-summary', 'aria-live': 'polite' });
  const body = h('tbody');
  const pager = h('div', { class: 'pager' });
  const problem = h('div');
  clear(main,
    h('h1', null, 'Services'),
    h('div', { class: 'controls', role: 'search' },
      h('label', { for: 'svc-search' }, 'Search', search),
      h('label', { for: 'svc-status' }, 'Health', status),
      h('label', { for: 'svc-tag' }, 'Tag', tagSelect),
      h('label', { for: 'svc-sort' }, 'Sort', sort)),
    problem, summary,
    h('table', { class: 'stack', id: 'services' },
      h('thead', null, h('tr', null, h('th', { scope: 'col' }, 'Service'), h('th', { scope: 'col' }, 'Health checks'),
        h('th', { scope: 'col' }, 'Instances'), h('th', { scope: 'col' }, 'Tags'))),
      body),
    pager);

  function keepInURL() {
    const p = new URLSearchParams(location.search);
    for (const key of ['q', 'status', 'tag', 'sort']) {
      if (state[key] && !(key === 'sort' && state.sort === 'name-asc')) p.set(key, state[key]); else p.delete(key);
    }
    const s = p.toString();
    history.replaceState(null, '', location.pathname + (s ? `?${s}` : ''));
  }

  function fillTags() {
    const known = [...new Set(all.flatMap((s) => s.Tags || []))].sort();
    if (state.tag && !known.includes(state.tag)) known.unshift(state.tag);
    clear(tagSelect, option('', 'any tag', state.tag), known.map((t) => option(t, t, state.tag)));
  }

  function render() {
    const needle = state.q.toLowerCase();
    const shown = all.filter((s) => (!needle || s.key.includes(needle)
        || (s.Tags || []).some((t) => t.toLowerCase().includes(needle)))
      && (!state.status || health(s) === state.status)
      && (!state.tag || (s.Tags || []).includes(state.tag)));
    shown.sort(SORTS[state.sort] || SORTS['name-asc']);
    const pages = Math.max(1, Math.ceil(shown.length / PAGE));
    state.page = Math.min(state.page, pages - 1);
    const rows = shown.slice(state.page * PAGE, (state.page + 1) * PAGE);
    summary.textContent = `${shown.length} of ${all.length} services`;
    refill(body, 'data-service', rows.map((s) => h('tr', { 'data-service': s.Name },
      h('td', null, h('a', { href: link(`services/${encodePath(s.Name)}`) }, s.Name)),
      h('td', null, counts(s.ChecksPassing, s.ChecksWarning, s.ChecksCritical)),
      h('td', null, `${s.InstanceCount}`),
      h('td', null, tags(s.Tags)))));
    if (pages > 1) {
      clear(pager,
        h('button', { type: 'button', disabled: state.page === 0, onclick: () => { state.page -= 1; render(); } },
          'Previous'),
        h('span', null, `Page ${state.page + 1} of ${pages}`),
        h('button', { type: 'button', disabled: state.page >= pages - 1,
          onclick: () => { state.page += 1; render(); } }, 'Next'));
    } else {
      clear(pager);
    }
  }

  const changed = (key, el) => () => { state[key] = el.value; state.page = 0; keepInURL(); render(); };
  search.addEventListener('input', changed('q', search));
  status.addEventListener('change', changed('status', status));
  tagSelect.addEventListener('change', changed('tag', tagSelect));
  sort.addEventListener('change', changed('sort', sort));
  fillTags();

  return live('/v1/internal/ui/services', (data) => {
    const t0 = performance.now();
    all = (data || []).filter((s) => s.Kind !== 'connect-proxy');
    for (const s of all) s.key = s.Name.toLowerCase();
    clear(problem);
    fillTags();
    render();
    performance.measure('cairn:services-render', { start: t0 });
  }, (err) => clear(problem, h('div', { class: 'error', role: 'alert' }, `Could not load services: ${err.message}`)));
}
