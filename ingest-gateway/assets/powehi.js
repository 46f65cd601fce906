/* Powehi tracker (README, "Sending from web pages"): window.powehi sends a
 * page's events to a Powehi gateway. ES2017, no dependencies, not minified.
 * An event's itemId is set once: the worker drops repeats of retries and beacons
 * within its dedup window (POWEHI_DEDUP_WINDOW_SECS). */
(() => {
  'use strict';
  const w = window, stub = w.powehi;
  if (stub && stub.version) return; // loaded twice
  // The default gateway: where this script came from.
  const src = document.currentScript && document.currentScript.src;
  const handlers = [], early = [], enc = encodeURIComponent;
  let cfg, url, profileId, timer = 0, retryAt = 0, attempts = 0, queue = [], inflight = [], chain = Promise.resolve();

  const key = name => `powehi:${cfg.clientId}:${name}`;
  // Storage may be missing, full or forbidden: then memory only.
  const load = (area, k) => { try { return JSON.parse(w[area].getItem(k)); } catch (e) { return null; } };
  const save = (area, k, v) => {
    try { v == null ? w[area].removeItem(k) : w[area].setItem(k, JSON.stringify(v)); return 1; } catch (e) { return 0; }
  };
  const size = text => new Blob([text]).size;
  const now = () => new Date().toISOString();

  const uuid = () => {
    try { return crypto.randomUUID(); } catch (e) { /* insecure context */ }
    const b = crypto.getRandomValues(new Uint8Array(16));
    b[6] = b[6] & 15 | 64; b[8] = b[8] & 63 | 128; // version 4, RFC 4122 variant
    return Array.from(b, (x, i) => (x + 256).toString(16).slice(1) + ([3, 5, 7, 9].includes(i) ? '-' : '')).join('');
  };

  // One per tab (sessionStorage, else a cookie), new after sessionTimeout ms idle.
  function session() {
    const k = key('session'), c = enc(k), t = Date.now();
    let s = load('sessionStorage', k);
    try { s = s || JSON.parse(decodeURIComponent(document.cookie.split(c + '=')[1].split(';')[0])); } catch (e) { /* none */ }
    if (!s || !(t - s.t < cfg.sessionTimeout)) s = { id: uuid() };
    s.t = t;
    if (!save('sessionStorage', k, s)) document.cookie = `${c}=${enc(JSON.stringify(s))};path=/;max-age=${cfg.sessionTimeout / 1e3 | 0};SameSite=Lax`;
    return s.id;
  }

  // Tabs share localStorage: re-read at each change, so none erases another's events.
  function persist(add, done) {
    if (!cfg.persist) return;
    const gone = new Set(done.map(e => e.itemId));
    const list = (load('localStorage', key('queue')) || []).filter(e => !gone.has(e.itemId));
    save('localStorage', key('queue'), list.concat(add).slice(-cfg.maxQueue));
  }

  function report(type, status, err, events) {
    const r = { type, status, code: err.code, message: err.message, events };
    if (!handlers.length) console.warn('powehi:', r);
    for (const h of handlers) try { h(r); } catch (e) { /* must not stop sending */ }
  }

  function schedule(ms) {
    if (!timer) timer = setTimeout(() => { timer = 0; flush(); }, ms);
  }

  function track(eventType, properties, refs) {
    refs = refs || {};
    let ev = { eventType, scope: cfg.clientId, sessionId: session(), timeStamp: now(), itemId: uuid(), properties: properties || {} };
    if (profileId) ev.profileId = profileId;
    if (refs.source) ev.source = refs.source;
    if (refs.target) ev.target = refs.target;
    // A copy (the caller may reuse its objects), and one that surely serializes:
    // a BigInt or a cycle would make every later send throw.
    try { ev = JSON.parse(JSON.stringify(ev)); } catch (e) {
      return void report('invalid', 0, { code: 'invalid_event', message: String(e) }, [ev]);
    }
    queue.push(ev);
    // Full (a long outage): the oldest go.
    const dropped = queue.splice(0, Math.max(0, queue.length - cfg.maxQueue));
    persist([ev], dropped);
    if (dropped.length) report('overflow', 0, { code: 'queue_full', message: 'oldest events dropped' }, dropped);
    queue.length >= cfg.batchSize ? flush(1) : schedule(cfg.flushInterval);
    return ev.itemId;
  }

  // One request at a time (order kept), never before a pending retry; resolves
  // to the number of events left. `full`: full batches only, the rest waits.
  function flush(full) {
    return chain = chain.then(async () => {
      while (queue.length >= (full ? cfg.batchSize : 1) && Date.now() >= retryAt && await send(queue.splice(0, cfg.batchSize)));
      // An older timer may be early now.
      clearTimeout(timer); timer = 0;
      if (queue.length) schedule(retryAt > Date.now() ? retryAt - Date.now() : cfg.flushInterval);
      return queue.length;
    }).catch(e => {
      // Never left rejected: every later flush would be skipped.
      report('error', 0, e, []);
      return queue.length;
    });
  }

  // True once the batch is settled, false when queued again for a retry.
  async function send(batch) {
    const sendAt = now();
    // Sent by this page again: no longer left to the next one (see beacon).
    if (batch.some(e => e.beacon)) {
      for (const e of batch) delete e.beacon;
      persist(batch, batch);
    }
    for (const e of batch) e.sendAt = sendAt;
    const body = JSON.stringify({ events: batch }), keepalive = size(body) < 6e4;
    let res, answer;
    // keepalive: may outlive the page (see beacon), within a 64 KB budget.
    inflight = keepalive ? batch : [];
    try {
      res = await fetch(url, {
        method: 'POST', body, credentials: 'omit', keepalive,
        signal: AbortSignal.timeout && AbortSignal.timeout(3e4), // a hung gateway must not hold the queue
        headers: { 'Content-Type': 'application/json', 'X-Client-ID': cfg.clientId, 'X-Client-Access-Token': cfg.writeKey },
      });
      answer = await res.json().catch(() => ({}));
    } catch (e) {
      // Offline, down, timed out or refused by CORS: the browser does not say which.
      res = { status: 0, headers: new Headers() };
      answer = { error: { code: 'network_error', message: String(e) } };
    }
    inflight = [];
    const status = res.status, err = answer.error || {};
    const settle = () => { attempts = 0; persist([], batch); return 1; };
    // Accepted, or refused event by event: a retry would be refused again.
    if (status > 199 && status < 300 || status == 400 && answer.errors) {
      for (const e of answer.errors || []) report('refused', status, e, [batch[e.index]]);
      return settle();
    }
    // Other 4xx (keys, origin, size…) too.
    if (status && status < 500 && status != 408 && status != 429) {
      report('dropped', status, err, batch);
      return settle();
    }
    if (++attempts > cfg.maxRetries) {
      // Given up by this page only: still stored for the next one.
      attempts = 0;
      report('failed', status, err, batch);
      return 1;
    }
    // Exponential backoff plus up to 25% so that clients refused together come
    // back apart, at most maxRetryDelay, never below Retry-After.
    const after = res.headers.get('Retry-After') * 1e3 || 0;
    retryAt = Date.now() + Math.max(after, Math.min(cfg.maxRetryDelay, cfg.retryDelay * 2 ** (attempts - 1) * (1 + Math.random() / 4)));
    queue.unshift(...batch);
    return 0;
  }

  // Hidden or left, a page's fetch may not finish; a beacon does (keys in the
  // URL: no headers; text/plain: no preflight). Its events stay stored, marked:
  // if the page goes, the next page resends them within resendWindow (below the
  // worker's dedup window), then deems them delivered. So for a keepalive fetch
  // left behind. A page that stays keeps them too and sends them again by fetch.
  function mark(events) {
    // Offline, it surely failed: left unmarked.
    if (navigator.onLine !== false) for (const e of events) e.beacon = Date.now();
    persist(events, events);
  }

  function beacon() {
    // Not while the gateway asked to wait: the events stay stored, unmarked.
    if (!navigator.sendBeacon || retryAt > Date.now()) return;
    const sendAt = now(), chunks = [[]];
    let bytes = 0;
    for (const e of queue.filter(e => !e.beacon)) {
      const n = size(JSON.stringify(e)) + 1;
      if ((bytes += n) > 6e4 && chunks[0].length) { chunks.unshift([]); bytes = n; }
      chunks[0].push(e);
      e.sendAt = sendAt;
    }
    for (const c of chunks.reverse()) {
      if (!c.length || !navigator.sendBeacon(`${url}&writeKey=${enc(cfg.writeKey)}`, JSON.stringify({ events: c }))) break;
      mark(c);
    }
  }

  function init(options) {
    if (cfg) return;
    const c = Object.assign({
      host: src, path: '/powehi/smile', batchSize: 20, flushInterval: 1e3, maxQueue: 500,
      sessionTimeout: 18e5, pageEventType: 'page', maxRetries: 10, retryDelay: 1e3, maxRetryDelay: 3e4,
      resendWindow: 3e5, persist: true,
    }, options);
    // No host and no script URL (bundled, or a module): no guess at the gateway.
    if (!c.clientId || !c.writeKey || !c.host) throw new Error('powehi.init: clientId, writeKey and host are required');
    cfg = c;
    // clientId in the URL too: a preflight, without headers, is judged by its source.
    url = `${new URL(cfg.path, cfg.host).href}?clientId=${enc(cfg.clientId)}`;
    if (cfg.onError) handlers.push(cfg.onError);
    profileId = load('localStorage', key('profile'));
    // What earlier pages left unacknowledged (see beacon).
    const stored = cfg.persist && load('localStorage', key('queue')) || [];
    queue = stored.filter(e => !(e.beacon < Date.now() - cfg.resendWindow));
    // Taken over: this page answers for them now, so unmarked in storage too.
    for (const e of queue) delete e.beacon;
    if (stored.length) save('localStorage', key('queue'), queue);
    // Hidden is not gone: what a beacon took stays queued, sent again by fetch.
    document.addEventListener('visibilitychange', () => document.visibilityState == 'hidden' ? beacon() : flush());
    w.addEventListener('pagehide', () => { mark(inflight); beacon(); });
    w.addEventListener('online', () => { retryAt = 0; flush(); });
    for (const [f, args] of early.splice(0)) f(...args);
    if (queue.length) flush();
  }

  // Calls made before init wait for it.
  const later = f => function () { return cfg ? f.apply(null, arguments) : void early.push([f, arguments]); };
  const api = {
    version: 1,
    init,
    track: later(track),
    page: later((properties, refs) => track(cfg.pageEventType, Object.assign({
      url: location.href, path: location.pathname, title: document.title, referrer: document.referrer,
    }, properties), refs)),
    // Later events carry profileId, here and on the next pages; null forgets it.
    identify: later(id => { save('localStorage', key('profile'), profileId = id == null ? null : String(id)); }),
    // Forgets the profile and starts a new session (a sign-out).
    reset: later(() => {
      api.identify(null);
      save('sessionStorage', key('session'), null);
      document.cookie = `${enc(key('session'))}=;path=/;max-age=0`;
    }),
    flush: () => cfg ? flush() : Promise.resolve(0),
    onError: f => { handlers.push(f); },
  };
  w.powehi = api;
  // Calls the snippet's stub queued before this script loaded.
  for (const [name, args] of (stub && stub.q) || []) api[name](...args);
})();
