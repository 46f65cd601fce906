// The event log of a data source: newest first, filters kept in the URL,
// rows that expand to the stored properties / reasons / raw JSON, cursor
// paging ("Load more" follows nextCursor), a live mode that polls for new
// arrivals, and a per-minute chart of accepted and rejected events.
//
// Every read goes through the bounded admin API: a page is at most 100 rows
// by (scope, received time) order; the chart's range is at most 24 hours.
// Without a time filter the log shows the last 24 hours (all=1 lifts it): the
// API sorts a data source's rows in the range by arrival, so a bounded range
// keeps the first page fast in a table of millions (bench/console_queries.py).

import { api, seg, qs } from './api.js';
import { h, svg, clear, badge, pageHeader, emptyState, errorBanner, loading, utc, json, link, localInputToIso, isoToLocalInput } from './ui.js';
import { reasonsTable } from './schemas.js';

const PAGE = 100;
const LIVE_EVERY_MS = 2000;
const FILTERS = ['eventType', 'status', 'sessionId', 'profileId', 'from', 'to'];
const DAY_MS = 24 * 3600 * 1000;

export async function render(main, route) {
  const sourceId = route.parts[1];
  let sources;
  try {
    sources = (await api.get('/v1/datasources')).dataSources;
  } catch (e) {
    main.append(pageHeader('Event logs'), errorBanner(e, 'Listing data sources'));
    return null;
  }
  if (!sourceId) {
    const remembered = sessionStorage.getItem('powehi:lastSource');
    const first = sources.find(s => s.id === remembered) || sources[0];
    if (first) { location.replace(`#/events/${seg(first.id)}`); return null; }
    main.append(pageHeader('Event logs'), emptyState('No data source yet', 'Event logs belong to a data source: create one first.',
      h('a', { class: 'btn btn-primary', href: '#/sources' }, 'Data sources')));
    return null;
  }
  sessionStorage.setItem('powehi:lastSource', sourceId);
  const filters = Object.fromEntries(FILTERS.map(k => [k, route.query.get(k) || '']));
  if (route.query.get('all') === '1') filters.all = '1';
  const live = route.query.get('live') === '1';
  return renderLog(main, sources, sourceId, filters, live);
}

function hrefFor(sourceId, filters, live) {
  return `#/events/${seg(sourceId)}${qs({ ...filters, live: live ? '1' : '' })}`;
}

function filterForm(sources, sourceId, filters, live) {
  const source = h('select', { id: 'f-source', 'data-testid': 'filter-source' },
    sources.map(s => h('option', { value: s.id, selected: s.id === sourceId ? 'selected' : null }, `${s.name} (${s.id})`)));
  const eventType = h('input', { id: 'f-eventType', value: filters.eventType, placeholder: 'any' });
  const status = h('select', { id: 'f-status' },
    [['', 'any'], ['accepted', 'accepted'], ['rejected', 'rejected']].map(([v, t]) => h('option', { value: v, selected: filters.status === v ? 'selected' : null }, t)));
  const sessionId = h('input', { id: 'f-sessionId', value: filters.sessionId, placeholder: 'any' });
  const profileId = h('input', { id: 'f-profileId', value: filters.profileId, placeholder: 'any' });
  const from = h('input', { id: 'f-from', type: 'datetime-local', step: 1, value: isoToLocalInput(filters.from) });
  const to = h('input', { id: 'f-to', type: 'datetime-local', step: 1, value: isoToLocalInput(filters.to) });
  const form = h('form', { class: 'filters card', id: 'filters' },
    h('label', {}, 'Data source', source),
    h('label', {}, 'Event type', eventType),
    h('label', {}, 'Status', status),
    h('label', {}, 'Session', sessionId),
    h('label', {}, 'Profile', profileId),
    h('label', { class: 'span-2' }, 'From (UTC)', from),
    h('label', { class: 'span-2' }, 'To (UTC)', to),
    h('div', { class: 'filter-actions' },
      h('button', { class: 'btn btn-primary', type: 'submit', 'data-testid': 'apply-filters' }, 'Apply'),
      h('a', { class: 'btn btn-ghost', href: hrefFor(sourceId, {}, live) }, 'Clear')),
    h('p', { class: 'range-note muted', 'data-testid': 'range-note' }, filters.from || filters.to
      ? 'Received in the time range above.'
      : filters.all
        ? ['All time. ', h('a', { href: hrefFor(sourceId, { ...filters, all: '' }, live) }, 'Only the last 24 hours')]
        : ['The last 24 hours (set From to look further back). ', h('a', { href: hrefFor(sourceId, { ...filters, all: '1' }, live), 'data-testid': 'all-time' }, 'All time')]));
  form.addEventListener('submit', ev => {
    ev.preventDefault();
    location.hash = hrefFor(source.value, {
      eventType: eventType.value.trim(), status: status.value, sessionId: sessionId.value.trim(),
      profileId: profileId.value.trim(), from: localInputToIso(from.value), to: localInputToIso(to.value),
      all: filters.all,
    }, live);
  });
  source.addEventListener('change', () => { location.hash = hrefFor(source.value, {}, live); });
  return form;
}

