// Boot: the shell (header, login form, page outlet), the session, the live stream and the
// router. Pages live in js/pages/ and are listed in js/pages/index.js.

import { api, hasSession, isQuiet, onSessionEnd, reportError } from "./api.js";
import { $, el } from "./dom.js";
import { hideLogin, initLogin, logout, mfaEnrolmentPending, resumeSession, showLogin } from "./login.js";
import { NavBar } from "./components/nav.js";
import { problemMessage } from "./components/problem.js";
import { PAGES } from "./pages/index.js";
import { Router, parseHash, registerPage } from "./router.js";
import { LiveStream } from "./stream.js";

for (const page of PAGES) registerPage(page);

const stream = new LiveStream();
const nav = new NavBar($("main-nav"));
const router = new Router($("page"), { context: { stream }, onRoute: (page) => nav.setActive(page) });
let signedIn = false;
let enrolling = false; // the session may only enrol MFA (the account page)

stream.on("status", ({ kind, text }) => {
  const c = $("conn");
  c.className = `conn conn-${kind}`;
  c.textContent = text;
});

async function start() {
  signedIn = true;
  hideLogin();
  $("page").hidden = false;
  $("logout").hidden = false;
  $("conn").hidden = false;
  let me;
  try {
    me = await api.get("/api/auth/me");
  } catch (err) {
    if (!isQuiet(err)) $("page").replaceChildren(el("div", { class: "page-body" }, problemMessage(err)));
    throw err;
  }
  if (!signedIn) return;
  $("user").textContent = `${me.username} · ${me.role}`;
  enrolling = mfaEnrolmentPending() || me.mfa_enrollment_required === true;
  if (enrolling) {
    // The role requires MFA and this user has none: the session may only enrol (no
    // nav, no live stream) until the account page verifies a code and restarts us.
    nav.clear();
    if (parseHash(location.hash).path !== "/account") location.hash = "#/account";
    await router.start(me);
    return;
  }
  nav.render(me.role);
  stream.start();
  await router.start(me);
}

function stop(message) {
  signedIn = false;
  enrolling = false;
  router.stop();
  stream.stop();
  nav.clear();
  $("page").hidden = true;
  $("logout").hidden = true;
  $("conn").hidden = true;
  $("user").textContent = "";
  showLogin(message);
}

/** The session changed (MFA enrolled on the account page): rebuild the shell around it. */
function restart() {
  if (!signedIn) return;
  enrolling = false; // start() asks the server again
  router.stop();
  stream.stop();
  start().catch(reportError);
}

/** A refreshed access token: the server closes a live stream when the token it was
 * opened with expires, so reopen it with the new one (same subscriptions). */
function renewStream() {
  if (!signedIn || stream.stopped) return;
  const subs = stream.subs;
  stream.stop();
  stream.subscribe(subs);
  stream.start();
}

onSessionEnd(stop);
window.addEventListener("isthmus:token-refreshed", renewStream);
window.addEventListener("isthmus:session-changed", restart);
// Registered before the router's listener: while enrolling, every other page would only
// meet refusals (the server allows nothing else), so the location stays on the account.
window.addEventListener("hashchange", () => {
  if (signedIn && enrolling && parseHash(location.hash).path !== "/account") location.hash = "#/account";
});
initLogin(start);
$("logout").addEventListener("click", () => logout());
if (hasSession()) {
  resumeSession();
  start().catch(reportError);
} else {
  showLogin();
}
