// Data sources: the list (with events of the last hour), creating one (the
// write key shown once, with a ready-to-paste curl of the reference request),
// and one source's page: enable/disable, add and revoke write keys.

import { api, seg, ingestUrl } from './api.js';
import { h, clear, badge, pageHeader, emptyState, errorBanner, loading, codeBlock, copyButton, facts, link } from './ui.js';

export async function render(main, route) {
  if (route.parts[1]) return renderOne(main, route.parts[1]);
  return renderList(main);
}

/** The reference document's request, for this source and key. */
export function referenceCurl(id, writeKey) {
  return `curl -X POST "${ingestUrl()}"  \\
      -H "X-Client-Id: ${id}" \\
      -H "X-Client-Access-Token: ${writeKey}" \\
      -H 'Content-Type: application/json' \\
      -d '{"events": [
              {
                  "eventType": "view",
                  "sessionId": 12345,
                  "properties": {},
                  "scope": "${id}",
                  "timeStamp": "2021-10-15T18:49:00+07:00",
                  "source": { "itemId": "_", "itemType": "_" },
                  "target": { "itemId": "_", "itemType": "_" }
              }
          ]}'`;
}

/** The key of a new source or token: shown once. */
function newKeyCard(id, writeKey, tokenId, title) {
  return h('section', { class: 'card card-highlight', 'data-testid': 'new-key' },
    h('h2', {}, title),
    h('p', {}, 'This write key is shown ', h('strong', {}, 'once'), ': the gateway keeps only its hash. Copy it now.'),
    facts([
      ['Data source id', h('code', { 'data-testid': 'new-source-id' }, id)],
      ['Token id', h('code', {}, tokenId)],
      ['Write key', h('span', { class: 'key-row' }, h('code', { class: 'key', 'data-testid': 'new-write-key' }, writeKey),
        copyButton(writeKey, 'Copy key', 'copy-key'))],
    ]),
    h('h3', {}, 'Send the reference request'),
    h('p', { class: 'muted' }, 'Register the event schema ', link('#/schemas/view', 'view'), ' first, then paste this in a shell:'),
    codeBlock(referenceCurl(id, writeKey), 'curl'),
    h('p', {}, link(`#/events/${seg(id)}`, 'Open its event log →')));
}

function createForm(onCreated) {
  const name = h('input', { name: 'name', id: 'ds-name', required: true, maxlength: 128, placeholder: 'Web shop' });
  const id = h('input', { name: 'id', id: 'ds-id', maxlength: 128, placeholder: 'shop (optional: generated when empty)', pattern: '[A-Za-z0-9_.\\-]+' });
  const rate = h('input', { name: 'rate', id: 'ds-rate', type: 'number', min: 1, placeholder: 'unlimited' });
  const origins = h('input', { name: 'origins', id: 'ds-origins', placeholder: '* (any page), or https://shop.example, …' });
  const status = h('div');
  const form = h('form', { class: 'card form', id: 'create-source' },
    h('h2', {}, 'New data source'),
    h('div', { class: 'grid-2' },
      h('label', {}, 'Name', name),
      h('label', {}, 'Id', id),
      h('label', {}, 'Rate limit (events/second)', rate),
      h('label', {}, 'Allowed origins (comma-separated)', origins)),
    h('div', { class: 'form-actions' }, h('button', { class: 'btn btn-primary', type: 'submit', 'data-testid': 'create-source-submit' }, 'Create data source')),
    status);
  form.addEventListener('submit', async ev => {
    ev.preventDefault();
    const body = { name: name.value };
    if (id.value.trim()) body.id = id.value.trim();
    if (rate.value) body.maxEventsPerSecond = Number(rate.value);
    const list = origins.value.split(',').map(s => s.trim()).filter(Boolean);
    if (list.length) body.allowedOrigins = list;
    try {
      const created = await api.post('/v1/datasources', body);
      onCreated(created);
    } catch (e) {
      clear(status, errorBanner(e, 'Creating the data source'));
    }
  });
  return form;
}

async function renderList(main) {
  const formSlot = h('div');
  const listSlot = h('div', {}, loading());
  const newButton = h('button', { class: 'btn btn-primary', 'data-testid': 'new-source' }, 'New data source');
  newButton.addEventListener('click', () => {
    clear(formSlot, createForm(created => {
      clear(formSlot, newKeyCard(created.id, created.writeKey, created.tokenId, `Data source “${created.name}” created`));
      loadList(listSlot);
    }));
    formSlot.querySelector('input').focus();
  });
  main.append(pageHeader('Data sources', 'Where events come from: each has an id (X-Client-ID) and write keys.', newButton), formSlot, listSlot);
  await loadList(listSlot);
}