function renderLog(main, sources, sourceId, filters, live) {
  const source = sources.find(s => s.id === sourceId);
  const liveToggle = h('a', {
    class: `btn ${live ? 'btn-live' : ''}`, href: hrefFor(sourceId, filters, !live), 'data-testid': 'live-toggle',
  }, live ? h('span', { class: 'pulse' }) : null, live ? 'Live: on' : 'Live mode');
  main.append(
    pageHeader(`Event logs — ${source ? source.name : sourceId}`, 'Newest first by arrival. Times are UTC.', liveToggle),
    filterForm(sources, sourceId, filters, live));
  if (!source) {
    main.append(errorBanner({ status: 404, code: 'not_found', message: `no data source ${JSON.stringify(sourceId)}` }, 'Opening the event log'));
    return null;
  }
  const chart = h('section', { class: 'card chart-card', 'data-testid': 'chart' }, loading('Loading the chart…'));
  const table = h('tbody', { 'data-testid': 'event-rows' });
  const status = h('div');
  const more = h('div', { class: 'more' });
  const shown = new Set();
  let newest = null;
  main.append(chart, status,
    h('div', { class: 'card table-card' }, h('table', { class: 'table events', 'data-testid': 'events-table' },
      h('thead', {}, h('tr', {}, ['Received (UTC)', 'Status', 'Event type', 'Session', 'Profile', 'Event time (UTC)'].map(t => h('th', {}, t)))),
      table)),
    more);

  const base = `/v1/datasources/${seg(sourceId)}/events`;
  const { all, ...query } = filters;
  if (!query.from && !query.to && !all) query.from = new Date(Date.now() - DAY_MS).toISOString();

  const addRows = (events, { atTop = false } = {}) => {
    const rows = [];
    for (const e of events) {
      const key = `${e.eventId}|${e.receivedAt}`;
      if (shown.has(key)) continue;
      shown.add(key);
      rows.push(...eventRows(e, sourceId, filters));
      if (!newest || e.receivedAt > newest) newest = e.receivedAt;
    }
    if (atTop) table.prepend(...rows); else table.append(...rows);
    return rows.length;
  };

  const loadPage = async cursor => {
    clear(more, loading());
    let page;
    try {
      page = await api.get(`${base}${qs({ ...query, limit: PAGE, cursor })}`);
    } catch (e) {
      clear(more);
      clear(status, errorBanner(e, 'Reading the event log'));
      return;
    }
    clear(status);
    addRows(page.events);
    if (!shown.size) {
      clear(more, emptyState(
        FILTERS.some(k => filters[k]) ? 'No event matches these filters' : 'No event yet',
        FILTERS.some(k => filters[k])
          ? 'Widen the time range or clear a filter.'
          : 'Send one with the curl command of the data source page, or turn on live mode and wait for the first arrival. Events appear here once a worker has stored them (about a second).',
        h('a', { class: 'btn', href: `#/sources/${seg(sourceId)}` }, 'Data source page')));
      return;
    }
    clear(more, page.nextCursor
      ? h('button', { class: 'btn', 'data-testid': 'load-more', 'data-cursor': page.nextCursor, onclick: () => loadPage(page.nextCursor) }, 'Load more')
      : h('p', { class: 'muted end', 'data-testid': 'end-of-log' }, 'End of the log'));
  };

  const drawChart = async () => {
    const to = filters.to ? Date.parse(filters.to) : Date.now();
    let from = filters.from ? Date.parse(filters.from) : to - DAY_MS;
    const capped = to - from > DAY_MS;
    if (capped) from = to - DAY_MS;
    try {
      const counts = await api.get(`/v1/datasources/${seg(sourceId)}/event-counts${qs({
        from: new Date(from).toISOString(), to: new Date(to).toISOString(), eventType: filters.eventType,
      })}`);
      clear(chart, chartView(counts, from, to, capped));
    } catch (e) {
      clear(chart, errorBanner(e, 'Counting events per minute'));
    }
  };

  // Live: what arrived since the newest row shown (from is inclusive; rows
  // already shown are skipped), a few pages at most per round.
  let polling = false;
  const poll = async () => {
    // One poll at a time: a slow answer is not overtaken by the next round.
    if (filters.to || polling) return;
    polling = true;
    try {
      await pollOnce();
    } finally {
      polling = false;
    }
  };
  const pollOnce = async () => {
    let cursor;
    const since = newest ? newest : new Date(Date.now() - 60_000).toISOString();
    const fresh = [];
    for (let round = 0; round < 5; round++) {
      let page;
      try {
        page = await api.get(`${base}${qs({ ...query, from: since, limit: PAGE, cursor })}`);
      } catch (e) {
        clear(status, errorBanner(e, 'Live update'));
        return;
      }
      clear(status);
      fresh.push(...page.events);
      cursor = page.nextCursor;
      if (!cursor) break;
    }
    if (fresh.length) {
      const wasEmpty = !shown.size;
      const added = addRows(fresh, { atTop: true });
      if (added && wasEmpty) clear(more, h('p', { class: 'muted end' }, 'Live: new events appear at the top.'));
    }
    await drawChart();
  };

  loadPage(undefined);
  drawChart();
  if (!live) return null;
  const timer = setInterval(poll, LIVE_EVERY_MS);
  return () => clearInterval(timer);
}

