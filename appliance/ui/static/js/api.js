// Talking to the agent: the token header, ?dc=, and blocking queries (one long-poll per view).

const TOKEN_KEY = 'cairn:token';
export const config = JSON.parse(document.getElementById('cairn-ui-config').textContent || '{}');
export const base = config.ContentPath || '/ui/';

export class HTTPError extends Error {
  constructor(status, text) {
    super(text || `HTTP ${status}`);
    this.status = status;
  }
}

export function currentDC() {
  return new URLSearchParams(location.search).get('dc') || '';
}

export function getToken() {
  return localStorage.getItem(TOKEN_KEY) || '';
}

export function setToken(value) {
  if (value) localStorage.setItem(TOKEN_KEY, value);
  else localStorage.removeItem(TOKEN_KEY);
}

// A link inside the UI, keeping ?dc=.
export function link(path, params) {
  const q = new URLSearchParams(params || {});
  const dc = currentDC();
  if (dc) q.set('dc', dc);
  const s = q.toString();
  return base + path + (s ? `?${s}` : '');
}

export function encodePath(text) {
  return text.split('/').map(encodeURIComponent).join('/');
}

export async function request(path, { method = 'GET', body, params, signal, dc = true } = {}) {
  const url = new URL(path, location.origin);
  if (dc && currentDC()) url.searchParams.set('dc', currentDC());
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== undefined && v !== null) url.searchParams.set(k, v);
  }
  const headers = {};
  const token = getToken();
  if (token) headers['X-Consul-Token'] = token;
  return fetch(url, { method, body, headers, signal });
}

export async function getJSON(path, opts) {
  const resp = await request(path, opts);
  if (!resp.ok) throw new HTTPError(resp.status, (await resp.text()).trim());
  return resp.json();
}

const sleep = (ms, signal) => new Promise((resolve) => {
  const t = setTimeout(resolve, ms);
  signal?.addEventListener('abort', () => { clearTimeout(t); resolve(); }, { once: true });
});

// Keep `path` current: the first answer at once, then one blocking request at a time
// (?index=&wait=), re-rendering only when the index moves. Paused while the tab is hidden.
// Returns stop(), which aborts the request in flight.
export function live(path, onData, onError, params) {
  const stopper = new AbortController();
  let inflight = null;
  let index = 0;
  const onVisibility = () => { if (document.hidden && inflight) inflight.abort(); };
  document.addEventListener('visibilitychange', onVisibility);
  (async () => {
    let backoff = 1000;
    while (!stopper.signal.aborted) {
      if (document.hidden) { await sleep(500, stopper.signal); continue; }
      inflight = new AbortController();
      const abortInflight = () => inflight.abort();
      stopper.signal.addEventListener('abort', abortInflight, { once: true });
      try {
        const p = { ...(params || {}) };
        if (index) { p.index = index; p.wait = '30s'; }
        const resp = await request(path, { params: p, signal: inflight.signal });
        const next = Number(resp.headers.get('X-Consul-Index') || 0);
        if (!resp.ok && resp.status !== 404) throw new HTTPError(resp.status, (await resp.text()).trim());
        const data = resp.status === 404 ? null : await resp.json();
        if (next !== index || !index) onData(data, resp.status);
        index = next < index ? 0 : next;
        backoff = 1000;
      } catch (err) {
        if (stopper.signal.aborted) break;
        if (err.name !== 'AbortError') {
          onError(err);
          index = 0;
          await sleep(backoff, stopper.signal);
          backoff = Math.min(backoff * 2, 30000);
        }
      } finally {
        stopper.signal.removeEventListener('abort', abortInflight);
        inflight = null;
      }
    }
  })();
  return () => {
    stopper.abort();
    document.removeEventListener('visibilitychange', onVisibility);
  };
}
