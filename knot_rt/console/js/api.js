// The session (login, second factor, refresh before expiry, logout) and the API calls, as the apps make them.
export const API = "/api/application";
const KEY = "knot-console-session";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message || `HTTP ${status}`);
    this.status = status;
    this.code = code;
  }

  // What an operator reads when the API refuses.
  explain() {
    const why = {
      400: "Invalid request", 401: "Not logged in", 403: "Refused (403)", 404: "Not found (404)",
      409: "Conflict (409)", 413: "Too large (413)", 415: "Unsupported file (415)", 429: "Too many attempts (429)",
      502: "Upstream unavailable (502)", 503: "Service unavailable (503)", 504: "No answer in time (504)",
    }[this.status] || `Error ${this.status}`;
    return `${why}: ${this.message} (code ${this.code})`;
  }
}

function claims(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part));
  } catch {
    return {};
  }
}

function randomId() {
  const bytes = new Uint8Array(9);
  crypto.getRandomValues(bytes);
  return "console-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export class Session {
  constructor() {
    this.token = null;
    this.refreshToken = null;
    this.userId = null;
    this.email = null;
    this.deviceId = null;
    this.permissions = [];
    this.timer = null;
    this.refreshing = null;
    this.onExpired = () => {};
    this.onToken = () => {};
  }

  restore() {
    try {
      const saved = JSON.parse(sessionStorage.getItem(KEY) || "null");
      if (saved && saved.token && saved.refreshToken) {
        Object.assign(this, saved);
        this.schedule();
        return true;
      }
    } catch { /* nothing saved */ }
    return false;
  }

  save() {
    const { token, refreshToken, userId, email, deviceId } = this;
    sessionStorage.setItem(KEY, JSON.stringify({ token, refreshToken, userId, email, deviceId }));
  }

  clear() {
    clearTimeout(this.timer);
    this.token = this.refreshToken = this.userId = null;
    this.permissions = [];
    sessionStorage.removeItem(KEY);
  }

  get device() {
    return { id: this.deviceId, os: "web", model: navigator.userAgent.slice(0, 100), app_version: "console" };
  }

  // Email and password; resolves to {mfa: true} when the account has a second factor (code 146).
  async login(email, password) {
    this.deviceId = randomId();
    const { status, body } = await raw("POST", "/login", null, {
      email, password, scope: "dashboard", app_label: "knot", device: this.device,
    });
    if (status === 200 && body.code === 0) {
      this.email = email;
      this.opened(body.token, body.refresh_token, body.user_id);
      return { mfa: false };
    }
    if (body && body.code === 146 && body.token) {
      this.email = email;
      this.mfaToken = body.token;
      return { mfa: true };
    }
    throw new ApiError(status, body ? body.code : -1, body ? body.message : "no answer");
  }

  async secondFactor(code) {
    const { status, body } = await raw("POST", "/login/2fa", this.mfaToken, { mfa_token: code, device: this.device });
    if (status === 200 && body.code === 0) {
      this.mfaToken = null;
      this.opened(body.token, body.refresh_token, body.user_id);
      return;
    }
    throw new ApiError(status, body ? body.code : -1, body ? body.message : "no answer");
  }

  opened(token, refreshToken, userId) {
    this.token = token;
    this.refreshToken = refreshToken;
    this.userId = userId;
    this.save();
    this.schedule();
  }

  // Refresh a minute before the access token expires (or at 80% of a shorter life).
  schedule() {
    clearTimeout(this.timer);
    const { exp, iat } = claims(this.token || "");
    if (!exp) return;
    const life = iat ? exp - iat : 3600;
    const margin = Math.min(60, life * 0.2);
    const wait = Math.max(1, exp - margin - Date.now() / 1000);
    this.timer = setTimeout(() => this.refresh().catch(() => {}), wait * 1000);
  }

  // One refresh at a time; a refused refresh ends the session.
  refresh() {
    if (!this.refreshing) {
      this.refreshing = (async () => {
        const { status, body } = await raw("POST", "/login/refresh", this.refreshToken, null);
        if (status === 200 && body.code === 0) {
          this.token = body.access_token;
          this.refreshToken = body.refresh_token;
          this.save();
          this.schedule();
          this.onToken(this.token);
          return true;
        }
        if (status === 401 || status === 403) {
          this.expire();
          return false;
        }
        throw new ApiError(status, body ? body.code : -1, body ? body.message : "no answer");
      })().finally(() => { this.refreshing = null; });
    }
    return this.refreshing;
  }

  expire() {
    if (!this.token) return;
    this.clear();
    this.onExpired();
  }

  async logout() {
    try {
      await this.call("POST", "/logout", { device_id: this.deviceId });
    } finally {
      this.clear();
    }
  }

  async loadPermissions() {
    const body = await this.call("POST", "/login/check", {});
    this.permissions = body.permissions || [];
    return this.permissions;
  }

  // May the user use `key` (write or read) anywhere, on `networkId`, on `clusterId` of it? The API decides;
  // this only hides what it would refuse.
  can(key, { write = false, networkId = null, clusterId = null } = {}) {
    return this.permissions.some((p) => p.perm_key === key && (p.write || !write) &&
      covers(p.ou, networkId, clusterId));
  }

  networksFor(key) {
    const ids = new Set();
    for (const p of this.permissions) {
      if (p.perm_key === key) for (const id of p.ou.networks || []) ids.add(id);
      if (p.perm_key === key) for (const c of p.ou.clusters || []) ids.add(c.network);
    }
    return [...ids];
  }

  // An API call with the access token; a 401 refreshes once, then gives up (expired session).
  async call(method, path, json = undefined, { form = null, retry = true } = {}) {
    const { status, body } = await raw(method, path, this.token, json, form);
    if (status === 401 && retry && this.refreshToken) {
      if (await this.refresh()) return this.call(method, path, json, { form, retry: false });
      throw new ApiError(401, 3, "your session has expired");
    }
    if (status === 401) {
      this.expire();
      throw new ApiError(401, body ? body.code : 3, "your session has expired");
    }
    if (status >= 400 || !body || body.code !== 0) {
      throw new ApiError(status, body ? body.code : -1, body ? body.message : "no answer");
    }
    return body;
  }

  // Bytes of an image behind the token (chat images, maintenance pictures), as an object URL.
  async blobUrl(url) {
    const response = await fetch(url, { headers: { Authorization: `Bearer ${this.token}` } });
    if (!response.ok) throw new ApiError(response.status, -1, "image unavailable");
    return URL.createObjectURL(await response.blob());
  }
}

// As services/permissions.py: an OU covers an object when it lists its network, its cluster or its organisation.
// The API does not tell a network's organisation: an organisation-wide OU is taken to cover (a refusal then shows).
function covers(ou, networkId, clusterId) {
  if (networkId === null && clusterId === null) return true;
  if ((ou.organizations || []).length) return true;
  if (networkId !== null && (ou.networks || []).includes(networkId)) return true;
  if (clusterId !== null) return (ou.clusters || []).some((c) => c.id === clusterId);
  return (ou.clusters || []).some((c) => c.network === networkId);
}

async function raw(method, path, token, json, form = null) {
  const headers = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  let body;
  if (form) {
    body = form;
  } else if (json !== undefined && json !== null) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  }
  let response;
  try {
    response = await fetch(API + path, { method, headers, body });
  } catch (error) {
    throw new ApiError(0, -1, "the server cannot be reached");
  }
  let parsed = null;
  try {
    parsed = await response.json();
  } catch { /* not JSON */ }
  return { status: response.status, body: parsed };
}
