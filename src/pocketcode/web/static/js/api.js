// The one way this app talks to the server: same-origin fetch with the session cookie.

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

const listeners = new Set();
/** Called with every 401 (the login expired): the app goes back to the login screen. */
export function onUnauthenticated(fn) {
  listeners.add(fn);
}

export async function request(method, path, body, { raw = false } = {}) {
  const init = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
  if (body instanceof FormData) {
    init.body = body;
  } else if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiError(0, "NETWORK", "The server cannot be reached.");
  }
  if (!response.ok) {
    let code = "ERROR";
    let message = `${response.status} ${response.statusText}`;
    try {
      const data = await response.json();
      code = data.code || code;
      message = data.error || message;
    } catch {
      /* not JSON */
    }
    if (response.status === 401 && code === "UNAUTHENTICATED") listeners.forEach((fn) => fn());
    throw new ApiError(response.status, code, message);
  }
  if (raw) return response;
  if (response.status === 204 || response.status === 202) return null;
  const text = await response.text();
  return text ? JSON.parse(text) : null;
}

export const api = {
  get: (path) => request("GET", path),
  post: (path, body) => request("POST", path, body),
  put: (path, body) => request("PUT", path, body),
  patch: (path, body) => request("PATCH", path, body),
  del: (path) => request("DELETE", path),
};

/** `path?key=value…`, leaving out empty values. */
export function withQuery(path, params) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") query.set(key, String(value));
  }
  const text = query.toString();
  return text ? `${path}?${text}` : path;
}
