// The API client of the dashboard: same-origin fetches that carry the
// HttpOnly session cookie, with the session's CSRF token in X-CSRF-Token on
// every request that changes something. The token itself is never visible
// to this script.

/** An API answer that was not a success, with the contract's detail. */
export class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

/** The caller (GET /api/auth/me) once logged in; null before. */
export const session = { me: null };

/** Called when the server says the session is gone (401). */
let onLoggedOut = () => {};
export function whenLoggedOut(callback) {
  onLoggedOut = callback;
}

/** The CSRF token of the current session, from its readable cookie. */
function csrfToken() {
  for (const part of document.cookie.split(';')) {
    const [name, ...value] = part.trim().split('=');
    if (name === 'orch_csrf') return value.join('=');
  }
  return '';
}

/** The contract's error detail as one line of text. */
function detailOf(body, fallback) {
  if (body && typeof body.detail === 'string') return body.detail;
  if (body && Array.isArray(body.detail)) {
    return body.detail.map((d) => `${(d.loc || []).join('.')}: ${d.msg}`).join('; ');
  }
  return fallback;
}

/** Sends one request; resolves to the parsed JSON body (null for 204). */
export async function api(method, path, body) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (method !== 'GET' && method !== 'HEAD') headers['X-CSRF-Token'] = csrfToken();
  const response = await fetch(path, {
    method,
    headers,
    credentials: 'same-origin',
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 204) return null;
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    if (response.status === 401 && session.me) onLoggedOut();
    throw new ApiError(response.status, detailOf(data, response.statusText));
  }
  return data;
}

/** Whether the session's scopes grant `scope` (admin implies every scope;
 *  X:write implies X:read), the rule the server applies. */
export function can(scope) {
  const scopes = (session.me && session.me.scopes) || [];
  if (scopes.includes('admin') || scopes.includes(scope)) return true;
  return scope.endsWith(':read') && scopes.includes(scope.replace(/:read$/, ':write'));
}

/** Logs in: the server sets the session cookies. */
export async function logIn(username, password) {
  await api('POST', '/api/auth/session', { username, password });
  session.me = await api('GET', '/api/auth/me');
}

/** Logs out: the server clears the cookies. */
export async function logOut() {
  await api('DELETE', '/api/auth/session');
  session.me = null;
}

/** Reads the caller; false when not logged in. */
export async function resume() {
  try {
    session.me = await api('GET', '/api/auth/me');
    return true;
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return false;
    throw e;
  }
}

/** An error as one line for the user. */
export function describe(e) {
  return e instanceof ApiError ? `${e.message} (HTTP ${e.status})` : String(e && e.message ? e.message : e);
}
