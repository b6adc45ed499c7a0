// DOM helpers. Everything from the agent is put in the page as text (text nodes, textContent):
// no HTML is ever parsed from data.

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else if (key === 'class') el.className = value;
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of [children].flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function clear(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

// clear() for a list that live updates redraw: rows carry their key in `attr`, and the element a
// keyboard user had focused in a row (its link) is focused again in the redrawn row with the same
// key, so an update does not throw the focus back to the top of the page.
export function refill(el, attr, ...children) {
  const active = document.activeElement;
  const row = active && active !== el && el.contains(active) ? active.closest(`[${attr}]`) : null;
  clear(el, ...children);
  if (!row) return el;
  const key = row.getAttribute(attr);
  const again = [...el.querySelectorAll(`[${attr}]`)].find((r) => r.getAttribute(attr) === key);
  const target = again && (again.matches(active.tagName) ? again : again.querySelector(active.tagName));
  if (target) target.focus();
  return el;
}

// An http(s) link from data (service meta values are often URLs); anything else stays text.
export function safeLink(text) {
  try {
    const url = new URL(text);
    if (url.protocol === 'http:' || url.protocol === 'https:') {
      return h('a', { href: url.href, rel: 'noopener noreferrer', target: '_blank' }, text);
    }
  } catch { /* not a URL */ }
  return text;
}

export function statusBadge(status) {
  return h('span', { class: `st ${status}` }, status);
}

export function counts(passing, warning, critical) {
  const one = (n, name) => h('span', { class: n ? `st ${name}` : 'st zero', 'data-count': name },
    `${n} ${name}`);
  return h('span', { class: 'counts' }, one(passing, 'passing'), one(warning, 'warning'), one(critical, 'critical'));
}

export function tags(list) {
  return (list || []).map((t) => h('span', { class: 'tag' }, t));
}

export function metaList(meta) {
  const entries = Object.entries(meta || {});
  if (!entries.length) return h('span', { class: 'zero' }, 'none');
  return h('dl', { class: 'meta' }, entries.map(([k, v]) => [h('dt', null, k), h('dd', null, safeLink(String(v)))]));
}

export function worst(checks) {
  let out = 'passing';
  for (const c of checks || []) {
    if (c.Status === 'critical') return 'critical';
    if (c.Status === 'warning') out = 'warning';
  }
  return out;
}

export function announce(text) {
  const el = document.getElementById('status');
  if (el) el.textContent = text;
}
