// The sign-in form of index.html and the session it opens: POST /api/auth/login with the
// username and password, then (when the server asks, problem reason `mfa_required`) a
// second step for a one-time code or a recovery code; the short-lived access token is
// refreshed (POST /api/auth/refresh) before it expires; a user who must enrol MFA first
// is sent to the account page; logout (POST /api/auth/logout) ends the session.

import { ApiError, api, endSession, EXPIRED, getToken, onSessionEnd, setToken } from "./api.js";
import { $, el } from "./dom.js";
import { problemText } from "./components/problem.js";

const REFRESH_KEY = "isthmus.refresh"; // the refresh token (this tab only)
const EXPIRES_KEY = "isthmus.expires"; // epoch ms when the access token expires
const ENROL_KEY = "isthmus.mfa-enrol"; // "1": this session may only enrol MFA

let refreshTimer = null;
let mfaStep = false; // the form asks for the second factor
let useRecovery = false;
const dom = {};

// ------------------------------------------------------------------ the session

/** Keep what a login or refresh response gives: the access token, the refresh token,
 * the expiry (refreshed before it), and whether MFA enrolment is required first. */
export function keepSession(body) {
  setToken(body.access_token);
  if (body.refresh_token) sessionStorage.setItem(REFRESH_KEY, body.refresh_token);
  if (body.mfa_enrollment_required === true) sessionStorage.setItem(ENROL_KEY, "1");
  else if (body.mfa_enrollment_required === false) sessionStorage.removeItem(ENROL_KEY);
  const seconds = Number(body.expires_in);
  if (Number.isFinite(seconds) && seconds > 0) {
    const expiresAt = Date.now() + seconds * 1000;
    sessionStorage.setItem(EXPIRES_KEY, String(expiresAt));
    armRefresh(expiresAt);
  }
}

/** After a reload: re-arm the refresh of the stored session. */
export function resumeSession() {
  const expiresAt = Number(sessionStorage.getItem(EXPIRES_KEY));
  if (expiresAt) armRefresh(expiresAt);
}

/** True while the session may only enrol a second factor (the role requires MFA). */
export function mfaEnrolmentPending() {
  return sessionStorage.getItem(ENROL_KEY) === "1";
}

/** The account page calls this once MFA is verified: the session is complete. */
export function mfaEnrolmentDone() {
  sessionStorage.removeItem(ENROL_KEY);
}

function forgetSession() {
  clearTimeout(refreshTimer);
  refreshTimer = null;
  for (const key of [REFRESH_KEY, EXPIRES_KEY, ENROL_KEY]) sessionStorage.removeItem(key);
}

function armRefresh(expiresAt) {
  clearTimeout(refreshTimer);
  if (!sessionStorage.getItem(REFRESH_KEY)) return; // no refresh token: the session ends at expiry
  const left = expiresAt - Date.now();
  // Well before the end: 30 s before a long-lived token, at 80% of a short one.
  const delay = Math.max(0, left < 150_000 ? left * 0.8 : left - 30_000);
  refreshTimer = setTimeout(() => refresh(expiresAt), delay);
}

async function refresh(expiresAt) {
  const token = sessionStorage.getItem(REFRESH_KEY);
  if (!token || !getToken()) return;
  try {
    keepSession(await api.post("/api/auth/refresh", { refresh_token: token }, { auth: false }));
    // The live stream was opened with the old token, which the server enforces.
    window.dispatchEvent(new CustomEvent("isthmus:token-refreshed"));
  } catch (err) {
    if (err instanceof ApiError && err.status >= 400 && err.status < 500) {
      endSession(EXPIRED); // the session ended (idle, lifetime, revoked, user disabled)
      return;
    }
    // The server is unreachable: try again while the access token lasts.
    if (Date.now() < expiresAt) refreshTimer = setTimeout(() => refresh(expiresAt), 5000);
  }
}

/** End the session on the server (POST /api/auth/logout), then here. */
export async function logout() {
  const token = getToken();
  clearTimeout(refreshTimer);
  if (token) {
    try {
      // Not through api.js: a 401 here (session already over) is no news to show.
      await fetch("/api/auth/logout", {
        method: "POST",
        headers: { Authorization: `Bearer ${token}`, Accept: "application/json, application/problem+json" },
      });
    } catch {
      // The server is unreachable: the token is forgotten here all the same.
    }
  }
  endSession("");
}

// ------------------------------------------------------------------ the form

export function showLogin(message = "") {
  setStep(false);
  $("login-view").hidden = false;
  $("login-error").textContent = message;
  $("login-password").value = "";
  $("login-username").focus();
}

export function hideLogin() {
  $("login-view").hidden = true;
}

