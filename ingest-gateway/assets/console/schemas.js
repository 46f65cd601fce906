// Event schemas: the list (latest versions), one type's versions side by side
// with what changed, the property editor that makes a new version, and a box
// that validates an event exactly as the worker would (POST …/validate runs
// proto's own validation).

import { api, seg } from './api.js';
import { h, clear, badge, pageHeader, emptyState, errorBanner, loading, json, link } from './ui.js';

const TYPES = ['string', 'integer', 'number', 'boolean', 'datetime', 'object', 'array'];

export async function render(main, route) {
  const [, type, sub] = route.parts;
  if (type === 'new') return renderEditor(main, null);
  if (type && sub === 'edit') return renderEditor(main, type);
  if (type) return renderOne(main, type, route.query);
  return renderList(main);
}

async function renderList(main) {
  const newButton = h('a', { class: 'btn btn-primary', href: '#/schemas/new', 'data-testid': 'new-schema' }, 'New event schema');
  const slot = h('div', {}, loading());
  main.append(pageHeader('Event schemas', 'Every event type must be registered; its properties are checked and the undeclared ones trimmed.', newButton), slot);
  let schemas;
  try {
    schemas = (await api.get('/v1/schemas')).schemas;
  } catch (e) {
    clear(slot, errorBanner(e, 'Listing event schemas'));
    return;
  }
  if (!schemas.length) {
    clear(slot, emptyState('No event schema yet',
      'Events of an unregistered type are rejected (unknown_event_type). Create the schema of your first event type, e.g. “view”.',
      h('a', { class: 'btn btn-primary', href: '#/schemas/new' }, 'New event schema')));
    return;
  }
  schemas.sort((a, b) => a.eventType.localeCompare(b.eventType));
  clear(slot, h('div', { class: 'card table-card' }, h('table', { class: 'table', 'data-testid': 'schemas-table' },
    h('thead', {}, h('tr', {}, ['Event type', 'Latest version', 'Properties', 'Required', 'Source / target', ''].map(t => h('th', {}, t)))),
    h('tbody', {}, schemas.map(s => h('tr', { 'data-schema': s.eventType },
      h('td', {}, link(`#/schemas/${seg(s.eventType)}`, s.eventType, { class: 'strong' })),
      h('td', { class: 'num' }, `v${s.version}`),
      h('td', {}, s.properties.length ? s.properties.map(p => p.name).join(', ') : h('span', { class: 'muted' }, 'none')),
      h('td', {}, s.properties.filter(p => p.required).map(p => p.name).join(', ') || h('span', { class: 'muted' }, '—')),
      h('td', {}, requiredItems(s)),
      h('td', { class: 'row-actions' }, link(`#/schemas/${seg(s.eventType)}`, 'Versions'), link(`#/schemas/${seg(s.eventType)}/edit`, 'New version'))))))));
}

function requiredItems(s) {
  const items = [s.sourceRequired ? 'source' : null, s.targetRequired ? 'target' : null].filter(Boolean);
  return items.length ? `${items.join(' and ')} required` : h('span', { class: 'muted' }, 'optional');
}

async function allVersions(type) {
  const latest = await api.get(`/v1/schemas/${seg(type)}`);
  const older = await Promise.all(
    Array.from({ length: latest.version - 1 }, (_, i) => api.get(`/v1/schemas/${seg(type)}?version=${i + 1}`)));
  return [...older, latest];
}

function describe(p) {
  if (!p) return null;
  return [p.type, p.required ? 'required' : 'optional', p.profileProperty ? `→ profile.${p.profileProperty}` : null].filter(Boolean).join(', ');
}

/** Rows of what differs between versions a (left) and b (right). */
function compare(a, b) {
  const names = [...new Set([...a.properties.map(p => p.name), ...b.properties.map(p => p.name)])];
  const byName = (s, n) => s.properties.find(p => p.name === n);
  const rows = names.map(n => {
    const l = describe(byName(a, n));
    const r = describe(byName(b, n));
    const change = !l ? 'added' : !r ? 'removed' : l !== r ? 'changed' : 'same';
    return { label: n, l, r, change };
  });
  for (const [label, key] of [['source', 'sourceRequired'], ['target', 'targetRequired']]) {
    const l = a[key] ? 'required' : 'optional';
    const r = b[key] ? 'required' : 'optional';
    rows.push({ label: `(${label})`, l, r, change: l === r ? 'same' : 'changed' });
  }
  return rows;
}

