// The app: routes under the content path, the datacenter switcher and the token field.
import { base, config, currentDC, getJSON, getToken, setToken } from './api.js';
import { announce, clear, h } from './dom.js';
import * as services from './pages/services.js';
import * as service from './pages/service.js';
import * as nodes from './pages/nodes.js';
import * as kv from './pages/kv.js';
import * as cluster from './pages/cluster.js';

const ROUTES = [
  [/^(services\/?)?$/, 'services', services.list],
  [/^services\/(.+)$/, 'services', service.page],
  [/^nodes\/?$/, 'nodes', nodes.list],
  [/^nodes\/(.+)$/, 'nodes', nodes.page],
  [/^kv(?:\/(.*))?$/, 'kv', kv.page],
  [/^cluster\/?$/, 'cluster', cluster.page],
];

let stopView = null;

function route() {
  const main = document.getElementById('main');
  if (stopView) { stopView(); stopView = null; }
  const rest = location.pathname.startsWith(base) ? location.pathname.slice(base.length) : '';
  for (const [re, section, view] of ROUTES) {
    const m = rest.match(re);
    if (!m) continue;
    for (const a of document.querySelectorAll('nav a[data-section]')) {
      if (a.dataset.section === section) a.setAttribute('aria-current', 'page');
      else a.removeAttribute('aria-current');
    }
    clear(main);
    const args = m.slice(1).map((s) => (s === undefined ? s : decodeURIComponent(s)));
    stopView = view(main, ...args) || null;
    return;
  }
  clear(main, h('h1', null, 'Not found'), h('p', null, 'No page at this address.'));
  document.title = 'Not found - cairn';
}

export function navigate(url, replace = false) {
  if (replace) history.replaceState(null, '', url);
  else history.pushState(null, '', url);
  route();
  if (!replace) document.getElementById('main').focus({ preventScroll: true });
}

function onClick(event) {
  const a = event.target.closest('a');
  if (!a || event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey) return;
  const url = new URL(a.href, location.href);
  if (url.origin !== location.origin || !url.pathname.startsWith(base) || a.target) return;
  event.preventDefault();
  if (!url.searchParams.has('dc') && currentDC()) url.searchParams.set('dc', currentDC());
  navigate(url.pathname + url.search);
}

async function datacenters() {
  const select = document.getElementById('dc-select');
  const here = currentDC() || config.LocalDatacenter || '';
  let list = [here];
  try { list = await getJSON('/v1/catalog/datacenters', { dc: false }); } catch { /* keep the local one */ }
  if (!list.includes(here)) list.push(here);
  clear(select, list.map((dc) => h('option', { value: dc, selected: dc === here }, dc)));
  select.addEventListener('change', () => {
    const url = new URL(location.href);
    if (select.value === config.LocalDatacenter) url.searchParams.delete('dc');
    else url.searchParams.set('dc', select.value);
    for (const a of document.querySelectorAll('nav a[data-nav], a.brand')) {
      const target = new URL(a.getAttribute('href'), document.baseURI);
      target.search = url.searchParams.has('dc') ? `?dc=${encodeURIComponent(select.value)}` : '';
      a.setAttribute('href', target.pathname + target.search);
    }
    navigate(url.pathname + url.search, true);
  });
}

function tokenField() {
  const form = document.getElementById('token-form');
  const input = document.getElementById('token-input');
  input.value = getToken();
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    setToken(input.value.trim());
    announce(input.value.trim() ? 'Token saved in this browser.' : 'Token removed.');
    route();
  });
  document.getElementById('token-forget').addEventListener('click', () => {
    input.value = '';
    setToken('');
    announce('Token removed.');
    route();
  });
}

document.addEventListener('click', onClick);
window.addEventListener('popstate', route);
tokenField();
datacenters();
route();
