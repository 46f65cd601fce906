"""Helpers of the browser tests (test_browser.py): Debian's chromium driven through
tests/e2e/browser/driver.mjs (playwright-core, installed outside the checkout by
deploy/local/browser-env.sh), and a test site on another origin than the gateway whose pages
load the tracker from the gateway.

- `browser_modules()`: where browser-env.sh installed playwright-core; fails (never skips)
  naming what is missing;
- `Browser` / `Page`: one headless chromium with a fresh profile, commanded line by line;
  `Browser.log()` is what the pages did: console messages, requests and their answers;
- `TestSite`: pages at http://127.0.0.1:<port>/t.html that init the tracker with the
  config in their URL, through the snippet's stub queue (as a site would paste it);
- `Tap`: a recording proxy in front of the gateway, for what the browser's own log misses
  (a beacon sent by a page going away, CORS preflights).
"""

from __future__ import annotations

import hashlib
import http.client
import html
import json
import os
import queue
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

import pytest

from e2e_support import REPO

BROWSER_DIR = REPO / "tests" / "e2e" / "browser"
DRIVER = BROWSER_DIR / "driver.mjs"
CHROMIUM = os.environ.get("POWEHI_CHROMIUM", "/usr/bin/chromium")
CACHE = Path(os.environ.get("POWEHI_CACHE", "/var/cache/powehi"))

CALL_TIMEOUT_S = 30.0


def browser_modules() -> Path:
    """The directory deploy/local/browser-env.sh installed playwright-core into (keyed by the
    lock file's hash, as that script computes it). Fails naming what is missing."""
    digest = hashlib.sha256((BROWSER_DIR / "package-lock.json").read_bytes()).hexdigest()[:16]
    modules = CACHE / "node" / f"browser-{digest}"
    problems = []
    if shutil.which("node") is None:
        problems.append("node is not installed (deploy/local/tools.sh installs it: apt-get install nodejs npm)")
    if not os.access(CHROMIUM, os.X_OK):
        problems.append(f"{CHROMIUM} is missing (deploy/local/tools.sh installs it: apt-get install chromium)")
    if not (modules / ".installed").exists():
        problems.append(f"playwright-core is not installed in {modules}: run deploy/local/browser-env.sh (make browser-env)")
    if problems:
        pytest.fail("the browser tests cannot run: " + "; ".join(problems))
    return modules


class DriverError(AssertionError):
    pass