async function renderOne(main, type, query) {
  const slot = h('div', {}, loading());
  main.append(h('p', { class: 'crumbs' }, link('#/schemas', 'Event schemas'), ' / ', type),
    pageHeader(type, 'Versions side by side, and what the worker would say of an event.',
      h('a', { class: 'btn btn-primary', href: `#/schemas/${seg(type)}/edit`, 'data-testid': 'new-version' }, 'New version')),
    slot);
  let versions;
  try {
    versions = await allVersions(type);
  } catch (e) {
    if (e.status === 404) {
      clear(slot, emptyState(`No schema for “${type}”`, 'Events of this type are rejected as unknown_event_type until you create it.',
        h('a', { class: 'btn btn-primary', href: `#/schemas/new?eventType=${seg(type)}` }, `Create “${type}”`)));
    } else {
      clear(slot, errorBanner(e, `Loading schema ${type}`));
    }
    return;
  }
  const last = versions.length;
  const pick = (name, fallback) => {
    const v = Number(query.get(name));
    return v >= 1 && v <= last ? v : fallback;
  };
  const left = pick('left', Math.max(1, last - 1));
  const right = pick('right', last);
  const select = (name, value) => h('select', {
    'data-testid': `compare-${name}`,
    onchange: ev => {
      const q = new URLSearchParams(query);
      q.set(name, ev.target.value);
      location.hash = `#/schemas/${seg(type)}?${q}`;
    },
  }, versions.map(v => h('option', { value: v.version, selected: v.version === value ? 'selected' : null }, `version ${v.version}`)));
  const rows = compare(versions[left - 1], versions[right - 1]);
  const changed = rows.filter(r => r.change !== 'same').length;
  const comparison = h('section', { class: 'card' },
    h('div', { class: 'card-header' }, h('h2', {}, 'Versions'),
      h('div', { class: 'inline-controls' }, select('left', left), h('span', { class: 'muted' }, 'compared with'), select('right', right))),
    h('p', { class: 'muted' }, left === right ? 'The same version on both sides.' : `${changed} difference${changed === 1 ? '' : 's'} between version ${left} and version ${right}.`),
    h('table', { class: 'table diff', 'data-testid': 'schema-diff' },
      h('thead', {}, h('tr', {}, h('th', {}, 'Property'), h('th', {}, `Version ${left}`), h('th', {}, `Version ${right}`), h('th', {}, ''))),
      h('tbody', {}, rows.map(r => h('tr', { class: `diff-${r.change}` },
        h('td', {}, h('code', {}, r.label)),
        h('td', {}, r.l || h('span', { class: 'muted' }, '—')),
        h('td', {}, r.r || h('span', { class: 'muted' }, '—')),
        h('td', {}, r.change === 'same' ? '' : badge(r.change, r.change)))))));
  clear(slot, comparison, validateBox(type, versions[last - 1]));
}

function sampleEvent(type, schema) {
  const value = { string: 'text', integer: 1, number: 1.5, boolean: true, datetime: new Date().toISOString(), object: {}, array: [] };
  const properties = {};
  for (const p of schema.properties) properties[p.name] = value[p.type];
  return {
    eventType: type, sessionId: 'session-1', properties, scope: 'my-source',
    timeStamp: new Date().toISOString(),
    source: { itemId: '_', itemType: '_' }, target: { itemId: '_', itemType: '_' },
  };
}

function validateBox(type, schema) {
  const area = h('textarea', { class: 'mono', rows: 14, 'data-testid': 'validate-input', spellcheck: 'false' }, json(sampleEvent(type, schema)));
  const result = h('div', { 'data-testid': 'validate-result' });
  const run = async () => {
    let event;
    try {
      event = JSON.parse(area.value);
    } catch (e) {
      clear(result, errorBanner({ code: 'invalid_json', message: e.message }, 'Reading the event'));
      return;
    }
    try {
      const verdict = await api.post(`/v1/schemas/${seg(type)}/validate`, event);
      clear(result, verdictView(verdict));
    } catch (e) {
      clear(result, errorBanner(e, 'Validating'));
    }
  };
  return h('section', { class: 'card' },
    h('h2', {}, 'Validate an event'),
    h('p', { class: 'muted' }, `Checked against the latest version of “${type}” by the worker's own rules: the reasons below are exactly what the event log would record.`),
    area,
    h('div', { class: 'form-actions' }, h('button', { class: 'btn btn-primary', 'data-testid': 'validate-submit', onclick: run }, 'Validate')),
    result);
}

function verdictView(v) {
  return h('div', { class: `verdict ${v.valid ? 'verdict-ok' : 'verdict-bad'}` },
    h('div', { class: 'verdict-head' }, v.valid ? badge('valid', 'accepted') : badge('rejected'),
      v.schemaVersion ? h('span', { class: 'muted' }, ` against version ${v.schemaVersion}`) : h('span', { class: 'muted' }, ' no schema')),
    v.valid
      ? [h('p', {}, 'Stored properties (undeclared ones trimmed):'), h('pre', { class: 'json' }, json(v.properties))]
      : reasonsTable(v.reasons));
}

