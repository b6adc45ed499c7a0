// Key/Value: folders, create, edit with the CAS index (a concurrent change is refused), delete,
// delete a folder. Values are text when they decode as UTF-8, shown and edited as text only.
import { encodePath, getJSON, HTTPError, link, live, request } from '../api.js';
import { clear, h, refill } from '../dom.js';

const FORMATS = ['text', 'json', 'yaml', 'hcl'];
const PREVIEW_MAX = 64 * 1024;

function go(url) {
  history.pushState(null, '', url);
  dispatchEvent(new PopStateEvent('popstate'));
}

function crumbs(key) {
  const parts = key.split('/').filter(Boolean);
  const items = [h('li', null, h('a', { href: link('kv/') }, 'Key/Value'))];
  let path = '';
  parts.forEach((p, i) => {
    path += `${p}/`;
    const last = i === parts.length - 1 && !key.endsWith('/');
    items.push(h('li', null, last ? p : h('a', { href: link(`kv/${encodePath(path)}`) }, p)));
  });
  return h('nav', { 'aria-label': 'Breadcrumbs' }, h('ol', { class: 'crumbs' }, items));
}

export function decodeValue(b64) {
  if (!b64) return { text: '', binary: false };
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  try {
    return { text: new TextDecoder('utf-8', { fatal: true }).decode(bytes), binary: false };
  } catch {
    return { text: `binary value (${bytes.length} bytes)`, binary: true };
  }
}

