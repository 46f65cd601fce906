// A profile: its properties, the sessions merged into it, first/last seen,
// and its recent events in one data source (the event log's profileId
// filter, which includes merged sessions). Reached from any event row.

import { api, seg, qs } from './api.js';
import { h, clear, badge, pageHeader, emptyState, errorBanner, loading, utc, json, facts, link } from './ui.js';

const RECENT = 20;

/** `anon:<scope>:<sessionId>` → {scope, sessionId} */
function anonymous(id) {
  const m = /^anon:([^:]*):(.*)$/.exec(id);
  return m ? { scope: m[1], sessionId: m[2] } : null;
}

export async function render(main, route) {
  const id = route.parts[1];
  const sourceId = route.query.get('source') || sessionStorage.getItem('powehi:lastSource') || '';
  const slot = h('div', {}, loading());
  main.append(
    h('p', { class: 'crumbs' }, sourceId ? link(`#/events/${seg(sourceId)}`, 'Event logs') : 'Profiles', ' / profile'),
    pageHeader('Profile', null),
    slot);
  let profile;
  try {
    profile = await api.get(`/v1/profiles/${seg(id)}`);
  } catch (e) {
    if (e.status === 404) {
      clear(slot, emptyState(`No event belongs to “${id}” yet`,
        'A profile appears once a worker has stored an event of it (its profileId, or a session that was identified as it).'));
    } else {
      clear(slot, errorBanner(e, `Loading profile ${id}`));
    }
    return;
  }
  const merged = profile.mergedIds.map(m => {
    const a = anonymous(m);
    return h('li', {}, a
      ? [h('code', {}, a.sessionId), h('span', { class: 'muted' }, ` in ${a.scope} · `),
        link(`#/events/${seg(a.scope)}${qs({ sessionId: a.sessionId })}`, 'session events')]
      : h('code', {}, m));
  });
  const props = Object.entries(profile.properties);
  const recent = h('div', {}, loading());
  clear(slot,
    h('section', { class: 'card' },
      h('div', { class: 'card-header' }, h('h2', { 'data-testid': 'profile-id' }, profile.profileId),
        profile.anonymous ? badge('anonymous', 'muted') : badge('identified', 'accepted')),
      facts([
        ['First seen', utc(profile.firstSeen)],
        ['Last seen', utc(profile.lastSeen)],
        ['Events', profile.eventCount.toLocaleString('en-US')],
        ['Sessions', profile.sessionCount.toLocaleString('en-US')],
      ])),
    h('div', { class: 'grid-2' },
      h('section', { class: 'card' }, h('h2', {}, 'Properties'),
        props.length
          ? h('table', { class: 'table', 'data-testid': 'profile-properties' },
            h('thead', {}, h('tr', {}, h('th', {}, 'Name'), h('th', {}, 'Value'))),
            h('tbody', {}, props.map(([k, v]) => h('tr', {}, h('td', {}, h('code', {}, k)), h('td', {}, h('code', {}, json(v)))))))
          : h('p', { class: 'muted' }, 'No property yet: mark event-schema properties as profile properties to fill them.')),
      h('section', { class: 'card' }, h('h2', {}, 'Merged sessions'),
        merged.length
          ? h('ul', { class: 'plain', 'data-testid': 'merged-sessions' }, merged)
          : h('p', { class: 'muted' }, profile.anonymous
            ? 'An anonymous profile is one session; it merges into a profile when an event of the session names a profileId.'
            : 'No anonymous session merged into this profile.'))),
    h('section', { class: 'card' },
      h('div', { class: 'card-header' }, h('h2', {}, 'Recent events'),
        sourceId ? link(`#/events/${seg(sourceId)}${qs({ profileId: profile.profileId })}`, 'All in Event logs →') : null),
      recent));
  if (!sourceId) {
    clear(recent, h('p', { class: 'muted' }, 'Open the profile from an event row to see its events in that data source.'));
    return;
  }
  try {
    const page = await api.get(`/v1/datasources/${seg(sourceId)}/events${qs({ profileId: profile.profileId, limit: RECENT })}`);
    clear(recent, page.events.length
      ? h('table', { class: 'table', 'data-testid': 'profile-events' },
        h('thead', {}, h('tr', {}, ['Received (UTC)', 'Status', 'Event type', 'Session'].map(t => h('th', {}, t)))),
        h('tbody', {}, page.events.map(e => h('tr', {},
          h('td', { class: 'nowrap' }, utc(e.receivedAt)), h('td', {}, badge(e.status)),
          h('td', {}, h('code', {}, e.eventType)), h('td', {}, h('code', {}, e.sessionId))))))
      : h('p', { class: 'muted' }, `No event of this profile in ${sourceId}.`));
  } catch (e) {
    clear(recent, errorBanner(e, 'Reading recent events'));
  }
}
