// Drives Debian's chromium for tests/e2e/test_browser.py: one headless browser with a
// fresh profile, commanded by JSON lines on stdin, one answer line per command on stdout.
//
//   {"id": 1, "op": "open", "url": "…"}            -> {"id": 1, "ok": true, "result": <page id>}
//   {"id": 2, "op": "eval", "page": 1, "expr": "…"} -> the expression's value (promises awaited)
//   ops: open, goto, reload, eval, close (runBeforeUnload), screenshot (path), log, quit,
//        click (selector), fill (selector, value), grantClipboard (origin)
//   click and fill act as a user would (Playwright waits until the element is visible
//   and enabled, then moves the mouse or types).
//
// "log" answers everything seen since the start, in order: console messages and page
// errors, and every request the pages made with its answer or failure, each stamped with
// Date.now() in ms. Requests a document makes while it goes away (a beacon at pagehide)
// are not seen here, nor by the page's DevTools session: browser_support.Tap sees them.
//
// Environment: POWEHI_BROWSER_MODULES, the directory deploy/local/browser-env.sh
// installed playwright-core into (ESM ignores NODE_PATH, so it is imported from there);
// POWEHI_CHROMIUM (default /usr/bin/chromium).
import { createRequire } from 'node:module';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

const modules = process.env.POWEHI_BROWSER_MODULES;
if (!modules) {
  console.error('POWEHI_BROWSER_MODULES is not set: run deploy/local/browser-env.sh and pass its output');
  process.exit(2);
}
const { chromium } = createRequire(join(modules, 'package.json'))('playwright-core');

const profile = mkdtempSync(join(tmpdir(), 'powehi-chromium-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.POWEHI_CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--no-first-run',
  ],
});

const pages = new Map();
const log = [];
let nextPage = 1;
const pageId = page => [...pages].find(([, p]) => p === page)?.[0] ?? null;

function requestPage(request) {
  try {
    return pageId(request.frame().page());
  } catch {
    return null; // a beacon sent while its page closes has no frame any more
  }
}

// Requests numbered in the order they were made: `rid` ties an answer to its request.
const requestIds = new WeakMap();
let nextRequest = 1;
function rid(request) {
  if (!requestIds.has(request)) requestIds.set(request, nextRequest++);
  return requestIds.get(request);
}

function record(kind, request, extra) {
  const entry = {
    kind, t: Date.now(), rid: rid(request), page: requestPage(request), url: request.url(), method: request.method(),
    resourceType: request.resourceType(), ...extra,
  };
  log.push(entry);
  return entry;
}

context.on('request', r => record('request', r, { headers: r.headers(), body: r.postData() }));
context.on('requestfailed', r => record('failed', r, { error: r.failure()?.errorText }));
// Logged when the answer's head arrives (its place in the order), completed once read.
context.on('response', async resp => {
  const entry = record('response', resp.request(), { status: resp.status(), headers: resp.headers(), body: null });
  try {
    entry.headers = await resp.allHeaders();
    entry.body = await resp.text();
  } catch {
    // the page is gone, or the answer has no body to read (a beacon's)
  }
});

function watch(page) {
  const id = nextPage++;
  pages.set(id, page);
  page.on('console', m => log.push({ kind: 'console', t: Date.now(), page: id, type: m.type(), text: m.text() }));
  page.on('pageerror', e => log.push({ kind: 'pageerror', t: Date.now(), page: id, text: String(e) }));
  return id;
}

function page(id) {
  const p = pages.get(id);
  if (!p) throw new Error(`no page ${id}`);
  return p;
}

const ops = {
  async open({ url }) {
    const p = await context.newPage();
    const id = watch(p);
    await p.goto(url);
    return id;
  },
  async goto({ page: id, url }) {
    await page(id).goto(url);
    return null;
  },
  async reload({ page: id }) {
    await page(id).reload();
    return null;
  },
  async eval({ page: id, expr }) {
    return await page(id).evaluate(expr);
  },
  async close({ page: id, runBeforeUnload }) {
    await page(id).close({ runBeforeUnload: !!runBeforeUnload });
    return null;
  },
  async screenshot({ page: id, path }) {
    await page(id).screenshot({ path, fullPage: true });
    return path;
  },
  async log() {
    return log;
  },
  async click({ page: id, selector }) {
    await page(id).click(selector, { timeout: 15000 });
    return null;
  },
  async fill({ page: id, selector, value }) {
    await page(id).fill(selector, value, { timeout: 15000 });
    return null;
  },
  async grantClipboard({ origin }) {
    await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin });
    return null;
  },
};

async function quit(code) {
  await context.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
  process.exit(code);
}

// Commands run one at a time, in order.
const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  if (!line.trim()) continue;
  const command = JSON.parse(line);
  if (command.op === 'quit') break;
  let answer;
  try {
    const op = ops[command.op];
    if (!op) throw new Error(`unknown op ${command.op}`);
    answer = { id: command.id, ok: true, result: (await op(command)) ?? null };
  } catch (e) {
    answer = { id: command.id, ok: false, error: String(e && e.stack || e) };
  }
  process.stdout.write(JSON.stringify(answer) + '\n');
}
await quit(0);