export function guessFormat(text) {
  const t = text.trim();
  if (/^[[{]/.test(t)) { try { JSON.parse(t); return 'json'; } catch { /* not JSON */ } }
  if (/^\s*[\w.-]+\s*=\s*/m.test(t) || /^\s*[\w-]+\s+("[^"]*"\s+)*\{/m.test(t)) return 'hcl';
  if (/^\s*[\w.-]+:\s/m.test(t) || t.startsWith('---')) return 'yaml';
  return 'text';
}

function balanced(text) {
  const stack = [];
  const pairs = { '}': '{', ']': '[', ')': '(' };
  let quote = false;
  for (let i = 0; i < text.length; i += 1) {
    const c = text[i];
    if (quote) { if (c === '\\') i += 1; else if (c === '"') quote = false; continue; }
    if (c === '"') quote = true;
    else if ('{[('.includes(c)) stack.push(c);
    else if (pairs[c] && stack.pop() !== pairs[c]) return `unexpected "${c}"`;
  }
  if (quote) return 'unterminated string';
  return stack.length ? `unclosed "${stack.pop()}"` : '';
}

// '' when the value is valid in its format, else why not.
export function validate(format, text) {
  if (format === 'json') {
    try { JSON.parse(text); return ''; } catch (err) { return `Invalid JSON: ${err.message}`; }
  }
  if (format === 'yaml') {
    const tab = text.split('\n').findIndex((l) => /^\t/.test(l));
    if (tab >= 0) return `Invalid YAML: tab indentation on line ${tab + 1}`;
    const bad = balanced(text.replace(/#.*$/gm, ''));
    return bad && /[[{]/.test(text) ? `Invalid YAML: ${bad}` : '';
  }
  if (format === 'hcl') {
    const bad = balanced(text.replace(/(#|\/\/).*$/gm, ''));
    return bad ? `Invalid HCL: ${bad}` : '';
  }
  return '';
}

// Highlighted copy of a JSON/YAML/HCL value: spans with classes around text nodes, never markup.
export function highlight(format, text) {
  const pre = h('pre', { class: 'mono', 'aria-label': 'Highlighted value' });
  if (text.length > PREVIEW_MAX) {
    pre.textContent = `No preview for values over ${PREVIEW_MAX / 1024} KB (this one is ${Math.ceil(text.length / 1024)} KB).`;
    return pre;
  }
  if (format === 'text') { pre.textContent = text; return pre; }
  // bounded tokens: a long run of word characters must not make the scan quadratic
  const re = /("(?:[^"\\\n]|\\.){0,4096}")(\s*[:=])?|\b(true|false|null)\b|(-?\d{1,64}(?:\.\d{1,64})?(?:[eE][+-]?\d{1,4})?)|([\w.-]{1,128})(\s*[:=])/g;
  let last = 0;
  for (const m of text.matchAll(re)) {
    pre.append(text.slice(last, m.index));
    if (m[1]) pre.append(h('span', { class: m[2] ? 'hl-key' : 'hl-str' }, m[1]), m[2] || '');
    else if (m[3]) pre.append(h('span', { class: 'hl-lit' }, m[3]));
    else if (m[4]) pre.append(h('span', { class: 'hl-num' }, m[4]));
    else pre.append(h('span', { class: 'hl-key' }, m[5]), m[6]);
    last = m.index + m[0].length;
  }
  pre.append(text.slice(last));
  return pre;
}

function message(el, kind, text) {
  clear(el, text ? h('div', { class: kind, role: kind === 'error' ? 'alert' : 'status' }, text) : null);
}

async function put(key, value, cas) {
  const resp = await request(`/v1/kv/${encodePath(key)}`, { method: 'PUT', body: value, params: { cas } });
  const text = (await resp.text()).trim();
  if (!resp.ok) throw new HTTPError(resp.status, text);
  return text === 'true';
}

function twoStep(label, confirmLabel, action) {
  const button = h('button', { type: 'button', class: 'danger' }, label);
  let armed = false;
  button.addEventListener('click', async () => {
    if (!armed) { armed = true; button.textContent = confirmLabel; return; }
    button.disabled = true;
    await action();
  });
  button.addEventListener('blur', () => { armed = false; button.textContent = label; });
  return button;
}

function folder(main, prefix) {
  const listEl = h('ul', { id: 'kv-list' });
  const note = h('div');
  const nameInput = h('input', { id: 'kv-new-key', type: 'text', required: true, spellcheck: 'false' });
  const valueInput = h('textarea', { id: 'kv-new-value', spellcheck: 'false' });
  const form = h('form', { id: 'kv-create' },
    h('h2', null, 'Create a key'),
    h('p', null, h('label', { for: 'kv-new-key' }, `Key (under ${prefix || 'the root'}; end with / for a folder)`)),
    nameInput,
    h('p', null, h('label', { for: 'kv-new-value' }, 'Value')), valueInput,
    h('div', { class: 'row' }, h('button', { type: 'submit' }, 'Create')));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const key = prefix + nameInput.value.trim();
    const format = guessFormat(valueInput.value);
    const invalid = key.endsWith('/') ? '' : validate(format, valueInput.value);
    if (invalid) { message(note, 'error', invalid); return; }
    try {
      const ok = await put(key, key.endsWith('/') ? '' : valueInput.value, 0);
      if (!ok) { message(note, 'error', `Not created: the key ${key} already exists.`); return; }
      go(link(`kv/${encodePath(key)}`));
    } catch (err) { message(note, 'error', `Not created: ${err.message}`); }
  });
  const actions = h('div', { class: 'row' });
  if (prefix) {
    actions.append(twoStep('Delete folder', `Really delete ${prefix} and everything under it?`, async () => {
      const resp = await request(`/v1/kv/${encodePath(prefix)}`, { method: 'DELETE', params: { recurse: '' } });
      if (!resp.ok) { message(note, 'error', `Not deleted: ${(await resp.text()).trim()}`); return; }
      const parent = prefix.slice(0, -1).includes('/') ? prefix.slice(0, prefix.slice(0, -1).lastIndexOf('/') + 1) : '';
      go(link(`kv/${encodePath(parent)}`));
    }));
  }
  clear(main, crumbs(prefix), h('h1', null, prefix || 'Key/Value'), note, actions, listEl, form);
  return live(`/v1/kv/${encodePath(prefix)}`, (keys) => {
    const entries = (keys || []).filter((k) => k !== prefix);
    refill(listEl, 'data-key', entries.length ? entries.map((k) => h('li', { 'data-key': k },
      h('a', { href: link(`kv/${encodePath(k)}`) }, k.slice(prefix.length) || k, k.endsWith('/') ? ' (folder)' : '')))
      : h('li', { class: 'zero' }, 'No keys here.'));
  }, (err) => message(note, 'error', `Could not list keys: ${err.message}`), { keys: '', separator: '/' });
}

function editor(main, key) {
  const note = h('div', { id: 'kv-note' });
  const body = h('div');
  clear(main, crumbs(key), h('h1', null, key), note, body);
  let index = 0;
  (async () => {
    let entry;
    try {
      [entry] = await getJSON(`/v1/kv/${encodePath(key)}`);
    } catch (err) {
      if (err.status === 404) { message(note, 'notice', 'This key does not exist.'); return; }
      message(note, 'error', `Could not read the key: ${err.message}`);
      return;
    }
    index = entry.ModifyIndex;
    const { text, binary } = decodeValue(entry.Value);
    const area = h('textarea', { id: 'kv-value', spellcheck: 'false', readonly: binary });
    area.value = text;
    const format = h('select', { id: 'kv-format' }, FORMATS.map((f) => h('option', { value: f }, f)));
    format.value = guessFormat(text);
    const preview = h('div', { id: 'kv-preview' });
    const refresh = () => {
      clear(preview, highlight(format.value, area.value));
      const bad = validate(format.value, area.value);
      message(note, bad ? 'error' : '', bad);
    };
    area.addEventListener('input', refresh);
    format.addEventListener('change', refresh);
    const info = h('p', { id: 'kv-index', class: 'zero' }, `Flags ${entry.Flags} · ModifyIndex ${index}`);
    const save = h('button', { type: 'button', id: 'kv-save', disabled: binary }, 'Save');
    save.addEventListener('click', async () => {
      const bad = validate(format.value, area.value);
      if (bad) { message(note, 'error', `Not saved: ${bad}`); return; }
      try {
        if (await put(key, area.value, index)) {
          const [now] = await getJSON(`/v1/kv/${encodePath(key)}`);
          index = now.ModifyIndex;
          info.textContent = `Flags ${now.Flags} · ModifyIndex ${index}`;
          message(note, 'ok', 'Saved.');
        } else {
          message(note, 'error', 'Not saved: someone else changed this key after you opened it. '
            + 'Reload the page to see the current value, then make your change again.');
        }
      } catch (err) { message(note, 'error', `Not saved: ${err.message}`); }
    });
    const remove = twoStep('Delete', 'Really delete this key?', async () => {
      const resp = await request(`/v1/kv/${encodePath(key)}`, { method: 'DELETE' });
      if (!resp.ok) { message(note, 'error', `Not deleted: ${(await resp.text()).trim()}`); return; }
      go(link(`kv/${encodePath(key.includes('/') ? key.slice(0, key.lastIndexOf('/') + 1) : '')}`));
    });
    clear(body, info,
      h('div', { class: 'controls' }, h('label', { for: 'kv-format' }, 'Format', format)),
      h('label', { for: 'kv-value' }, 'Value'), area,
      h('div', { class: 'row' }, save, remove), h('h2', null, 'Preview'), preview);
    refresh();
  })();
  return null;
}

export function page(main, key) {
  key = key || '';
  document.title = `${key || 'Key/Value'} - cairn`;
  return key === '' || key.endsWith('/') ? folder(main, key) : editor(main, key);
}