async function loadList(slot) {
  let sources;
  try {
    sources = (await api.get('/v1/datasources')).dataSources;
  } catch (e) {
    clear(slot, errorBanner(e, 'Listing data sources'));
    return;
  }
  if (!sources.length) {
    clear(slot, emptyState('No data source yet',
      'Create one with “New data source”: you get its id and a write key, and a curl command that sends a first event.'));
    return;
  }
  sources.sort((a, b) => a.name.localeCompare(b.name));
  const rows = sources.map(s => {
    const count = h('td', { class: 'num', 'data-testid': 'last-hour' }, '…');
    api.get(`/v1/datasources/${seg(s.id)}/event-counts`).then(
      c => { count.textContent = (c.accepted + c.rejected).toLocaleString('en-US'); if (c.rejected) count.append(h('span', { class: 'muted small' }, ` (${c.rejected} rejected)`)); },
      e => { count.textContent = 'error'; count.title = `${e.code}: ${e.message}`; count.classList.add('cell-error'); });
    return h('tr', { 'data-source': s.id },
      h('td', {}, link(`#/sources/${seg(s.id)}`, s.name, { class: 'strong' })),
      h('td', {}, h('code', {}, s.id)),
      h('td', {}, s.enabled ? badge('enabled') : badge('disabled')),
      h('td', { class: 'num' }, s.maxEventsPerSecond ? `${s.maxEventsPerSecond.toLocaleString('en-US')}/s` : 'unlimited'),
      h('td', {}, s.allowedOrigins.join(', ')),
      count,
      h('td', { class: 'row-actions' }, link(`#/events/${seg(s.id)}`, 'Event log'), link(`#/sources/${seg(s.id)}`, 'Manage')));
  });
  clear(slot, h('div', { class: 'card table-card' }, h('table', { class: 'table', 'data-testid': 'sources-table' },
    h('thead', {}, h('tr', {}, ['Name', 'Id', 'Status', 'Rate limit', 'Allowed origins', 'Events (last hour)', ''].map(t => h('th', {}, t)))),
    h('tbody', {}, rows))));
}

async function renderOne(main, id) {
  const slot = h('div', {}, loading());
  main.append(slot);
  const draw = async (notice) => {
    let s;
    try {
      s = await api.get(`/v1/datasources/${seg(id)}`);
    } catch (e) {
      clear(slot, h('p', {}, link('#/sources', '← Data sources')), errorBanner(e, `Loading data source ${id}`));
      return;
    }
    const status = h('div');
    const act = async (what, fn) => {
      try {
        const result = await fn();
        await draw(result && result.writeKey ? newKeyCard(s.id, result.writeKey, result.tokenId, 'New write key') : null);
      } catch (e) {
        clear(status, errorBanner(e, what));
      }
    };
    const toggle = s.enabled
      ? h('button', { class: 'btn btn-danger', 'data-testid': 'disable-source', onclick: () => act('Disabling', () => api.post(`/v1/datasources/${seg(id)}/disable`)) }, 'Disable')
      : h('button', { class: 'btn btn-primary', 'data-testid': 'enable-source', onclick: () => act('Enabling', () => api.post(`/v1/datasources/${seg(id)}/enable`)) }, 'Enable');
    const tokens = s.tokens.length
      ? h('table', { class: 'table', 'data-testid': 'tokens-table' },
        h('thead', {}, h('tr', {}, h('th', {}, 'Token id'), h('th', {}, ''))),
        h('tbody', {}, s.tokens.map(t => h('tr', {},
          h('td', {}, h('code', {}, t.id)),
          h('td', { class: 'row-actions' }, h('button', {
            class: 'btn btn-small btn-danger', 'data-testid': `revoke-${t.id}`,
            onclick: () => {
              if (confirm(`Revoke ${t.id}? Producers using it get 401 from now on.`)) act('Revoking the key', () => api.del(`/v1/datasources/${seg(id)}/tokens/${seg(t.id)}`));
            },
          }, 'Revoke'))))))
      : emptyState('No write key', 'Nothing can send to this source: add a write key.');
    clear(slot,
      h('p', { class: 'crumbs' }, link('#/sources', 'Data sources'), ' / ', s.name),
      pageHeader(s.name, null, link(`#/events/${seg(id)}`, 'Event log', { class: 'btn' }), toggle),
      status,
      notice,
      h('section', { class: 'card' }, facts([
        ['Id', h('code', {}, s.id)],
        ['Status', s.enabled ? badge('enabled') : badge('disabled')],
        ['Rate limit', s.maxEventsPerSecond ? `${s.maxEventsPerSecond} events/second` : 'unlimited'],
        ['Allowed origins', s.allowedOrigins.join(', ')],
        ['Identity verification', s.identityVerification ? 'on' : 'off'],
      ])),
      h('section', { class: 'card' },
        h('div', { class: 'card-header' }, h('h2', {}, 'Write keys'),
          h('button', { class: 'btn', 'data-testid': 'add-token', onclick: () => act('Adding a key', () => api.post(`/v1/datasources/${seg(id)}/tokens`)) }, 'Add write key')),
        h('p', { class: 'muted' }, 'Several keys may be live at once: add the new one, move producers over, then revoke the old one.'),
        tokens));
  };
  await draw(null);
}