class Browser:
    """A headless chromium (fresh profile, deleted at close) behind driver.mjs."""

    def __init__(self, modules: Path, log_path: Path):
        self.log_path = log_path
        self._stderr = open(log_path, "wb")
        self.popen = subprocess.Popen(
            ["node", str(DRIVER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            env={**os.environ, "POWEHI_BROWSER_MODULES": str(modules), "POWEHI_CHROMIUM": CHROMIUM},
        )
        self._answers: queue.Queue = queue.Queue()
        self._next_id = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.popen.stdout:
            self._answers.put(json.loads(line))
        self._answers.put(None)  # the driver exited

    def call(self, op: str, timeout: float = CALL_TIMEOUT_S, **args):
        self._next_id += 1
        try:
            self.popen.stdin.write(json.dumps({"id": self._next_id, "op": op, **args}) + "\n")
            self.popen.stdin.flush()
        except BrokenPipeError:
            raise DriverError(f"the browser driver exited; its log:\n{self.stderr()}") from None
        try:
            answer = self._answers.get(timeout=timeout)
        except queue.Empty:
            raise DriverError(f"the browser driver did not answer {op} {args} within {timeout:.0f}s") from None
        if answer is None:
            raise DriverError(f"the browser driver exited during {op}; its log:\n{self.stderr()}")
        assert answer["id"] == self._next_id, f"answer out of order: {answer}"
        if not answer["ok"]:
            raise DriverError(f"{op} {args} failed in the browser: {answer['error']}")
        return answer["result"]

    def open(self, url: str) -> Page:
        return Page(self, self.call("open", url=url))

    def log(self) -> list[dict]:
        return self.call("log")

    def console(self) -> list[dict]:
        return [e for e in self.log() if e["kind"] in ("console", "pageerror")]

    def stderr(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError as exc:
            return f"(no log: {exc})"

    def close(self) -> None:
        if self.popen.poll() is None:
            try:
                self.popen.stdin.write(json.dumps({"op": "quit"}) + "\n")  # no answer: it exits
                self.popen.stdin.close()
            except OSError:
                pass
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=10)
        self._stderr.close()


class Page:
    def __init__(self, browser: Browser, page_id: int):
        self.browser = browser
        self.id = page_id

    def eval(self, expr: str, timeout: float = CALL_TIMEOUT_S):
        """The value of a JavaScript expression in the page (a promise is awaited)."""
        return self.browser.call("eval", page=self.id, expr=expr, timeout=timeout)

    def reload(self) -> None:
        self.browser.call("reload", page=self.id)

    def goto(self, url: str) -> None:
        self.browser.call("goto", page=self.id, url=url)

    def close(self, run_before_unload: bool = True) -> None:
        self.browser.call("close", page=self.id, runBeforeUnload=run_before_unload)

    def screenshot(self, path: Path) -> None:
        self.browser.call("screenshot", page=self.id, path=str(path))

    def click(self, selector: str) -> None:
        """A user's click on the element (waits until it is visible and enabled)."""
        self.browser.call("click", page=self.id, selector=selector)

    def fill(self, selector: str, value: str) -> None:
        """Types `value` into the input, replacing what it held."""
        self.browser.call("fill", page=self.id, selector=selector, value=value)


# --------------------------------------------------------------------------- the test site

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Powehi test page</title>
<script>
  // The snippet of the README: calls made before powehi.js loaded are queued.
  window.powehi = window.powehi || {{ q: [] }};
  ['init', 'track', 'page', 'identify', 'reset', 'flush', 'onError'].forEach(function (m) {{
    powehi[m] = powehi[m] || function () {{ powehi.q.push([m, arguments]); }};
  }});
  window.reports = [];
  var cfg = JSON.parse(new URLSearchParams(location.search).get('cfg'));
  cfg.onError = function (r) {{
    reports.push(r);
    document.getElementById('reports').textContent = reports.map(function (r) {{
      return r.type + ' ' + r.status + ' ' + (r.code || '') + ': ' + r.events.map(function (e) {{ return e.itemId; }}).join(', ');
    }}).join('\\n');
  }};
  powehi.init(cfg);
</script>
<script async src="{script}" onload="document.getElementById('state').textContent = 'powehi.js v' + powehi.version + ' loaded from {script}'"></script>
</head>
<body style="font-family: sans-serif">
<h1>Powehi tracker test page</h1>
<p id="state">powehi.js not loaded yet</p>
<p>data source <b>{client_id}</b>, gateway {gateway}</p>
<h2>onError reports</h2>
<pre id="reports">(none)</pre>
</body></html>
"""


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        url = urlsplit(self.path)
        if url.path != "/t.html":
            self.send_response(404 if url.path != "/favicon.ico" else 204)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        query = parse_qs(url.query)
        gateway = query["gw"][0]
        cfg = json.loads(query["cfg"][0])
        body = PAGE.format(
            script=html.escape(f"{gateway}/powehi/powehi.js"),
            gateway=html.escape(gateway),
            client_id=html.escape(cfg.get("clientId", "")),
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


class TestSite:
    """A web site on its own origin, http://127.0.0.1:<port>, whose page /t.html loads
    {gateway}/powehi/powehi.js and inits it with the config of its URL."""

    __test__ = False  # not a pytest test class

    def __init__(self):
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, gateway_url: str, **cfg) -> str:
        return f"{self.origin}/t.html?gw={quote(gateway_url)}&cfg={quote(json.dumps(cfg))}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _TapHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as browsers use it
    tap: Tap

    def _forward(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        upstream = http.client.HTTPConnection(self.tap.upstream, timeout=30)
        try:
            upstream.request(self.command, self.path, body=body or None, headers=headers)
            answer = upstream.getresponse()
            answer_body = answer.read()
        except OSError:
            self.close_connection = True  # as the gateway's absence looks: no answer
            return
        finally:
            upstream.close()
        self.tap.seen.append({
            "method": self.command,
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body": body.decode(errors="replace"),
            "status": answer.status,
            "answer_headers": {k.lower(): v for k, v in answer.getheaders()},
        })
        self.send_response(answer.status)
        for name, value in answer.getheaders():
            if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(answer_body)))
        self.end_headers()
        self.wfile.write(answer_body)

    do_GET = do_POST = do_OPTIONS = _forward

    def log_message(self, *args) -> None:
        pass


_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


class Tap:
    """A recording proxy at http://127.0.0.1:<port> in front of `upstream` (host:port): every
    request that reaches the gateway through it, with its answer, in `seen`."""

    __test__ = False

    def __init__(self, upstream: str):
        self.upstream = upstream
        self.seen: list[dict] = []
        handler = type("Handler", (_TapHandler,), {"tap": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
