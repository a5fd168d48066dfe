// Small fetch wrapper for the tmd JSON API, plus localStorage helpers.
// Error bodies look like {"error": {"code": "...", "message": "..."}}; they become ApiError.

export const NAME_RE = /^[a-z0-9][a-z0-9-]{1,62}$/;

export class ApiError extends Error {
  constructor(message, { status = 0, code = 'unknown', retryAfter = null } = {}) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

// Retry-After is either a number of seconds or an HTTP date.
function parseRetryAfter(value) {
  if (!value) return null;
  const trimmed = value.trim();
  if (/^\d+$/.test(trimmed)) return parseInt(trimmed, 10);
  const when = Date.parse(trimmed);
  if (Number.isNaN(when)) return null;
  return Math.max(0, Math.ceil((when - Date.now()) / 1000));
}

// Sends one request; returns the Response when it is a success, else throws an ApiError.
async function request(method, path, { body, token, signal, accept = 'application/json' } = {}) {
  const headers = { Accept: accept };
  const init = { method, headers, signal, cache: 'no-store', credentials: 'same-origin' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  if (token) headers.Authorization = 'Bearer ' + token;
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    if (err && err.name === 'AbortError') throw err;
    throw new ApiError('Could not reach the server. Check your connection and try again.',
                       { status: 0, code: 'network' });
  }
  if (response.ok) return response;
  const error = (parseJson(await response.text()) || {}).error || {};
  const message = typeof error.message === 'string' && error.message
    ? error.message
    : `The server answered ${response.status} ${response.statusText}`.trim();
  throw new ApiError(message, {
    status: response.status,
    code: typeof error.code === 'string' ? error.code : 'http_' + response.status,
    retryAfter: parseRetryAfter(response.headers.get('Retry-After')),
  });
}

function parseJson(text) {
  if (!text) return null;
  try {
    const data = JSON.parse(text);
    return data && typeof data === 'object' ? data : null;
  } catch {
    return null;
  }
}

// A JSON API call: the parsed answer (null for an empty one, as with 204).
export async function api(method, path, options = {}) {
  const response = await request(method, path, options);
  return parseJson(await response.text());
}

// A GET whose answer is a file (a transcript): returns it as a Blob.
export async function fetchBlob(path, { token } = {}) {
  const response = await request('GET', path, { token, accept: '*/*' });
  return response.blob();
}

export function roomPath(name) {
  return '/api/v1/rooms/' + encodeURIComponent(name);
}

// localStorage can be missing or throw (privacy modes); the page must still work.
export const store = {
  get(key) {
    try {
      const raw = window.localStorage.getItem(key);
      return raw === null ? null : JSON.parse(raw);
    } catch {
      return null;
    }
  },
  set(key, value) {
    try {
      window.localStorage.setItem(key, JSON.stringify(value));
      return true;
    } catch {
      return false;
    }
  },
  // Plain strings (the owner token) are stored as they are, not JSON-encoded.
  getString(key) {
    try {
      return window.localStorage.getItem(key);
    } catch {
      return null;
    }
  },
  setString(key, value) {
    try {
      window.localStorage.setItem(key, value);
      return true;
    } catch {
      return false;
    }
  },
  remove(key) {
    try {
      window.localStorage.removeItem(key);
    } catch {
      /* ignore */
    }
  },
  keys(prefix) {
    const out = [];
    try {
      for (let i = 0; i < window.localStorage.length; i++) {
        const key = window.localStorage.key(i);
        if (key && key.startsWith(prefix)) out.push(key);
      }
    } catch {
      /* ignore */
    }
    return out;
  },
};

export const ownerKey = (name) => 'tmd:owner:' + name;
export const participantKey = (name) => 'tmd:participant:' + name;