export function reasonsTable(reasons) {
  return h('table', { class: 'table reasons', 'data-testid': 'reasons' },
    h('thead', {}, h('tr', {}, h('th', {}, 'Code'), h('th', {}, 'Path'), h('th', {}, 'Message'))),
    h('tbody', {}, (reasons || []).map(r => h('tr', {},
      h('td', {}, h('code', { class: 'reason-code' }, r.code)), h('td', {}, h('code', {}, r.path)), h('td', {}, r.message)))));
}

function propertyRow(p, onRemove) {
  const row = h('tr', { class: 'prop-row' },
    h('td', {}, h('input', { class: 'prop-name', value: p.name || '', placeholder: 'name', required: true, maxlength: 128 })),
    h('td', {}, h('select', { class: 'prop-type' }, TYPES.map(t => h('option', { value: t, selected: p.type === t ? 'selected' : null }, t)))),
    h('td', { class: 'center' }, h('input', { type: 'checkbox', class: 'prop-required', checked: !!p.required })),
    h('td', {}, h('input', { class: 'prop-profile', value: p.profileProperty || '', placeholder: '(none)' })),
    h('td', {}, h('button', { type: 'button', class: 'btn btn-small btn-ghost', title: 'Remove', onclick: () => onRemove(row) }, 'Remove')));
  return row;
}

async function renderEditor(main, type) {
  let base = { properties: [], sourceRequired: false, targetRequired: false };
  const slot = h('div');
  main.append(h('p', { class: 'crumbs' }, link('#/schemas', 'Event schemas'), ' / ', type ? link(`#/schemas/${seg(type)}`, type) : 'new', type ? ' / new version' : ''),
    pageHeader(type ? `New version of “${type}”` : 'New event schema', 'Declare each property the event may carry; events are checked against the newest version.'),
    slot);
  if (type) {
    try {
      base = await api.get(`/v1/schemas/${seg(type)}`);
    } catch (e) {
      if (e.status !== 404) { clear(slot, errorBanner(e, `Loading schema ${type}`)); return; }
    }
  }
  const preset = new URLSearchParams(location.hash.split('?')[1] || '').get('eventType') || '';
  const eventType = h('input', { id: 'schema-event-type', value: type || preset, required: true, maxlength: 128, placeholder: 'view', disabled: type ? true : null });
  const body = h('tbody');
  const remove = row => row.remove();
  for (const p of base.properties) body.append(propertyRow(p, remove));
  const sourceRequired = h('input', { type: 'checkbox', id: 'source-required', checked: base.sourceRequired });
  const targetRequired = h('input', { type: 'checkbox', id: 'target-required', checked: base.targetRequired });
  const status = h('div');
  const form = h('form', { class: 'card form', id: 'schema-form' },
    h('label', {}, 'Event type', eventType),
    h('h2', {}, 'Properties'),
    h('table', { class: 'table editor', 'data-testid': 'property-editor' },
      h('thead', {}, h('tr', {}, h('th', {}, 'Name'), h('th', {}, 'Type'), h('th', { class: 'center' }, 'Required'), h('th', {}, 'Profile property'), h('th', {}, ''))),
      body),
    h('button', { type: 'button', class: 'btn', 'data-testid': 'add-property', onclick: () => body.append(propertyRow({ type: 'string' }, remove)) }, 'Add property'),
    h('div', { class: 'checks' },
      h('label', { class: 'check' }, sourceRequired, 'source required'),
      h('label', { class: 'check' }, targetRequired, 'target required')),
    h('div', { class: 'form-actions' }, h('button', { class: 'btn btn-primary', type: 'submit', 'data-testid': 'save-schema' }, type ? 'Save new version' : 'Create schema')),
    status);
  form.addEventListener('submit', async ev => {
    ev.preventDefault();
    const name = eventType.value.trim();
    const properties = [...body.querySelectorAll('.prop-row')].map(r => {
      const p = { name: r.querySelector('.prop-name').value.trim(), type: r.querySelector('.prop-type').value };
      if (r.querySelector('.prop-required').checked) p.required = true;
      const profileProperty = r.querySelector('.prop-profile').value.trim();
      if (profileProperty) p.profileProperty = profileProperty;
      return p;
    });
    try {
      const saved = await api.put(`/v1/schemas/${seg(name)}`, {
        properties, sourceRequired: sourceRequired.checked, targetRequired: targetRequired.checked,
      });
      location.hash = `#/schemas/${seg(name)}?right=${saved.version}`;
    } catch (e) {
      clear(status, errorBanner(e, 'Saving the schema'));
    }
  });
  clear(slot, form);
}
