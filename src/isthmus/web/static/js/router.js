// The page registry and the hash router.
//
// A page is a module under js/pages/ whose default export is `definePage({...})`:
//   path     "/users" or "/commands/:id" (":name" segments become ctx.params.name)
//   label    its name in the nav bar (and the window title)
//   roles    the roles that see it (ROLES below); the server checks again on every call
//   nav      false to keep it out of the nav bar (detail pages), default true
//   styles   stylesheets loaded (once) before the first render, e.g. ["/static/css/pages/users.css"]
//   render(container, ctx)   builds the page into `container`; may be async; may return a
//                            cleanup function, run when the page is left
//   unmount(container, ctx)  optional, also run when the page is left
// ctx = {me, role, params, query, signal, api, stream, navigate}; `signal` is aborted when
// the page is left (pass it to api calls: `api.get(url, {signal: ctx.signal})`).
// URLs are `#/path?key=value`; `#/` and an empty hash are the control tower.

import { api, isQuiet } from "./api.js";
import { el } from "./dom.js";
import { problemMessage } from "./components/problem.js";

/** The roles of `GET /api/auth/me`, least to most privileged (security_admin is separate
 * from the operating line: list the roles a page needs, do not assume an order). */
export const ROLES = Object.freeze(["viewer", "operator", "engineer", "supervisor", "security_admin", "admin"]);

const registry = [];

function compile(path) {
  if (typeof path !== "string" || !path.startsWith("/")) throw new Error(`page path must start with "/": ${path}`);
  const names = [];
  const source = path
    .split("/")
    .map((part) => {
      if (part.startsWith(":")) {
        names.push(part.slice(1));
        return "([^/]+)";
      }
      return part.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
    })
    .join("/");
  return { regex: new RegExp(`^${source === "" ? "/" : source}/?$`), names };
}

/** Check a page definition and return it (a page module's default export). */
export function definePage(def) {
  if (!def || typeof def.render !== "function") throw new Error("a page needs render(container, ctx)");
  if (typeof def.label !== "string" || !def.label) throw new Error(`page ${def.path} needs a label`);
  if (!Array.isArray(def.roles) || def.roles.length === 0) throw new Error(`page ${def.path} needs roles`);
  for (const role of def.roles) if (!ROLES.includes(role)) throw new Error(`page ${def.path}: unknown role ${role}`);
  return Object.freeze({ nav: true, styles: [], ...def, ...compile(def.path) });
}

/** Add a page to the router (main.js does this for every page of js/pages/index.js). */
export function registerPage(def) {
  const page = def.regex ? def : definePage(def);
  if (registry.some((p) => p.path === page.path)) throw new Error(`two pages at ${page.path}`);
  registry.push(page);
  return page;
}

/** The pages `role` may see, in registration order (nav: false ones left out). */
export function navPages(role) {
  return registry.filter((p) => p.nav && p.roles.includes(role));
}

export function canSee(page, role) {
  return page.roles.includes(role);
}

/** `#/users?x=1` from ("/users", {x: 1}). */
export function href(path, query = null) {
  const qs = query ? new URLSearchParams(query).toString() : "";
  return `#${path}${qs ? `?${qs}` : ""}`;
}

export function navigate(path, query = null) {
  location.hash = href(path, query);
}

/** {path, query} of a location hash ("" and "#" are "/"). */
export function parseHash(hash) {
  const raw = hash.replace(/^#/, "") || "/";
  const q = raw.indexOf("?");
  const path = (q < 0 ? raw : raw.slice(0, q)) || "/";
  const query = Object.fromEntries(new URLSearchParams(q < 0 ? "" : raw.slice(q + 1)));
  return { path: path.startsWith("/") ? path : `/${path}`, query };
}

function match(path) {
  for (const page of registry) {
    const m = page.regex.exec(path);
    if (m) {
      const params = {};
      page.names.forEach((name, i) => (params[name] = decodeURIComponent(m[i + 1])));
      return { page, params };
    }
  }
  return null;
}

const styles = new Map(); // href -> Promise

function loadStyle(url) {
  if (!styles.has(url)) {
    styles.set(
      url,
      new Promise((resolve) => {
        const link = el("link", { rel: "stylesheet", href: url });
        link.addEventListener("load", resolve);
        link.addEventListener("error", () => {
          console.error(`stylesheet ${url} failed to load`);
          resolve();
        });
        document.head.append(link);
      }),
    );
  }
  return styles.get(url);
}

export class Router {
  /** `outlet`: where pages render; `context`: fields added to every ctx (stream, ...);
   * `onRoute(page | null)`: after each route change (the nav bar marks the active page). */
  constructor(outlet, { context = {}, onRoute = () => {} } = {}) {
    this.outlet = outlet;
    this.context = context;
    this.onRoute = onRoute;
    this.me = null;
    this.current = null;
    this.seq = 0;
    this.onHash = () => this.route();
  }

  start(me) {
    this.me = me;
    window.addEventListener("hashchange", this.onHash);
    return this.route();
  }

  stop() {
    window.removeEventListener("hashchange", this.onHash);
    this.seq++;
    this.unmount();
    this.outlet.replaceChildren();
  }

  unmount() {
    const current = this.current;
    this.current = null;
    if (!current) return;
    current.controller.abort();
    for (const fn of [current.cleanup, current.page.unmount && (() => current.page.unmount(current.container, current.ctx))]) {
      if (typeof fn !== "function") continue;
      try {
        fn();
      } catch (err) {
        console.error(err);
      }
    }
    current.container.remove();
  }

  async route() {
    const seq = ++this.seq;
    this.unmount();
    const { path, query } = parseHash(location.hash);
    const found = match(path);
    const role = this.me ? this.me.role : null;
    const slug = found ? found.page.path.split("/")[1] || "home" : "missing";
    const container = el("div", { class: `page page-${slug.replace(/[^a-z0-9_-]/gi, "")}` });
    this.outlet.replaceChildren(container);
    if (!found) {
      document.title = "Isthmus · Page not found";
      container.append(
        el("div", { class: "page-body" },
          problemMessage({ title: "Page not found", detail: `There is no page at #${path}.` }, { testid: "page-not-found" }),
          el("a", { href: "#/", text: "Back to the control tower" })),
      );
      this.onRoute(null);
      return;
    }
    const { page, params } = found;
    document.title = `Isthmus · ${page.label}`;
    if (!canSee(page, role)) {
      container.append(
        el("div", { class: "page-body" },
          problemMessage(
            { title: "Not allowed", detail: `The ${page.label} page is not open to the role ${role}.` },
            { testid: "page-forbidden" },
          )),
      );
      this.onRoute(page);
      return;
    }
    const controller = new AbortController();
    const ctx = { ...this.context, api, me: this.me, role, params, query, signal: controller.signal, navigate };
    const current = { page, container, controller, ctx, cleanup: null };
    this.current = current;
    this.onRoute(page);
    try {
      await Promise.all(page.styles.map(loadStyle));
      if (seq !== this.seq) return;
      const cleanup = await page.render(container, ctx);
      if (this.current === current) current.cleanup = cleanup;
      else if (typeof cleanup === "function") cleanup(); // left while rendering
    } catch (err) {
      if (isQuiet(err) || controller.signal.aborted) return;
      console.error(err);
      container.replaceChildren(el("div", { class: "page-body" }, problemMessage(err)));
    }
  }
}