function buildMfaStep(form) {
  const loadCss = el("link", { rel: "stylesheet", href: "/static/css/pages/login.css" });
  document.head.append(loadCss);
  dom.intro = form.querySelector("p.muted");
  dom.introText = dom.intro ? dom.intro.textContent : "";
  dom.credentials = [...form.querySelectorAll("label[for=login-username], #login-username, label[for=login-password], #login-password")];
  dom.otpLabel = el("label", { for: "login-otp", text: "One-time code" });
  dom.otp = el("input", {
    id: "login-otp", name: "otp", inputMode: "numeric", autocomplete: "one-time-code", maxLength: 10,
    placeholder: "123456", "data-testid": "login-otp",
  });
  dom.recoveryLabel = el("label", { for: "login-recovery", text: "Recovery code" });
  dom.recovery = el("input", {
    id: "login-recovery", name: "recovery_code", autocomplete: "off", maxLength: 64,
    placeholder: "xxxx-xxxx-xxxx-xxxx", "data-testid": "login-recovery",
  });
  dom.recovery.spellcheck = false;
  dom.toggle = el("button", { type: "button", class: "btn btn-link", "data-testid": "login-use-recovery" });
  dom.back = el("button", { type: "button", class: "btn btn-link", "data-testid": "login-back", text: "Another account" });
  dom.toggle.addEventListener("click", () => {
    useRecovery = !useRecovery;
    $("login-error").textContent = "";
    paintMfa();
    (useRecovery ? dom.recovery : dom.otp).focus();
  });
  dom.back.addEventListener("click", () => showLogin());
  dom.mfa = el("div", { class: "login-mfa", "data-testid": "login-mfa", hidden: true },
    dom.otpLabel, dom.otp, dom.recoveryLabel, dom.recovery,
    el("div", { class: "login-links" }, dom.toggle, dom.back));
  form.insertBefore(dom.mfa, $("login-error"));
}

function paintMfa() {
  dom.otpLabel.hidden = dom.otp.hidden = useRecovery;
  dom.recoveryLabel.hidden = dom.recovery.hidden = !useRecovery;
  dom.toggle.textContent = useRecovery ? "Use the authenticator app" : "Use a recovery code";
  if (dom.intro) {
    dom.intro.textContent = useRecovery
      ? "Enter one of the recovery codes you saved when you set up two-step verification. Each works once."
      : `Two-step verification for ${$("login-username").value}: enter the 6-digit code from your authenticator app.`;
  }
}

function setStep(mfa) {
  mfaStep = mfa;
  if (!dom.mfa) return;
  if (!mfa) useRecovery = false;
  for (const node of dom.credentials) node.hidden = mfa;
  dom.mfa.hidden = !mfa;
  dom.otp.value = "";
  dom.recovery.value = "";
  if (mfa) paintMfa();
  else if (dom.intro) dom.intro.textContent = dom.introText;
}

function loginBody() {
  const body = { username: $("login-username").value, password: $("login-password").value };
  if (mfaStep) {
    if (useRecovery) body.recovery_code = dom.recovery.value.trim();
    else body.otp = dom.otp.value.replace(/\s+/g, "");
  }
  return body;
}

const sentence = (text) => text.charAt(0).toUpperCase() + text.slice(1);

function refusal(err) {
  const reason = err.problem && err.problem.reason;
  if (err.status === 0) return "The server cannot be reached.";
  if (reason === "mfa_invalid") return sentence(problemText(err, "Wrong code."));
  if (err.status === 401 && (!reason || reason === "credentials" || reason === "authentication")) return "Wrong username or password.";
  return sentence(problemText(err, "Sign-in failed."));
}

/** Wire the form; `onSignedIn()` runs with the token stored (and may throw: shown). */
export function initLogin(onSignedIn) {
  const form = $("login-form");
  buildMfaStep(form);
  onSessionEnd(forgetSession);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = event.submitter || form.querySelector("button[type=submit]");
    const error = $("login-error");
    error.textContent = "";
    const body = loginBody();
    if (mfaStep && !body.otp && !body.recovery_code) {
      error.textContent = useRecovery ? "Enter a recovery code." : "Enter the code from your authenticator app.";
      return;
    }
    button.disabled = true;
    try {
      let answer;
      try {
        answer = await api.post("/api/auth/login", body, { auth: false });
      } catch (err) {
        if (!(err instanceof ApiError)) throw err;
        if (err.problem && err.problem.reason === "mfa_required" && !mfaStep) {
          setStep(true);
          dom.otp.focus();
          return;
        }
        error.textContent = refusal(err);
        if (mfaStep) (useRecovery ? dom.recovery : dom.otp).select();
        return;
      }
      if (answer && answer.mfa_required && !answer.access_token) {
        setStep(true);
        dom.otp.focus();
        return;
      }
      keepSession(answer);
      $("login-password").value = "";
      setStep(false);
      if (answer.mfa_enrollment_required) location.hash = "#/account";
      await onSignedIn();
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 401)) error.textContent = problemText(err, "The server cannot be reached.");
    } finally {
      button.disabled = false;
    }
  });
}
