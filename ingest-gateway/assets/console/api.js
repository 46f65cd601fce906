// The admin API as the console calls it: same origin, the session cookie
// (HttpOnly, set at sign-in) and, on every write, the session's CSRF token in
// X-CSRF-Token. The CSRF token lives in this module's memory only.

let csrfToken = null;
let ingestHint = null;

/** An answer that was not 2xx, with the API's error code and message. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message || `HTTP ${status}`);
    this.status = status;
    this.code = code || `http_${status}`;
  }
}

async function call(method, path, body) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (method !== 'GET' && csrfToken) headers['X-CSRF-Token'] = csrfToken;
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: 'same-origin',
      cache: 'no-store',
    });
  } catch (e) {
    throw new ApiError(0, 'network_error', `the gateway did not answer (${e.message})`);
  }
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      throw new ApiError(response.status, 'invalid_answer', `not JSON: ${text.slice(0, 200)}`);
    }
  }
  if (!response.ok) {
    const error = (data && data.error) || {};
    const failure = new ApiError(response.status, error.code, error.message);
    if (response.status === 401 && !path.startsWith('/console/session')) {
      window.dispatchEvent(new CustomEvent('powehi:signed-out'));
    }
    throw failure;
  }
  return data;
}

export const api = {
  get: path => call('GET', path),
  post: (path, body) => call('POST', path, body),
  put: (path, body) => call('PUT', path, body),
  del: path => call('DELETE', path),
};

/** Path segment, percent-encoded. */
export const seg = s => encodeURIComponent(s);

/** `?a=1&b=2` of the defined, non-empty values. */
export function qs(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') q.set(k, v);
  const text = q.toString();
  return text ? `?${text}` : '';
}

/** Whether this browser has a live session (and learns its CSRF token). */
export async function resumeSession() {
  try {
    const s = await call('GET', '/console/session');
    csrfToken = s.csrfToken;
    ingestHint = s.ingest;
    return true;
  } catch (e) {
    if (e.status === 401) return false;
    throw e;
  }
}

export async function signIn(token) {
  const s = await call('POST', '/console/session', { token });
  csrfToken = s.csrfToken;
  ingestHint = s.ingest;
}

export async function signOut() {
  try {
    await call('DELETE', '/console/session');
  } finally {
    csrfToken = null;
  }
}

/** The ingest URL producers use, as far as the console can tell. */
export function ingestUrl() {
  const port = ingestHint ? ingestHint.port : 8080;
  const prefix = ingestHint ? ingestHint.pathPrefix : '/powehi';
  return `${location.protocol}//${location.hostname}:${port}${prefix}/smile`;
}
