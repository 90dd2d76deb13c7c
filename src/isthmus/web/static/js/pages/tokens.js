// API tokens (#/tokens, admin and security_admin): tokens for machines (MES, ERP,
// scripts) with a role, scopes and an expiry. Create one (its secret is shown once, with
// a copy button), list them, revoke one. Data: /api/tokens.

import { el } from "../dom.js";
import { formatTimestamp } from "../format.js";
import { definePage, ROLES } from "../router.js";
import { confirmDialog } from "../components/dialog.js";
import { field } from "../components/field.js";
import { dataTable } from "../components/table.js";
import { toast } from "../components/toast.js";
import { apiMs as ms, copyButton, panel, parseScopes, roleField, scopesText, showProblemIn } from "./account-ui.js";

export default definePage({
  path: "/tokens",
  label: "API tokens",
  roles: ["admin", "security_admin"],
  styles: ["/static/css/pages/account.css"],
  render: (container, ctx) => new TokensPage(container, ctx).mount(),
});

const DAY = 86400;
const EXPIRY = [
  [String(7 * DAY), "7 days"],
  [String(30 * DAY), "30 days"],
  [String(90 * DAY), "90 days"],
  [String(180 * DAY), "180 days"],
  [String(365 * DAY), "1 year"],
];

const list = (body) => (Array.isArray(body) ? body : body.tokens || []);
const at = (v) => (ms(v) ? formatTimestamp(ms(v)) : "—");

function tokenState(t) {
  if (t.state) return t.state;
  if (t.revoked_at || t.revoked_ns) return "revoked";
  const expires = ms(t.expires_at ?? t.expires_ns);
  return expires && expires <= Date.now() ? "expired" : "active";
}

function stateFlag(state) {
  const kind = state === "active" ? "flag-ok" : state === "revoked" ? "flag-bad" : "flag-off";
  return el("span", { class: `flag ${kind}`, "data-testid": "token-state", text: state });
}

class TokensPage {
  constructor(container, ctx) {
    this.container = container;
    this.ctx = ctx;
    this.api = ctx.api;
  }

  async mount() {
    this.problem = el("div");
    this.secretBox = el("div", { hidden: true });
    this.showAll = el("input", { id: "tokens-all", type: "checkbox", "data-testid": "tokens-show-all" });
    this.showAll.addEventListener("change", () => this.paint());
    this.table = dataTable({
      testid: "token-table",
      key: (t) => t.id,
      empty: "No API token.",
      columns: [
        { label: "Name", value: (t) => el("strong", { text: t.name }) },
        { label: "Id", value: (t) => el("code", { text: t.id }) },
        { label: "Role", value: (t) => el("span", { class: `role-badge role-${t.role}`, text: t.role }) },
        { label: "Scopes", value: (t) => scopesText(t.scopes), class: "scopes" },
        { label: "Created", value: (t) => `${at(t.created_at ?? t.created_ns)}${t.created_by ? ` by ${t.created_by}` : ""}` },
        { label: "Expires", value: (t) => at(t.expires_at ?? t.expires_ns) },
        { label: "Last used", value: (t) => at(t.last_used_at ?? t.last_used_ns) },
        { label: "State", value: (t) => stateFlag(tokenState(t)) },
        { label: "", value: (t) => this.actions(t), class: "actions" },
      ],
    });
    this.container.append(el("div", { class: "page-body" },
      this.buildForm(),
      this.secretBox,
      panel({ class: "panel list-panel", "aria-label": "API tokens" },
        { title: "API tokens", right: el("label", { class: "check", for: "tokens-all" }, this.showAll, " Show revoked and expired") },
        this.problem,
        this.table.element)));
    await this.load();
    return undefined;
  }

  async load() {
    try {
      this.tokens = list(await this.api.get("/api/tokens", { signal: this.ctx.signal }));
      this.problem.replaceChildren();
      this.paint();
    } catch (err) {
      this.showProblem(err);
    }
  }

  paint() {
    const shown = (this.tokens || []).filter((t) => this.showAll.checked || tokenState(t) === "active");
    shown.sort((a, b) => (ms(b.created_at ?? b.created_ns) || 0) - (ms(a.created_at ?? a.created_ns) || 0));
    this.table.update(shown);
  }