function shortId(id) {
  return id && id.length > 28 ? `${id.slice(0, 12)}…${id.slice(-12)}` : id;
}

/** A row and its (hidden) detail row. */
function eventRows(e, sourceId, filters) {
  const detail = h('tr', { class: 'detail', hidden: true }, h('td', { colspan: 6 }, detailView(e, sourceId)));
  const row = h('tr', { class: 'event-row', 'data-event-id': e.eventId, 'data-status': e.status, tabindex: 0 },
    h('td', { class: 'nowrap', 'data-testid': 'received' }, utc(e.receivedAt)),
    h('td', {}, badge(e.status)),
    h('td', {}, h('code', {}, e.eventType || '—')),
    h('td', { class: 'nowrap' }, e.sessionId
      ? link(hrefFor(sourceId, { ...filters, sessionId: e.sessionId }, false), shortId(e.sessionId), { class: 'filter-link', 'data-testid': 'session-link', title: `Only session ${e.sessionId}` })
      : '—'),
    h('td', { class: 'nowrap' }, e.profileId
      ? link(`#/profiles/${seg(e.profileId)}?source=${seg(sourceId)}`, shortId(e.profileId), { 'data-testid': 'profile-link', title: `Profile ${e.profileId}` })
      : '—'),
    h('td', { class: 'nowrap', 'data-testid': 'event-time' }, utc(e.eventTime)));
  const toggle = ev => {
    if (ev.target.closest('a')) return;
    detail.hidden = !detail.hidden;
    row.classList.toggle('open', !detail.hidden);
  };
  row.addEventListener('click', toggle);
  row.addEventListener('keydown', ev => { if (ev.key === 'Enter') toggle(ev); });
  return [row, detail];
}

