// The one way pages talk to the server: fetch with the bearer token, JSON in and out,
// RFC 9457 problems turned into ApiError, and a 401 anywhere ending the session (the
// shell then shows the login form with a message).

const TOKEN_KEY = "isthmus.token";
export const EXPIRED = "Your session has expired; please sign in again.";

let token = sessionStorage.getItem(TOKEN_KEY);
const sessionEndListeners = new Set();

/** A refused or failed request. `problem` is the RFC 9457 body (title, detail, status and
 * any extra fields such as `reason`), or one made up from the status line. */
export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.name = "ApiError";
    this.status = status;
    this.problem = problem;
  }
}

/** The server answered 401: the session is over (already handled: the login form shows). */
export class Unauthorized extends ApiError {
  constructor(problem) {
    super(401, problem);
    this.name = "Unauthorized";
  }
}

export function getToken() {
  return token;
}

export function hasSession() {
  return Boolean(token);
}

export function setToken(value) {
  token = value;
  sessionStorage.setItem(TOKEN_KEY, value);
}

/** Forget the token and tell the shell (which unmounts the page and shows the login form). */
export function endSession(message = "") {
  token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  for (const listener of sessionEndListeners) listener(message);
}

/** `fn(message)` runs whenever the session ends (logout, 401, WebSocket 4401). */
export function onSessionEnd(fn) {
  sessionEndListeners.add(fn);
  return () => sessionEndListeners.delete(fn);
}

function toProblem(body, response) {
  if (body && typeof body === "object" && !Array.isArray(body)) {
    const problem = { ...body };
    if (typeof problem.title !== "string") problem.title = response.statusText || `HTTP ${response.status}`;
    if (typeof problem.status !== "number") problem.status = response.status;
    if (typeof problem.detail !== "string") {
      // FastAPI's own 422 has {"detail": [...]}: keep the messages readable.
      problem.detail = Array.isArray(body.detail)
        ? body.detail.map((d) => (d && d.msg ? d.msg : String(d))).join("; ")
        : `${response.status} ${response.statusText}`.trim();
    }
    return problem;
  }
  return { title: response.statusText || `HTTP ${response.status}`, status: response.status, detail: `${response.status} ${response.statusText}`.trim() };
}

async function send(method, path, { body, signal, auth = true } = {}) {
  const headers = { Accept: "application/json, application/problem+json" };
  if (auth && token) headers.Authorization = `Bearer ${token}`;
  const init = { method, headers, signal };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    if (err && err.name === "AbortError") throw err;
    throw new ApiError(0, { title: "The server cannot be reached.", detail: "The server cannot be reached.", status: 0 });
  }
  const data = response.status === 204 ? null : await response.json().catch(() => null);
  if (response.status === 401 && auth) {
    endSession(EXPIRED);
    throw new Unauthorized(toProblem(data, response));
  }
  if (!response.ok) throw new ApiError(response.status, toProblem(data, response));
  return data;
}

/** `api.get("/api/tags")`, `api.post("/api/commands", {...})`; options: `{signal}`. */
export const api = {
  get: (path, options) => send("GET", path, options),
  post: (path, body, options) => send("POST", path, { ...options, body }),
  put: (path, body, options) => send("PUT", path, { ...options, body }),
  patch: (path, body, options) => send("PATCH", path, { ...options, body }),
  delete: (path, options) => send("DELETE", path, options),
};

/** `POST /api/auth/login` (no token); resolves to the token response, throws ApiError. */
export function login(username, password) {
  return send("POST", "/api/auth/login", { body: { username, password }, auth: false });
}

/** A path segment by segment URL-encoded: `/api/tags/${encodePath(tag)}/samples`. */
export function encodePath(path) {
  return path.split("/").map(encodeURIComponent).join("/");
}

/** True for errors a page need not show: the session ended, or the page went away. */
export function isQuiet(err) {
  return err instanceof Unauthorized || (err && err.name === "AbortError");
}

/** Log an error of a background task (a page shows its own with components/problem.js). */
export function reportError(err) {
  if (!isQuiet(err)) console.error(err);
}