  showProblem(err) {
    showProblemIn(this.problem, err, "tokens-problem");
  }

  buildForm() {
    const f = {
      name: field({ label: "Name", name: "name", required: true, maxLength: 64, autocomplete: "off", placeholder: "mes-lyon", testid: "token-name" }),
      role: roleField(ROLES.map((r) => [r, r]), "token-role"),
      scopes: field({ label: "Scopes", name: "scopes", type: "textarea", rows: 1, placeholder: "acme/lyon/packaging", hint: "Hierarchy prefixes, one per line; empty = the whole enterprise.", testid: "token-scopes" }),
      expiry: field({ label: "Expires in", name: "expiry", type: "select", options: EXPIRY, value: String(90 * DAY), testid: "token-expiry" }),
    };
    const problem = el("div");
    const submit = el("button", { class: "btn btn-primary", type: "submit", "data-testid": "token-create", text: "Create token" });
    const form = el("form", { class: "panel-body", noValidate: true },
      el("div", { class: "form-grid" }, f.name.element, f.role.element, f.scopes.element, f.expiry.element),
      el("p", { class: "muted small", text: "A token acts with its role and scopes, like a user; its use is audited under its name. Give a machine the least role it needs (a viewer reads; an operator may also command low and medium criticality tags)." }),
      problem,
      el("div", { class: "form-actions" }, submit));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      problem.replaceChildren();
      const name = f.name.value.trim();
      f.name.setError(name ? "" : "Enter a name: the audit log shows it.");
      if (!name) return;
      submit.disabled = true;
      try {
        const answer = await this.api.post("/api/tokens", {
          name, role: f.role.value, scopes: parseScopes(f.scopes.value), expires_in: Number(f.expiry.value),
        }, { signal: this.ctx.signal });
        this.showSecret(answer, name);
        f.name.value = "";
        f.scopes.value = "";
        await this.load();
      } catch (err) {
        showProblemIn(problem, err, "token-create-problem", false);
      } finally {
        submit.disabled = false;
      }
    });
    return panel({ class: "panel", "aria-label": "Create an API token" }, { title: "Create an API token" }, form);
  }

  showSecret(answer, name) {
    const secret = answer.token || answer.secret || answer.access_token || "";
    const hide = el("button", { class: "btn btn-secondary", type: "button", "data-testid": "token-secret-done", text: "I stored it: hide it" });
    hide.addEventListener("click", () => {
      this.secretBox.hidden = true;
      this.secretBox.replaceChildren();
    });
    this.secretBox.hidden = false;
    this.secretBox.replaceChildren(el("div", { class: "secret-once", role: "status", "data-testid": "token-secret-box" },
      el("strong", { text: `Token “${name}” created. Copy it now: it is shown only this once.` }),
      el("div", { class: "secret-row" },
        el("code", { class: "secret", "data-testid": "token-secret", text: secret }),
        copyButton(() => secret, "Copy", "token-copy")),
      el("p", { class: "muted small", text: "Send it as `Authorization: Bearer <token>`. Only a hash is stored: a lost token cannot be shown again, revoke it and create another." }),
      el("div", { class: "form-actions" }, hide)));
  }

  actions(t) {
    if (tokenState(t) !== "active") return "";
    const revoke = el("button", { class: "btn btn-secondary btn-reject", type: "button", "data-testid": "token-revoke", text: "Revoke" });
    revoke.addEventListener("click", async () => {
      const ok = await confirmDialog({
        title: `Revoke the token “${t.name}”?`,
        body: "Every request with it is refused from now on (within 2 seconds on every server process). This cannot be undone.",
        confirmLabel: "Revoke",
        danger: true,
        testid: "token-revoke-dialog",
      });
      if (!ok) return;
      try {
        await this.api.delete(`/api/tokens/${encodeURIComponent(t.id)}`, { signal: this.ctx.signal });
        toast(`Token ${t.name} revoked.`, { kind: "success" });
        await this.load();
      } catch (err) {
        this.showProblem(err);
      }
    });
    return revoke;
  }
}