function detailView(e, sourceId) {
  const item = i => (i ? `${i.itemType} / ${i.itemId}` : '—');
  const facts = [
    ['Event id', h('code', {}, e.eventId)],
    ['Received', utc(e.receivedAt)],
    ['Event time', utc(e.eventTime)],
    ['Corrected time', utc(e.correctedTime)],
    ['Session', h('code', {}, e.sessionId || '—')],
    ['Profile', e.profileId ? link(`#/profiles/${seg(e.profileId)}?source=${seg(sourceId)}`, e.profileId) : '—'],
    ['Source', item(e.source)],
    ['Target', item(e.target)],
  ];
  if (e.schemaVersion) facts.push(['Schema version', `v${e.schemaVersion}`]);
  if (e.clientIp) facts.push(['Client IP', e.clientIp]);
  if (e.userAgent) facts.push(['User agent', e.userAgent]);
  if (e.origin) facts.push(['Origin', e.origin]);
  let raw = e.raw;
  try { raw = json(JSON.parse(e.raw)); } catch { /* shown as stored */ }
  return h('div', { class: 'event-detail', 'data-testid': 'event-detail' },
    h('dl', { class: 'facts compact' }, facts.map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)])),
    e.status === 'accepted'
      ? h('div', {}, h('h4', {}, 'Stored properties'), h('pre', { class: 'json', 'data-testid': 'properties' }, json(e.properties)))
      : h('div', {}, h('h4', {}, 'Why it was rejected'), reasonsTable(e.reasons),
        h('h4', {}, 'Raw event as sent'), h('pre', { class: 'json', 'data-testid': 'raw' }, raw)));
}

/** Accepted (stacked under rejected) per minute, inline SVG. */
function chartView(counts, from, to, capped) {
  const minute = 60_000;
  const first = Math.floor(from / minute);
  const last = Math.max(first, Math.ceil(to / minute) - 1);
  const n = last - first + 1;
  const byMinute = new Map(counts.buckets.map(b => [Math.floor(Date.parse(b.minute) / minute), b]));
  const max = Math.max(1, ...counts.buckets.map(b => b.accepted + b.rejected));
  const W = 900;
  const H = 120;
  const left = 40;
  const bottom = 20;
  const plotW = W - left - 8;
  const plotH = H - bottom - 8;
  const barW = plotW / n;
  const y = v => 8 + plotH - (v / max) * plotH;
  const bars = [];
  for (let i = 0; i < n; i++) {
    const b = byMinute.get(first + i);
    if (!b) continue;
    const x = left + i * barW;
    const w = Math.max(1, barW - (barW > 3 ? 1 : 0));
    const label = `${utc(new Date((first + i) * minute).toISOString(), { ms: false })}: ${b.accepted} accepted, ${b.rejected} rejected`;
    bars.push(svg('g', {}, svg('title', {}, label),
      svg('rect', { x, y: y(b.accepted), width: w, height: Math.max(0, 8 + plotH - y(b.accepted)), class: 'bar-accepted' }),
      b.rejected ? svg('rect', { x, y: y(b.accepted + b.rejected), width: w, height: y(b.accepted) - y(b.accepted + b.rejected), class: 'bar-rejected' }) : null));
  }
  // Five labels along the axis; a range over 12 hours also names the day.
  const long = (last + 1 - first) * minute > 12 * 3600 * 1000;
  const tick = t => utc(new Date(t).toISOString(), { ms: false }).slice(long ? 5 : 11, 16);
  const axis = [
    svg('line', { x1: left, x2: W - 8, y1: 8 + plotH, y2: 8 + plotH, class: 'axis' }),
    svg('text', { x: left - 6, y: 12, class: 'axis-label', 'text-anchor': 'end' }, String(max)),
    svg('text', { x: left - 6, y: 8 + plotH, class: 'axis-label', 'text-anchor': 'end' }, '0'),
  ];
  for (let k = 0; k <= 4; k++) {
    const t = (first + ((last + 1 - first) * k) / 4) * minute;
    const anchor = k === 0 ? 'start' : k === 4 ? 'end' : 'middle';
    axis.push(svg('text', { x: left + (plotW * k) / 4, y: H - 4, class: 'axis-label', 'text-anchor': anchor }, tick(t)));
  }
  return h('div', {},
    h('div', { class: 'chart-head' },
      h('h2', {}, 'Per minute'),
      h('div', { class: 'legend' },
        h('span', { class: 'swatch swatch-accepted' }), `${counts.accepted.toLocaleString('en-US')} accepted`,
        h('span', { class: 'swatch swatch-rejected' }), `${counts.rejected.toLocaleString('en-US')} rejected`,
        h('span', { class: 'muted' }, ` · ${utc(new Date(from).toISOString(), { ms: false })} – ${utc(new Date(to).toISOString(), { ms: false })}${capped ? ' (the last 24 hours of the range)' : ''}`))),
    svg('svg', { viewBox: `0 0 ${W} ${H}`, class: 'chart', role: 'img', 'aria-label': 'accepted and rejected events per minute' }, axis, bars));
}
