// The console's shell: sign-in, the navigation and a hash router. Each page
// module exports render(main, route) and may return a function that stops
// whatever it started (the event log's live mode).
//
// Routes (the hash keeps every view, filters included, in the URL):
//   #/sources               data sources
//   #/sources/<id>          one data source: keys, enable/disable
//   #/schemas               event schemas
//   #/schemas/new           a new event type
//   #/schemas/<type>        versions side by side, validate an event
//   #/schemas/<type>/edit   a new version
//   #/events/<source>?…     the event log of a data source
//   #/profiles/<id>?source= a profile

import { resumeSession, signIn, signOut } from './api.js';
import { h, clear, errorBanner } from './ui.js';
import * as sources from './sources.js';
import * as schemas from './schemas.js';
import * as events from './events.js';
import * as profile from './profile.js';

const app = document.getElementById('app');
let stopPage = null;

function parseRoute() {
  const hash = location.hash.replace(/^#/, '') || '/sources';
  const [path, query = ''] = hash.split('?');
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  return { parts, query: new URLSearchParams(query) };
}

function pageFor(route) {
  switch (route.parts[0]) {
    case 'sources': return { module: sources, nav: 'sources' };
    case 'schemas': return { module: schemas, nav: 'schemas' };
    case 'events': return { module: events, nav: 'events' };
    case 'profiles': return { module: profile, nav: 'events' };
    default: return null;
  }
}

function navLink(href, label, key, active) {
  return h('a', { href, class: active === key ? 'active' : '', 'data-nav': key }, label);
}

function shell(active) {
  const lastSource = sessionStorage.getItem('powehi:lastSource');
  const main = h('main', { id: 'main' });
  clear(app,
    h('nav', { class: 'sidebar' },
      h('div', { class: 'brand' }, h('span', { class: 'logo' }, '◉'), 'Powehi'),
      h('div', { class: 'nav-links' },
        navLink('#/sources', 'Data sources', 'sources', active),
        navLink('#/schemas', 'Event schemas', 'schemas', active),
        navLink(lastSource ? `#/events/${encodeURIComponent(lastSource)}` : '#/events', 'Event logs', 'events', active)),
      h('div', { class: 'nav-footer' },
        h('button', { class: 'btn btn-ghost', id: 'sign-out', 'data-testid': 'sign-out', onclick: doSignOut }, 'Sign out'))),
    main);
  app.className = 'layout';
  return main;
}

async function doSignOut() {
  try {
    await signOut();
  } catch (e) {
    // Signed out here anyway; a refused sign-out is worth seeing.
    console.warn('sign-out', e);
  }
  showSignIn();
}

async function render() {
  if (stopPage) { stopPage(); stopPage = null; }
  const route = parseRoute();
  const page = pageFor(route);
  if (!page) { location.hash = '#/sources'; return; }
  const main = shell(page.nav);
  try {
    stopPage = (await page.module.render(main, route)) || null;
  } catch (e) {
    main.append(errorBanner(e, 'Loading this page'));
  }
}

function showSignIn(message) {
  if (stopPage) { stopPage(); stopPage = null; }
  app.className = 'signin-page';
  const token = h('input', { type: 'password', id: 'admin-token', name: 'token', autocomplete: 'current-password', required: true, placeholder: 'POWEHI_ADMIN_TOKEN' });
  const status = h('div', { class: 'signin-status' }, message ? h('div', { class: 'notice' }, message) : null);
  const form = h('form', { class: 'card signin', id: 'signin-form' },
    h('div', { class: 'brand brand-large' }, h('span', { class: 'logo' }, '◉'), 'Powehi'),
    h('h1', {}, 'Sign in to the console'),
    h('p', { class: 'muted' }, 'Use the gateway\'s admin token (POWEHI_ADMIN_TOKEN). It is exchanged for a session cookie and not kept by the page.'),
    h('label', { for: 'admin-token' }, 'Admin token'), token,
    h('button', { class: 'btn btn-primary', type: 'submit', id: 'signin-submit' }, 'Sign in'),
    status);
  form.addEventListener('submit', async ev => {
    ev.preventDefault();
    try {
      await signIn(token.value);
      token.value = '';
      // Setting the hash renders through hashchange; render once either way.
      if (!location.hash) location.hash = '#/sources';
      else await render();
    } catch (e) {
      clear(status, errorBanner(e, 'Sign-in'));
    }
  });
  clear(app, form);
  token.focus();
}

window.addEventListener('hashchange', () => render());
window.addEventListener('powehi:signed-out', () => showSignIn('Your session ended: sign in again.'));

(async () => {
  try {
    if (await resumeSession()) await render();
    else showSignIn();
  } catch (e) {
    clear(app, errorBanner(e, 'Reaching the gateway'));
  }
})();
