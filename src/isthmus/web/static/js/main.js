// Boot: the shell (header, login form, page outlet), the session, the live stream and the
// router. Pages live in js/pages/ and are listed in js/pages/index.js.

import { api, endSession, hasSession, isQuiet, onSessionEnd, reportError } from "./api.js";
import { $, el } from "./dom.js";
import { hideLogin, initLogin, showLogin } from "./login.js";
import { NavBar } from "./components/nav.js";
import { problemMessage } from "./components/problem.js";
import { PAGES } from "./pages/index.js";
import { Router, registerPage } from "./router.js";
import { LiveStream } from "./stream.js";

for (const page of PAGES) registerPage(page);

const stream = new LiveStream();
const nav = new NavBar($("main-nav"));
const router = new Router($("page"), { context: { stream }, onRoute: (page) => nav.setActive(page) });
let signedIn = false;

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
  nav.render(me.role);
  stream.start();
  await router.start(me);
}

function stop(message) {
  signedIn = false;
  router.stop();
  stream.stop();
  nav.clear();
  $("page").hidden = true;
  $("logout").hidden = true;
  $("conn").hidden = true;
  $("user").textContent = "";
  showLogin(message);
}

onSessionEnd(stop);
initLogin(start);
$("logout").addEventListener("click", () => endSession());
if (hasSession()) start().catch(reportError);
else showLogin();
