// Small DOM helpers shared by the pages: an element builder (text is always
// set as text, never parsed as HTML), times in UTC, badges, empty states,
// error banners and copy buttons.

/** h('div', {class: 'x', onclick: f}, child, 'text', [more]) */
export function h(tag, attrs, ...children) {
  const node = tag === 'svg' || attrs?.svg
    ? document.createElementNS('http://www.w3.org/2000/svg', tag)
    : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false || k === 'svg') continue;
    if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else if (k === 'value') node.value = v;
    else if (k === 'checked') node.checked = !!v;
    else node.setAttribute(k, v === true ? '' : v);
  }
  append(node, children);
  return node;
}

export function svg(tag, attrs, ...children) {
  return h(tag, { ...attrs, svg: true }, ...children);
}

function append(node, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function clear(node, ...children) {
  node.replaceChildren();
  append(node, children);
  return node;
}

const pad = (n, w = 2) => String(n).padStart(w, '0');

/** "2026-12-06 15:30:12.345 UTC" */
export function utc(iso, { ms = true } = {}) {
  if (!iso) return '—';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  const base = `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ` +
    `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}`;
  return `${base}${ms ? `.${pad(d.getUTCMilliseconds(), 3)}` : ''} UTC`;
}

export function badge(text, kind) {
  return h('span', { class: `badge badge-${kind || text}` }, text);
}

export function pageHeader(title, subtitle, ...actions) {
  return h('header', { class: 'page-header' },
    h('div', {}, h('h1', {}, title), subtitle ? h('p', { class: 'subtitle' }, subtitle) : null),
    h('div', { class: 'actions' }, actions));
}

export function emptyState(title, text, ...actions) {
  return h('div', { class: 'empty', 'data-testid': 'empty-state' },
    h('h3', {}, title), h('p', {}, text), actions.length ? h('div', { class: 'actions' }, actions) : null);
}

/** An API failure, shown where it happened: status, code and message. */
export function errorBanner(error, what) {
  const code = error && error.code ? error.code : 'error';
  const status = error && error.status ? `HTTP ${error.status} · ` : '';
  return h('div', { class: 'error', role: 'alert', 'data-testid': 'api-error' },
    h('strong', {}, what ? `${what} failed` : 'Request failed'),
    h('span', { class: 'error-code' }, `${status}${code}`),
    h('div', {}, error && error.message ? error.message : String(error)));
}

export function loading(text = 'Loading…') {
  return h('div', { class: 'loading' }, text);
}

/** Copies `text` and says so on the button. */
export function copyButton(getText, label = 'Copy', testid) {
  const button = h('button', { class: 'btn btn-small', type: 'button', 'data-testid': testid }, label);
  button.addEventListener('click', async () => {
    const text = typeof getText === 'function' ? getText() : getText;
    try {
      await navigator.clipboard.writeText(text);
    } catch {
      // Clipboard API refused (no permission, insecure context): the old way.
      const area = h('textarea', { class: 'offscreen' }, text);
      document.body.append(area);
      area.select();
      document.execCommand('copy');
      area.remove();
    }
    button.textContent = 'Copied';
    button.classList.add('copied');
    setTimeout(() => { button.textContent = label; button.classList.remove('copied'); }, 1500);
  });
  return button;
}

export function codeBlock(text, testid) {
  return h('div', { class: 'code-block' },
    h('pre', { 'data-testid': testid }, text),
    h('div', { class: 'code-actions' }, copyButton(text, 'Copy', testid ? `${testid}-copy` : undefined)));
}

export function json(value) {
  return JSON.stringify(value, null, 2);
}

/** A definition list of label → value rows. */
export function facts(pairs) {
  return h('dl', { class: 'facts' }, pairs.map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
}

export function link(href, text, attrs = {}) {
  return h('a', { href, ...attrs }, text);
}

/** ISO 8601 (UTC) of a datetime-local value read as UTC, or '' */
export function localInputToIso(value) {
  if (!value) return '';
  const d = new Date(`${value}Z`);
  return Number.isNaN(d.getTime()) ? '' : d.toISOString();
}

/** A datetime-local value (UTC) of an ISO time, or '' */
export function isoToLocalInput(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return '';
  return d.toISOString().slice(0, 19);
}
